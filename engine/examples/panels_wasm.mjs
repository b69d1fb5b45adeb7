// Runs examples/panels_wasm.rs's module: the bit-for-bit check, then every
// panel format, 1 and 4 rows, on the first shape (`all`: every shape).
// Several modules (e.g. a kernel before and after a change) are timed
// side by side, each measurement taking turns, best of `ROUNDS` (default 3).
// `node --no-liftoff` compiles with TurboFan from the start: the code a
// Worker runs once warm, without the tiering's timing in the numbers.
import { readFileSync } from "node:fs";
const names = ["Q8", "Q4_1", "Q4_0", "Q5_0", "Q5_1", "Q4K", "Q5K", "Q6K"];
const shapes = [[896, 4864], [576, 576], [192, 576], [1536, 576], [576, 1536], [49152, 576]];
const args = process.argv.slice(2);
const all = args.includes("all");
const files = args.filter((a) => a !== "all");
const rounds = Number(process.env.ROUNDS ?? 3);
// FORMATS=Q8,Q4_1: only those.
const only = process.env.FORMATS?.split(",");
// The process's CPU time, not the wall clock: this machine is shared, and
// time spent descheduled is not the kernel's (CLOCK=wall for the other).
const now =
  process.env.CLOCK === "wall"
    ? () => performance.now()
    : () => {
        const { user, system } = process.cpuUsage();
        return (user + system) / 1e3;
      };
const modules = [];
for (const f of files) {
  const { instance } = await WebAssembly.instantiate(readFileSync(f), {
    env: { now },
  });
  const ok = instance.exports.check();
  console.log(`${f}: check ${ok === 1 ? "bit for bit as the portable path" : "FAILED"}`);
  if (ok !== 1) process.exit(1);
  modules.push(instance.exports);
}
const heads = files.map((_, i) => (files.length > 1 ? `#${i} ` : ""));
console.log(
  "format  shape      " + heads.map((h) => `${h}1 row`.padStart(10) + `${h}4 rows`.padStart(10)).join("") +
    "  (G MAC/s per CPU second, wasm simd128, node " + process.version + ")",
);
for (const [n, k] of all ? shapes : shapes.slice(0, 1)) {
  for (let kind = 0; kind < names.length; kind++) {
    if (only && !only.includes(names[kind])) continue;
    const best = modules.map(() => [0, 0]);
    for (let round = 0; round < rounds; round++) {
      for (const [rowsAt, rows] of [[0, 1], [1, 4]]) {
        if (process.env.ROWS && Number(process.env.ROWS) !== rows) continue;
        modules.forEach((m, i) => {
          best[i][rowsAt] = Math.max(best[i][rowsAt], m.bench(kind, rows, n, k));
        });
      }
    }
    if (best[0][0] <= 0) continue;
    const cells = best.map(([one, four]) => one.toFixed(2).padStart(10) + four.toFixed(2).padStart(10)).join("");
    console.log(names[kind].padEnd(6), `${n}x${k}`.padStart(10), cells);
  }
}
