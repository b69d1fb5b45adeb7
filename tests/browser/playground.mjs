// The playground page (src/playground/index.html) in a real browser: Debian's
// chromium, driven headless by playwright-core (no browser download).
//
//   node tests/browser/playground.mjs <base-url> <screenshot-path>
//
// Checks the model list, a classification, a similarity ranking, a reply
// held to a JSON Schema (the structured-output panel), a streamed
// chat reply (text must arrive in pieces, not at once), and that a reload
// restores the conversation from its session. Takes a full-page screenshot at
// the end (also after a failure, to see what went wrong). Exits 1 with a
// message on any failure. CHROMIUM overrides the browser's path.

import { chromium } from "playwright-core";
import { existsSync } from "node:fs";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node tests/browser/playground.mjs <base-url> <screenshot-path>");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
if (!existsSync(executablePath)) {
  console.error(`playground: no browser at ${executablePath}: apt-get install chromium (or set CHROMIUM)`);
  process.exit(1);
}

const TIMEOUT_MS = 120_000;
const started = Date.now();
const log = (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
class Failure extends Error {}
const ensure = (cond, msg) => { if (!cond) throw new Failure(msg); };

let browser;
const watchdog = setTimeout(() => {
  console.error(`playground: FAILED: still running after ${TIMEOUT_MS / 1000} s`);
  process.exit(1);
}, TIMEOUT_MS + 30_000);

const pageErrors = [];
const foreign = [];
const failed = [];
let page;

async function run() {
  browser = await chromium.launch({ executablePath, headless: true, args: ["--no-sandbox"] });
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  context.setDefaultTimeout(60_000);
  page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  // Failed requests are checked below, from their responses.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) pageErrors.push(`console: ${m.text()}`);
  });
  page.on("response", (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
  const origin = new URL(base).origin;
  page.on("request", (r) => {
    const url = r.url();
    if (!url.startsWith(origin + "/") && !url.startsWith("data:")) foreign.push(url);
  });

  log(`open ${base}/`);
  const res = await page.goto(base + "/", { waitUntil: "load" });
  ensure(res && res.status() === 200, `GET / answered ${res && res.status()}`);

  // ---- the model list, with versions, as the API lists them
  await page.waitForSelector("[data-testid=model-row]");
  const rows = await page.$$eval("[data-testid=model-row]", (trs) => trs.map((tr) => ({
    id: tr.dataset.model,
    version: tr.querySelector("[data-testid=model-version]").textContent.trim(),
  })));
  const listed = (await (await fetch(base + "/v1/models")).json()).data;
  ensure(rows.length === listed.length && rows.length > 0,
    `the page lists ${rows.length} models, the API ${listed.length}`);
  for (const m of listed) {
    const row = rows.find((r) => r.id === m.id);
    ensure(row, `model ${m.id} is not in the page's list`);
    ensure(row.version === m.version && m.version, `model ${m.id}: page shows version "${row.version}", API says "${m.version}"`);
  }
  log(`models: ${rows.map((r) => `${r.id}@${r.version}`).join(", ")}`);

  // ---- classify: lande on French
  const options = await page.$$eval("#cls-model option", (os) => os.map((o) => o.value));
  for (const want of ["lande", "sentiment", "profanity"]) {
    ensure(options.includes(want), `the classify select lacks ${want} (has ${options.join(", ")})`);
  }
  ensure(!options.includes("all-minilm-l6-v2") && !options.includes("shakespeare-llama"),
    `the classify select offers models that do not classify: ${options.join(", ")}`);
  await page.selectOption("#cls-model", "lande");
  // An API error is shown, readably.
  await page.fill("#cls-input", "");
  await page.click("#cls-run");
  await page.waitForSelector("#cls-error.shown");
  const shownError = await page.textContent("#cls-error");
  ensure(/^422 \w+: \S/.test(shownError), `the classify error reads ${JSON.stringify(shownError)}; expected "422 <code>: <message>"`);
  log(`an error, as shown: ${shownError}`);
  await page.fill("#cls-input", "Le chat dort sur le canapé pendant que nous préparons le dîner.");
  await page.click("#cls-run");
  await page.waitForSelector("[data-testid=cls-result]");
  const labels = await page.$$eval("[data-testid=cls-result]", (lis) => lis.map((li) => [li.dataset.label, Number(li.dataset.score)]));
  ensure(labels[0][0] === "fra" && labels[0][1] > 0.9, `lande ranked ${JSON.stringify(labels)}; expected fra first`);
  log(`classify: ${labels.map(([l, s]) => `${l} ${s.toFixed(3)}`).join(", ")}`);

  // ---- similarity
  const docs = ["The stock market fell sharply this morning.", "A kitten naps on the couch.", "How to change a flat tyre."];
  await page.fill("#sim-query", "A cat is sleeping on the sofa.");
  await page.fill("#sim-docs", docs.join("\n"));
  await page.click("#sim-run");
  await page.waitForSelector("[data-testid=sim-result]");
  const ranked = await page.$$eval("[data-testid=sim-result]", (lis) => lis.map((li) => [Number(li.dataset.index), Number(li.dataset.score)]));
  ensure(ranked.length === docs.length, `similarity shows ${ranked.length} results for ${docs.length} candidates`);
  ensure(ranked[0][0] === 1, `similarity ranked ${JSON.stringify(ranked)}; expected the kitten (1) first`);
  ensure(ranked.every((r, i) => i === 0 || ranked[i - 1][1] >= r[1]), `similarity scores not in order: ${JSON.stringify(ranked)}`);
  log(`similarity: ${ranked.map(([i, s]) => `#${i} ${s.toFixed(3)}`).join(", ")}`);

  // ---- structured output: the example schema, streamed, parses
  await page.click("#json-run");
  await page.waitForFunction(() => /parses|cut short/.test(document.getElementById("json-summary").textContent)
    || document.getElementById("json-error").textContent, undefined, { timeout: 90_000 });
  const jsonError = await page.textContent("#json-error");
  ensure(!jsonError, `structured output failed: ${jsonError}`);
  const extracted = JSON.parse(await page.textContent("#json-output"));
  ensure(["customer", "total", "currency", "paid"].every((k) => k in extracted), `structured output ${JSON.stringify(extracted)}`);
  ensure(["EUR", "USD", "GBP"].includes(extracted.currency), `currency ${extracted.currency} is not in the enum`);
  log(`structured output: ${JSON.stringify(extracted)}`);

  // ---- chat: a session, a streamed reply
  await page.waitForFunction(() => /^[0-9a-f]{32}$/.test(document.getElementById("chat-session").textContent));
  const firstSession = await page.textContent("#chat-session");
  // "New session" deletes the old one and starts another.
  await page.click("#chat-new");
  await page.waitForFunction((old) => {
    const id = document.getElementById("chat-session").textContent;
    return /^[0-9a-f]{32}$/.test(id) && id !== old;
  }, firstSession);
  const sessionId = await page.textContent("#chat-session");
  const gone = await fetch(`${base}/v1/sessions/${firstSession}`);
  ensure(gone.status === 404, `the replaced session ${firstSession} answers ${gone.status}, expected 404 (deleted)`);
  log(`session ${firstSession} replaced by ${sessionId}`);
  // Every state of the reply's text, as the DOM changes, with when it changed.
  await page.evaluate(() => {
    const chatLog = document.getElementById("chat-log");
    window.__replyStates = [];
    new MutationObserver(() => {
      const replies = chatLog.querySelectorAll(".msg[data-role=assistant]");
      const reply = replies[replies.length - 1];
      if (!reply) return;
      const text = reply.querySelector(".text").textContent;
      const states = window.__replyStates;
      if (!states.length || states[states.length - 1].text !== text) {
        states.push({ t: performance.now(), text, state: reply.dataset.state });
      }
    }).observe(chatLog, { subtree: true, childList: true, characterData: true, attributes: true });
  });
  await page.fill("#chat-max-tokens", "96");
  await page.fill("#chat-temperature", "0.7");
  // Sampled with a seed, so the reply is repeatable; a reply of a token or
  // two cannot show streaming, so another turn (another seed) is allowed.
  const questions = [
    "Give me three short tips for writing a clear email.",
    "Why is the sky blue? Answer in two sentences.",
    "Suggest a name for a pet turtle, and say why.",
  ];
  let streamed = null;
  for (const [turn, question] of questions.entries()) {
    await page.evaluate(() => { window.__replyStates = []; });
    await page.fill("#chat-seed", String([9, 6, 2][turn]));
    await page.fill("#chat-input", question);
    await page.click("#chat-send");
    await page.waitForFunction((n) => {
      const r = document.querySelectorAll("#chat-log .msg[data-role=assistant]");
      return r.length === n && ["done", "error", "stopped"].includes(r[n - 1].dataset.state);
    }, turn + 1, { timeout: 90_000 });
    const outcome = await page.evaluate(() => {
      const r = document.querySelectorAll("#chat-log .msg[data-role=assistant]");
      const last = r[r.length - 1];
      return { state: last.dataset.state, text: last.querySelector(".text").textContent, error: document.getElementById("chat-error").textContent };
    });
    ensure(outcome.state === "done", `the reply ended in state ${outcome.state}: ${outcome.error}`);
    const states = await page.evaluate(() => window.__replyStates);
    const partials = states.filter((s) => s.text && s.text !== outcome.text);
    const distinct = new Set(partials.map((s) => s.text));
    ensure(partials.every((s) => outcome.text.startsWith(s.text)), "a partial state is not a prefix of the final reply");
    log(`chat turn ${turn + 1}: ${outcome.text.length} characters; ${distinct.size} distinct partial states before the final text, over ${states.length ? (states[states.length - 1].t - states[0].t).toFixed(0) : 0} ms`);
    if (distinct.size >= 2) { streamed = outcome; break; }
    log(`  too short to show streaming (${JSON.stringify(outcome.text)}): another turn`);
  }
  ensure(streamed, `no reply streamed: each came in fewer than 2 partial states (of ${questions.length} turns)`);
  const shown = await page.$$eval("#chat-log .msg", (ms) => ms.map((m) => [m.dataset.role, m.querySelector(".text").textContent]));

  // ---- reload: the same conversation, from the session
  log("reload");
  await page.reload({ waitUntil: "load" });
  await page.waitForFunction(() => document.getElementById("chat-status").textContent.startsWith("restored"));
  const restored = await page.$$eval("#chat-log .msg", (ms) => ms.map((m) => [m.dataset.role, m.querySelector(".text").textContent]));
  const sameSession = await page.textContent("#chat-session");
  ensure(sameSession === sessionId, `after the reload the session is ${sameSession}, was ${sessionId}`);
  ensure(shown.length >= 2 && shown[0][0] === "user" && shown[1][0] === "assistant", `before the reload: ${JSON.stringify(shown)}`);
  ensure(JSON.stringify(restored) === JSON.stringify(shown),
    `the restored conversation differs from the one shown before the reload:\n  before: ${JSON.stringify(shown)}\n  after:  ${JSON.stringify(restored)}`);
  log(`the conversation is restored (${restored.length} messages)`);

  // The panels' results back in view for the screenshot (a reload clears them).
  await page.fill("#cls-input", "Le chat dort sur le canapé pendant que nous préparons le dîner.");
  await page.click("#cls-run");
  await page.click("#sim-run");
  await page.waitForSelector("[data-testid=cls-result]");
  await page.waitForSelector("[data-testid=sim-result]");

  ensure(pageErrors.length === 0, `the page logged errors:\n  ${pageErrors.join("\n  ")}`);
  const unexpected = failed.filter((f) => !/^422 POST .*\/v1\/classify$/.test(f));
  ensure(unexpected.length === 0, `requests failed:\n  ${unexpected.join("\n  ")}`);
  ensure(foreign.length === 0, `the page requested other origins:\n  ${foreign.join("\n  ")}`);
}

let code = 0;
try {
  await run();
  log("all checks passed");
} catch (e) {
  code = 1;
  console.error(`playground: FAILED: ${e instanceof Failure ? e.message : e && e.stack || e}`);
  if (pageErrors.length) console.error(`page errors:\n  ${pageErrors.join("\n  ")}`);
}
try {
  if (page) {
    await page.screenshot({ path: screenshot, fullPage: true });
    log(`screenshot: ${screenshot}`);
  }
} catch (e) {
  console.error(`playground: no screenshot: ${e}`);
}
if (browser) await browser.close().catch(() => {});
clearTimeout(watchdog);
process.exit(code);
