// Structured outputs, tool calls and the Responses API from the JavaScript
// clients people use, unmodified but for their base URL, against a running
// edgeinfer worker: the official `openai` package (responses.create whole
// and streamed with previous_response_id, chat.completions.parse with a
// zod schema), the Vercel AI SDK's default OpenAI provider
// (`createOpenAI({ baseURL })(id)`: the Responses API) with generateText,
// streamText and generateObject, and LangChain's withStructuredOutput and
// bindTools. Exits non-zero on the first mismatch.
// Usage: node tests/clients/structured.mjs http://127.0.0.1:PORT [chat model]
import assert from "node:assert/strict";
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { createOpenAI } from "@ai-sdk/openai";
import { generateObject, generateText, streamText } from "ai";
import { ChatOpenAI } from "@langchain/openai";
import { z } from "zod";

const base = process.argv[2];
assert.ok(base, "usage: structured.mjs <worker base URL> [chat model]");
const model = process.argv[3] ?? "smollm2-135m-instruct";
const apiKey = "not-needed-locally";

const Person = z.object({
  name: z.string().max(30),
  age: z.number().int().min(0).max(130),
  city: z.string().max(30).nullable(),
});

// --- openai (npm) -----------------------------------------------------------
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0 });

const first = await client.responses.create({ model, input: "My name is Ada. Say hello.", max_output_tokens: 16, temperature: 0 });
assert.ok(first.id.startsWith("resp_"), JSON.stringify(first));
assert.ok(first.output_text.length > 0, JSON.stringify(first));
assert.ok(first.usage.input_tokens > 0 && first.usage.output_tokens > 0, JSON.stringify(first.usage));

const stream = await client.responses.create({
  model, input: "What is my name?", previous_response_id: first.id, stream: true, max_output_tokens: 16, temperature: 0,
});
const kinds = [];
let text = "";
let completed;
for await (const event of stream) {
  kinds.push(event.type);
  if (event.type === "response.output_text.delta") text += event.delta;
  if (event.type === "response.completed" || event.type === "response.incomplete") completed = event.response;
}
assert.equal(kinds[0], "response.created", kinds.join());
assert.ok(kinds.includes("response.output_text.delta"), kinds.join());
assert.ok(completed, kinds.join());
assert.equal(completed.output_text ?? completed.output[0].content[0].text, text);
assert.equal(completed.previous_response_id, first.id);
assert.ok(completed.usage.input_tokens > first.usage.input_tokens, JSON.stringify([completed.usage, first.usage]));
const again = await client.responses.retrieve(completed.id);
assert.equal(again.output_text, text);

const parsed = await client.chat.completions.parse({
  model,
  messages: [{ role: "user", content: "Ada is 36 and lives in London. Extract the person." }],
  response_format: zodResponseFormat(Person, "person"),
  max_tokens: 80,
  temperature: 0,
});
const person = parsed.choices[0].message.parsed;
assert.ok(person && Person.safeParse(person).success, JSON.stringify(parsed));

await client.responses.delete(first.id);
await assert.rejects(client.responses.retrieve(first.id), (e) => e instanceof OpenAI.NotFoundError);

// --- Vercel AI SDK: the default OpenAI provider calls /v1/responses --------
const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey });
const call = { model: openai(model), prompt: "What is the capital of France?", maxOutputTokens: 20, temperature: 0, maxRetries: 0 };
const whole = await generateText(call);
assert.ok(whole.text.length > 0, JSON.stringify(whole.response?.body));
assert.ok(whole.usage.inputTokens > 0 && whole.usage.outputTokens > 0, JSON.stringify(whole.usage));
const streamed = streamText({ ...call, onError: ({ error }) => { throw error; } });
let streamedText = "";
for await (const delta of streamed.textStream) streamedText += delta;
assert.equal(streamedText, whole.text);

const object = await generateObject({
  model: openai(model),
  schema: Person,
  prompt: "Bob is 40 and lives in Paris. Extract the person.",
  maxOutputTokens: 80,
  temperature: 0,
  maxRetries: 0,
});
assert.ok(Person.safeParse(object.object).success, JSON.stringify(object.object));

// --- LangChain ---------------------------------------------------------------
const chat = new ChatOpenAI({ model, apiKey, configuration: { baseURL: `${base}/v1` }, temperature: 0, maxTokens: 80, maxRetries: 0 });
const structured = chat.withStructuredOutput(Person, { name: "person" });
const extracted = await structured.invoke("Eve is 29 and lives in Rome. Extract the person.");
assert.ok(Person.safeParse(extracted).success, JSON.stringify(extracted));

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The current weather of a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"], additionalProperties: false },
  },
};
const withTools = chat.bindTools([weather], { tool_choice: "required" });
const message = await withTools.invoke("What's the weather in Oslo?");
assert.equal(message.tool_calls?.length, 1, JSON.stringify(message));
assert.equal(message.tool_calls[0].name, "get_weather");
assert.equal(typeof message.tool_calls[0].args.city, "string", JSON.stringify(message.tool_calls));

console.log("ok");
