// The official `openai` npm client, unmodified but for its base URL, against
// a running edgeinfer worker: embeddings (its default base64 transport and
// float), chat whole and streamed (with the usage chunk), a chat session by
// header, the model list with versions, and API errors as the client's types.
// Usage: node tests/clients/openai.mjs http://127.0.0.1:PORT
import assert from "node:assert/strict";
import OpenAI from "openai";

const base = process.argv[2];
assert.ok(base, "usage: openai.mjs <worker base URL>");
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed-locally", maxRetries: 0 });
const model = "all-minilm-l6-v2";

// No encoding_format: the client asks for base64 and decodes it itself.
const one = await client.embeddings.create({ model, input: "The cat sat on the mat." });
assert.equal(one.object, "list");
assert.equal(one.data.length, 1);
const viaBase64 = one.data[0].embedding;
assert.equal(viaBase64.length, 384);
assert.ok(one.usage.prompt_tokens > 0 && one.usage.total_tokens === one.usage.prompt_tokens);

const texts = ["The cat sat on the mat.", "A feline rested on the rug.", "Stock markets fell sharply today."];
const floats = await client.embeddings.create({ model, input: texts, encoding_format: "float" });
assert.deepEqual(floats.data.map((d) => d.index), [0, 1, 2]);
for (let i = 0; i < 384; i++) {
  assert.ok(Math.abs(floats.data[0].embedding[i] - viaBase64[i]) < 1e-6, `dim ${i}`);
}
const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);
const [cat, feline, stocks] = floats.data.map((d) => d.embedding);
assert.ok(dot(cat, feline) > dot(cat, stocks), "paraphrase closer than an unrelated sentence");

const ids = [];
for await (const m of client.models.list()) ids.push(m.id);
assert.ok(ids.includes(model) && ids.includes("lande"), `models: ${ids}`);

await assert.rejects(
  client.embeddings.create({ model: "no-such-model", input: "x" }),
  (e) => e instanceof OpenAI.NotFoundError && /does not exist/.test(e.message),
);
// Chat: whole, then the same request streamed: same text, same usage.
// The default chat model: SmolLM2-135M-Instruct, served by its shard Workers.
const chatModel = "smollm2-135m-instruct";
const messages = [
  { role: "system", content: "You are a helpful assistant. Answer briefly." },
  { role: "user", content: "What is the capital of France?" },
];
const whole = await client.chat.completions.create({ model: chatModel, messages, max_tokens: 30, temperature: 0 });
assert.equal(whole.object, "chat.completion");
const reply = whole.choices[0].message;
assert.equal(reply.role, "assistant");
assert.ok(typeof reply.content === "string" && reply.content.length > 0, JSON.stringify(whole));
assert.ok(["stop", "length"].includes(whole.choices[0].finish_reason));
assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);
assert.ok(whole.usage.cpu_ms > 0, `usage.cpu_ms: ${JSON.stringify(whole.usage)}`);
assert.match(whole.model, /^smollm2-135m-instruct@/);

const stream = await client.chat.completions.create({
  model: chatModel, messages, max_tokens: 30, temperature: 0, stream: true,
  stream_options: { include_usage: true },
});
let text = "";
let finish = null;
let usage = null;
let chunks = 0;
for await (const chunk of stream) {
  chunks += 1;
  assert.equal(chunk.object, "chat.completion.chunk");
  if (chunk.choices.length) {
    text += chunk.choices[0].delta.content ?? "";
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  if (chunk.usage) usage = chunk.usage;
}
assert.equal(text, reply.content, "streamed text = whole text");
assert.equal(finish, whole.choices[0].finish_reason);
assert.equal(usage?.completion_tokens, whole.usage.completion_tokens);
assert.ok(chunks >= 3, `${chunks} chunks`);

// A session named by header: the server keeps the history between calls.
const session = await client.post("/sessions", { body: { system: "You are a helpful assistant." } });
const first = await client.chat.completions.create(
  { model: chatModel, messages: [{ role: "user", content: "Hi, I am Ada." }], max_tokens: 10 },
  { headers: { "X-Session-Id": session.id } },
);
const history = await client.get(`/sessions/${session.id}`);
assert.deepEqual(history.messages.map((m) => m.role), ["user", "assistant"]);
assert.equal(history.messages[1].content, first.choices[0].message.content);

// Versions: every listed model carries its version and sha256; id@version works.
const lande = await client.models.retrieve("lande");
assert.ok(lande.version && /^[0-9a-f]{64}$/.test(lande.sha256), JSON.stringify(lande));
const pinned = await client.models.retrieve(`lande@${lande.version}`);
assert.equal(pinned.sha256, lande.sha256);

await assert.rejects(
  client.chat.completions.create({ model: chatModel, messages, max_tokens: 0 }),
  (e) => e instanceof OpenAI.UnprocessableEntityError && e.status === 422,
);
console.log(`openai ${OpenAI.VERSION ?? ""}: embeddings (base64 + float), chat (whole + stream + session), models, errors: ok`);
