// A shard Worker on workerd: its modules (the shard module, this shard's
// weights) handed to the shard's logic, shard/pass.mjs, which the Deno
// server loads too (src/js/deno/shards.mjs).
import { WorkerEntrypoint, RpcTarget } from "cloudflare:workers";
import shardModule from "./shard.wasm";
import weights from "./weights.bin";
import { shardEntrypoint } from "./pass.mjs";

export default shardEntrypoint(shardModule, weights, { WorkerEntrypoint, RpcTarget });
