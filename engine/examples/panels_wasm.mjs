// Runs examples/panels_wasm.rs's module: every panel format, 1 and 4 rows.
import { readFileSync } from "node:fs";
const names = ["Q8", "Q4_1", "Q4_0", "Q5_0", "Q5_1", "Q4K", "Q5K", "Q6K"];
const { instance } = await WebAssembly.instantiate(readFileSync(process.argv[2]), {
  env: { now: () => performance.now() },
});
console.log("format      1 row     4 rows  (G MAC/s, wasm simd128 in node " + process.version + ")");
for (let k = 0; k < names.length; k++) {
  const one = instance.exports.bench(k, 1), four = instance.exports.bench(k, 4);
  console.log(names[k].padEnd(6), one.toFixed(2).padStart(10), four.toFixed(2).padStart(10));
}
