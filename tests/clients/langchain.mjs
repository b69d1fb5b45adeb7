// LangChain (`@langchain/openai`: ChatOpenAI and OpenAIEmbeddings),
// unmodified but for its base URL, against a running edgeinfer worker: a
// chat invoke, the same call streamed (text and usage as the whole reply's),
// embedQuery and embedDocuments, and an API error as the client's error.
// Usage: node tests/clients/langchain.mjs http://127.0.0.1:PORT [chat model]
import assert from "node:assert/strict";
import { ChatOpenAI, OpenAIEmbeddings } from "@langchain/openai";

const base = process.argv[2];
assert.ok(base, "usage: langchain.mjs <worker base URL> [chat model]");
const chatModel = process.argv[3] ?? "smollm2-135m-instruct";
const configuration = { baseURL: `${base}/v1` };
const apiKey = "not-needed-locally";

const chat = new ChatOpenAI({ model: chatModel, apiKey, configuration, temperature: 0, maxTokens: 30, maxRetries: 0 });
const messages = [
  ["system", "You are a helpful assistant. Answer briefly."],
  ["human", "What is the capital of France?"],
];
const whole = await chat.invoke(messages);
assert.ok(typeof whole.content === "string" && whole.content.length > 0, JSON.stringify(whole));
const usage = whole.usage_metadata;
assert.ok(usage.input_tokens > 0 && usage.output_tokens > 0, JSON.stringify(usage));
assert.equal(usage.total_tokens, usage.input_tokens + usage.output_tokens);
assert.ok(["stop", "length"].includes(whole.response_metadata.finish_reason), JSON.stringify(whole.response_metadata));

let text = "";
let chunks = 0;
let streamedUsage;
for await (const chunk of await chat.stream(messages)) {
  text += chunk.content;
  chunks += 1;
  streamedUsage = chunk.usage_metadata ?? streamedUsage;
}
assert.equal(text, whole.content);
assert.ok(chunks > 1, `one chunk: ${JSON.stringify(text)}`);
assert.equal(streamedUsage?.input_tokens, usage.input_tokens, JSON.stringify(streamedUsage));
assert.equal(streamedUsage?.output_tokens, usage.output_tokens, JSON.stringify(streamedUsage));

const embeddings = new OpenAIEmbeddings({ model: "all-minilm-l6-v2", apiKey, configuration, maxRetries: 0 });
const query = await embeddings.embedQuery("The cat sat on the mat.");
assert.equal(query.length, 384);
const docs = await embeddings.embedDocuments([
  "The cat sat on the mat.",
  "A feline rested on the rug.",
  "Stock markets fell sharply today.",
]);
assert.equal(docs.length, 3);
for (let i = 0; i < 384; i++) {
  assert.ok(Math.abs(docs[0][i] - query[i]) < 1e-6, `dim ${i}`);
}
const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);
assert.ok(dot(docs[0], docs[1]) > dot(docs[0], docs[2]), "paraphrase closer than an unrelated sentence");

// A model the server does not have: the client's error carries the 404 and
// the server's message.
await assert.rejects(
  new ChatOpenAI({ model: "no-such-model", apiKey, configuration, maxRetries: 0 }).invoke(messages),
  (e) => e.status === 404 && /does not exist/.test(e.message),
);
console.log(`langchain: ok (${JSON.stringify(whole.content)}, ${chunks} chunks)`);
