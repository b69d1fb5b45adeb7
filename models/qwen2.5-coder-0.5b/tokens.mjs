// The tokenizer reference for GGUF files: llama.cpp's own tokenizer (npm
// `node-llama-cpp` 3.22.1, installed by bench/native: `npm ci --prefix
// bench/native`), which reads the vocabulary, merges and pre-tokenizer type
// from the file, the runtime the file was made for. Tokenizes every text of
// models/smollm2/golden.json's tokenizer cases (239 texts and 24 chats
// written in ChatML, whose <|im_start|> / <|im_end|> are Qwen's control
// tokens too) with special tokens parsed as tokens and nothing added (no
// BOS), and writes the ids: what pipeline/tests/gguf_tokenizer.rs compares
// the tokenizer.json we build from the same file with.
//
// node models/qwen2.5-coder-0.5b/tokens.mjs GGUF OUT.json
// (GGUF: `python3 models/qwen2.5-coder-0.5b/fetch.py` prints its path.)
//
// Nothing reaches the network: only the prebuilt binaries in node_modules
// are loaded (build "never", skipDownload), the model is a local file.
process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD ??= "true";
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const [gguf, outPath] = process.argv.slice(2);
if (!gguf || !outPath) {
  console.error("usage: node tokens.mjs GGUF OUT.json");
  process.exit(2);
}
const root = join(dirname(fileURLToPath(import.meta.url)), "../..");
const require = createRequire(join(root, "bench/native/package.json"));
const { getLlama } = await import(require.resolve("node-llama-cpp"));
const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, logLevel: "error" });
const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0, vocabOnly: true });
const golden = JSON.parse(readFileSync(join(root, "models/smollm2/golden.json"), "utf8"));
const cases = golden.tokenizer.cases.map(({ category, text }) => {
  const ids = Array.from(model.tokenize(text, true));
  // The ids must spell the text again: a reference that loses bytes is no reference.
  const back = model.detokenize(ids, true);
  if (back !== text) throw new Error(`llama.cpp does not give ${JSON.stringify(text)} back`);
  return { category, text, ids };
});
const sha256 = createHash("sha256").update(readFileSync(gguf)).digest("hex");
writeFileSync(
  outPath,
  JSON.stringify(
    {
      reference: "llama.cpp's tokenizer, npm node-llama-cpp 3.22.1: model.tokenize(text, specialTokens = true), nothing added",
      gguf_sha256: sha256,
      texts: "models/smollm2/golden.json tokenizer.cases",
      cases,
    },
    null,
    0,
  ) + "\n",
);
console.error(`${cases.length} texts, ${cases.reduce((n, c) => n + c.ids.length, 0)} tokens`);
