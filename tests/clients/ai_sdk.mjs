// The Vercel AI SDK (`ai` with `@ai-sdk/openai-compatible`, the provider it
// documents for OpenAI-compatible servers), unmodified but for its base URL,
// against a running edgeinfer worker: generateText, streamText (text and
// usage as the whole reply's), embed and embedMany, and an API error as the
// SDK's error type.
// Usage: node tests/clients/ai_sdk.mjs http://127.0.0.1:PORT [chat model]
import assert from "node:assert/strict";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { APICallError, cosineSimilarity, embed, embedMany, generateText, streamText } from "ai";

const base = process.argv[2];
assert.ok(base, "usage: ai_sdk.mjs <worker base URL> [chat model]");
const chatModel = process.argv[3] ?? "smollm2-135m-instruct";
const edgeinfer = createOpenAICompatible({
  name: "edgeinfer",
  baseURL: `${base}/v1`,
  apiKey: "not-needed-locally",
  includeUsage: true,
});

const call = {
  model: edgeinfer.chatModel(chatModel),
  system: "You are a helpful assistant. Answer briefly.",
  prompt: "What is the capital of France?",
  maxOutputTokens: 30,
  temperature: 0,
  maxRetries: 0,
};
const whole = await generateText(call);
assert.ok(whole.text.length > 0, JSON.stringify(whole.response.body));
assert.ok(["stop", "length"].includes(whole.finishReason), whole.finishReason);
assert.ok(whole.usage.inputTokens > 0 && whole.usage.outputTokens > 0, JSON.stringify(whole.usage));
assert.equal(whole.usage.totalTokens, whole.usage.inputTokens + whole.usage.outputTokens);

// Streamed: the same greedy reply, chunk by chunk, and the same usage.
const streamed = streamText({ ...call, onError: ({ error }) => { throw error; } });
let text = "";
let chunks = 0;
for await (const delta of streamed.textStream) {
  text += delta;
  chunks += 1;
}
assert.equal(text, whole.text);
assert.ok(chunks > 1, `one chunk: ${JSON.stringify(text)}`);
assert.equal(await streamed.finishReason, whole.finishReason);
const usage = await streamed.usage;
assert.equal(usage.inputTokens, whole.usage.inputTokens);
assert.equal(usage.outputTokens, whole.usage.outputTokens);

const embedder = edgeinfer.embeddingModel("all-minilm-l6-v2");
const one = await embed({ model: embedder, value: "The cat sat on the mat.", maxRetries: 0 });
assert.equal(one.embedding.length, 384);
assert.ok(one.usage.tokens > 0, JSON.stringify(one.usage));
const many = await embedMany({
  model: embedder,
  values: ["The cat sat on the mat.", "A feline rested on the rug.", "Stock markets fell sharply today."],
  maxRetries: 0,
});
assert.equal(many.embeddings.length, 3);
for (let i = 0; i < 384; i++) {
  assert.ok(Math.abs(many.embeddings[0][i] - one.embedding[i]) < 1e-6, `dim ${i}`);
}
const [cat, feline, stocks] = many.embeddings;
assert.ok(cosineSimilarity(cat, feline) > cosineSimilarity(cat, stocks), "paraphrase closer than an unrelated sentence");

// A model the server does not have: the SDK's APICallError, with the 404
// and the server's message.
await assert.rejects(
  generateText({ ...call, model: edgeinfer.chatModel("no-such-model") }),
  (e) => APICallError.isInstance(e) && e.statusCode === 404 && /does not exist/.test(e.message),
);
console.log(`ai sdk: ok (${JSON.stringify(whole.text)}, ${chunks} chunks)`);
