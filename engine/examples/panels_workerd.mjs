// The panel kernels timed in workerd, the runtime a Worker runs in (its V8
// compiles wasm differently from node's: explicit bounds checks, another
// pipeline). Serves examples/panels_wasm.rs's modules from one worker and
// times `run(reps)` from here, since workerd's clocks stand still while
// code runs: workerd's own CPU time (its threads' schedstat, so time spent
// descheduled by other jobs does not count), best of ROUNDS, the modules
// taking turns. Each module checks itself first (panels_wasm: every kernel
// bit for bit as the portable path; panels_relaxed: see there).
//
// node engine/examples/panels_workerd.mjs A.wasm [B.wasm ...]
// env: WORKERD (default node_modules/.bin/workerd), ALL=1 (SmolLM2's
// shapes too), FORMATS=Q8,Q4_1 (default), ROWS=1,4 (default), ROUNDS=7,
// V8FLAGS="--flag ..." (workerd's v8Flags, to ask what its code is bound by).
import { spawn } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const files = process.argv.slice(2).map((f) => resolve(f));
const names = ["Q8", "Q4_1", "Q4_0", "Q5_0", "Q5_1", "Q4K", "Q5K", "Q6K"];
const shapes = [[896, 4864], [576, 576], [192, 576], [1536, 576], [576, 1536], [49152, 576]];
const only = (process.env.FORMATS ?? "Q8,Q4_1").split(",");
const rowsList = (process.env.ROWS ?? "1,4").split(",").map(Number);
const rounds = Number(process.env.ROUNDS ?? 7);
// SUBNORMAL=1: every block's `d` subnormal, as most of Qwen's Q6_K blocks.
const sub = process.env.SUBNORMAL ? 1 : 0;
const port = 8000 + Math.floor(Math.random() * 1000);

const dir = mkdtempSync(join(tmpdir(), "panels-workerd-"));
files.forEach((f, i) => copyFileSync(f, join(dir, `m${i}.wasm`)));
writeFileSync(
  join(dir, "worker.mjs"),
  files.map((_, i) => `import m${i} from "./m${i}.wasm";\n`).join("") +
    `const mods = [${files.map((_, i) => `m${i}`).join(", ")}].map(
  (m) => new WebAssembly.Instance(m, { env: { now: () => Date.now() } }).exports,
);
export default {
  async fetch(req) {
    const u = new URL(req.url);
    const p = Object.fromEntries(u.searchParams);
    const e = mods[Number(p.m)];
    if (u.pathname === "/check") return new Response(String(e.check()));
    if (u.pathname === "/prepare") return new Response(String(e.prepare(+p.kind, +p.rows, +p.n, +p.k, +(p.sub ?? 0))));
    return new Response(String(e.run(+p.reps)));
  },
};
`,
);
writeFileSync(
  join(dir, "config.capnp"),
  `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .w) ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);
const w :Workerd.Worker = (
  modules = [
    (name = "worker", esModule = embed "worker.mjs"),
${files.map((_, i) => `    (name = "./m${i}.wasm", wasm = embed "m${i}.wasm"),`).join("\n")}
  ],
  compatibilityDate = "2024-09-23",
);
`.replace(
    "  sockets =",
    process.env.V8FLAGS
      ? `  v8Flags = [${process.env.V8FLAGS.split(" ").map((f) => JSON.stringify(f)).join(", ")}],\n  sockets =`
      : "  sockets =",
  ),
);
const workerd = spawn(process.env.WORKERD ?? "node_modules/.bin/workerd", ["serve", join(dir, "config.capnp")], {
  stdio: "inherit",
});
const url = `http://127.0.0.1:${port}`;
const get = async (path) => (await fetch(url + path)).text();
const cpu = () =>
  readdirSync(`/proc/${workerd.pid}/task`).reduce(
    (t, task) => t + Number(readFileSync(`/proc/${workerd.pid}/task/${task}/schedstat`, "utf8").split(" ")[0]),
    0,
  ) / 1e6;

try {
  for (let tries = 0; ; tries++) {
    try {
      await get("/check?m=0");
      break;
    } catch (e) {
      if (tries > 50) throw e;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  for (let m = 0; m < files.length; m++) {
    const ok = await get(`/check?m=${m}`);
    console.log(`${files[m]}: check ${ok === "1" ? "passed" : "FAILED"}`);
    if (ok !== "1") process.exit(1);
  }
  console.log(
    "format       shape rows " + files.map((_, m) => `#${m}`.padStart(8)).join("") + "  (G MAC/s per CPU second, workerd)",
  );
  for (const [n, k] of process.env.ALL ? shapes : shapes.slice(0, 1))
    for (const name of only)
      for (const rows of rowsList) {
        const kind = names.indexOf(name);
        const reps = Math.max(1, Math.round(3e8 / (rows * n * k)));
        const best = files.map(() => Infinity);
        let whole = true;
        for (let m = 0; m < files.length; m++) {
          whole &&= (await get(`/prepare?m=${m}&kind=${kind}&rows=${rows}&n=${n}&k=${k}&sub=${sub}`)) === "1";
          await get(`/run?m=${m}&reps=${reps}`); // tier-up
        }
        if (!whole) continue;
        for (let r = 0; r < rounds; r++)
          for (let m = 0; m < files.length; m++) {
            const t0 = cpu();
            await get(`/run?m=${m}&reps=${reps}`);
            const t1 = cpu();
            await get(`/run?m=${m}&reps=0`);
            const overhead = cpu() - t1;
            best[m] = Math.min(best[m], (t1 - t0 - overhead) / reps);
          }
        const rates = best.map((t) => ((rows * n * k) / (t / 1e3) / 1e9).toFixed(2).padStart(8));
        console.log(name.padEnd(6), `${n}x${k}`.padStart(10), String(rows).padStart(4), rates.join(""));
      }
} finally {
  workerd.kill();
}
