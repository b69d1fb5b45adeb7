// The official `openai` npm client, unmodified but for its base URL, against
// a running edgeinfer worker: embeddings (its default base64 transport and
// float), the model list, and an API error.
// Usage: node tests/clients/openai-embeddings.mjs http://127.0.0.1:PORT
import assert from "node:assert/strict";
import OpenAI from "openai";

const base = process.argv[2];
assert.ok(base, "usage: openai-embeddings.mjs <worker base URL>");
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
console.log(`openai ${OpenAI.VERSION ?? ""}: embeddings (base64 + float), models.list, errors: ok`);
