#!/usr/bin/env python3
"""A change to the sharded model's serving, before vs after, side by side
in one run (issue 27): first written for shard batching.

Serves the built front worker (build/) twice in workerd: once with the
shard Workers of a baseline build (`--before DIR`, e.g. the shards built
from the branch before batching: one synchronous step per call) and the
baseline's front (`--before-front DIR`, its build/; default this tree's),
and once with build/ and build/shards. For each concurrency level, runs N
streamed chats with distinct prompts at once on each server in turn: greedy,
or with `--sampled` the API's default sampling (temperature 0.8, top-k 40,
a seed per prompt), alternating which server goes first, and reports, per
server:
- CPU ms per output token over every isolate: the operating system's CPU
  accounting of the workerd process (/proc/<pid>/stat utime + stime, all
  its threads) over the level, divided by the output tokens;
- aggregate output tokens/s (wall) and per-stream decode tokens/s (median;
  tokens after the first over the time from first to last);
- the shards' batch counters from their `GET /` (after only).

Usage: bench/batching.py --before DIR [--before-front DIR] [--before-name TEXT] [--sampled] [--levels 1,4,8]
                         [--max-tokens 64] [--reps 2] [--holds 0,6] [--json PATH]
--holds also serves the batched shards with those BATCH_HOLD_MS; KEEP=1
keeps each server's directory (config, log) for a look afterwards. The
front worker must be built (scripts/build-worker) and build/shards too.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKERD = os.path.join(ROOT, "node_modules/@cloudflare/workerd-linux-64/bin/workerd")
MODEL = "smollm2-135m-instruct"
TICK = os.sysconf("SC_CLK_TCK")

TOPICS = [
    "the sea", "a mountain", "a city at night", "a forest in autumn", "a desert", "a river",
    "a small village", "the moon", "a library", "a train journey", "a market", "a garden",
    "a storm", "a lighthouse", "a snowy morning", "an old castle", "a bakery", "a harbour",
    "a summer festival", "a museum", "a quiet lake", "a busy airport", "a farm", "a bridge",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compatibility_date():
    for line in open(os.path.join(ROOT, "wrangler.toml")):
        if line.startswith("compatibility_date"):
            return line.split("=", 1)[1].strip().strip('"')
    raise SystemExit("no compatibility_date in wrangler.toml")


def config(dirname, front_dir, shards_dir, port, shard_ports, hold):
    """A workerd config as tests/support/mod.rs writes one."""
    date = compatibility_date()
    plan = json.load(open(os.path.join(shards_dir, "plan.json")))
    for f in ["entry.mjs", "index.js", "index_bg.wasm"]:
        os.link(os.path.join(front_dir, f), os.path.join(dirname, f))
    os.makedirs(os.path.join(dirname, "sessions"))
    binds = [
        '(name = "SESSIONS", durableObjectNamespace = "ChatSession")',
        '(name = "RATE_LIMITER", durableObjectNamespace = "RateLimiter")',
    ]
    services = ['(name = "main", worker = .edgeinfer)',
                f'(name = "sessions-disk", disk = (path = "{dirname}/sessions", writable = true))']
    sockets = [f'(name = "http", address = "127.0.0.1:{port}", http = (), service = "main")']
    extra = ""
    hold = "" if hold is None else f', (name = "BATCH_HOLD_MS", text = "{hold}")'
    for shard, sp in zip(plan, shard_ports):
        s, w = shard["script"], f"shard{shard['index']}"
        os.makedirs(os.path.join(dirname, s))
        for f in ["entry.mjs", "pass.mjs", "shard.wasm", "weights.bin"]:
            os.link(os.path.join(shards_dir, s, f), os.path.join(dirname, s, f))
        binds.append(f'(name = "{shard["binding"]}", service = "{s}")')
        services.append(f'(name = "{s}", worker = .{w})')
        sockets.append(f'(name = "{w}", address = "127.0.0.1:{sp}", http = (), service = "{s}")')
        extra += f"""const {w} :Workerd.Worker = (
  modules = [
    (name = "entry.mjs", esModule = embed "{s}/entry.mjs"),
    (name = "pass.mjs", esModule = embed "{s}/pass.mjs"),
    (name = "shard.wasm", wasm = embed "{s}/shard.wasm"),
    (name = "weights.bin", data = embed "{s}/weights.bin"),
  ],
  bindings = [(name = "TOKEN_BUDGET", text = "{shard['token_budget']}"){hold}],
  compatibilityDate = "{date}",
);
"""
    text = f"""using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [{", ".join(services)}],
  sockets = [{", ".join(sockets)}],
);
const edgeinfer :Workerd.Worker = (
  modules = [
    (name = "entry.mjs", esModule = embed "entry.mjs"),
    (name = "index.js", esModule = embed "index.js"),
    (name = "index_bg.wasm", wasm = embed "index_bg.wasm"),
  ],
  bindings = [{", ".join(binds)}],
  durableObjectNamespaces = [
    (className = "ChatSession", uniqueKey = "edgeinfer-chat-sessions", enableSql = true),
    (className = "RateLimiter", uniqueKey = "edgeinfer-rate-limiter", enableSql = true),
  ],
  durableObjectStorage = (localDisk = "sessions-disk"),
  compatibilityDate = "{date}",
);
{extra}"""
    path = os.path.join(dirname, "config.capnp")
    open(path, "w").write(text)
    return path


class Server:
    def __init__(self, name, shards_dir, hold=None, front_dir=os.path.join(ROOT, "build")):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix=f"batching-{name}-")
        self.port = free_port()
        plan = json.load(open(os.path.join(shards_dir, "plan.json")))
        self.shard_ports = [free_port() for _ in plan]
        path = config(self.dir, front_dir, shards_dir, self.port, self.shard_ports, hold)
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.proc = subprocess.Popen([WORKERD, "serve", path], cwd=self.dir, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/healthz")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise SystemExit(f"{name}: workerd did not start: see {self.dir}/log")
            time.sleep(0.1)

    def cpu_seconds(self):
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def shard_info(self):
        out = []
        for p in self.shard_ports:
            c = http.client.HTTPConnection("127.0.0.1", p, timeout=30)
            c.request("GET", "/")
            out.append(json.loads(c.getresponse().read()))
        return out

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait()
        if not os.environ.get("KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print("kept", self.dir)


def chat(port, prompt, max_tokens, seed=None):
    """One streamed chat, greedy (or sampled with the API's defaults and
    `seed`): (completion tokens, first token time, last token time, start,
    text)."""
    sampling = {"temperature": 0} if seed is None else {"seed": seed}
    body = json.dumps({
        "model": MODEL, "max_tokens": max_tokens, "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": prompt}], **sampling,
    })
    start = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"{r.status} {r.read()[:300]}")
    first = last = None
    tokens = 0
    text = ""
    for line in r:
        line = line.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("error"):
            print("stream error:", event["error"], file=sys.stderr, flush=True)
            text += f"[error: {event['error'].get('message')}]"
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        for choice in event.get("choices", []):
            content = choice.get("delta", {}).get("content")
            if content:
                now = time.monotonic()
                first = first or now
                last = now
                text += content
    return tokens, first, last, start, text


def level(server, prompts, max_tokens, sampled):
    results = [None] * len(prompts)

    def run(i):
        results[i] = chat(server.port, prompts[i], max_tokens, i + 1 if sampled else None)

    cpu0, t0 = server.cpu_seconds(), time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu, wall = server.cpu_seconds() - cpu0, time.monotonic() - t0
    tokens = sum(r[0] for r in results)
    per_stream = [
        (r[0] - 1) / (r[2] - r[1]) for r in results if r[0] > 1 and r[2] > r[1]
    ]
    ttft = [r[1] - r[3] for r in results if r[1]]
    return {
        "streams": len(prompts),
        "output_tokens": tokens,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_token": round(cpu * 1000 / max(tokens, 1), 2),
        "aggregate_tokens_per_s": round(tokens / wall, 1),
        "per_stream_decode_tokens_per_s_median": round(statistics.median(per_stream), 1) if per_stream else None,
        "ttft_ms_median": round(statistics.median(ttft) * 1000) if ttft else None,
        "texts": [r[4] for r in results],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="shard build without batching (a build/shards dir)")
    ap.add_argument("--after", default=os.path.join(ROOT, "build/shards"))
    ap.add_argument("--before-front", default=os.path.join(ROOT, "build"),
                    help="the baseline's front worker (a build dir); default this tree's")
    ap.add_argument("--before-name", default="the --before build",
                    help="what the baseline is, for the JSON (e.g. 'main at 343cce9')")
    ap.add_argument("--sampled", action="store_true",
                    help="the API's default sampling (temperature 0.8, top-k 40), seeded, not greedy")
    ap.add_argument("--levels", default="1,4,8")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--holds", default="", help="also serve the batched shards with these BATCH_HOLD_MS, e.g. 0,3")
    ap.add_argument("--json")
    a = ap.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}, {os.cpu_count()} logical; load before: {open('/proc/loadavg').read().strip()}")
    servers = [Server("before", a.before, front_dir=a.before_front), Server("after", a.after)]
    servers += [Server(f"hold{h}", a.after, int(h)) for h in a.holds.split(",") if h]
    # What the baseline is, in words (never a path of this machine).
    out = {"cpu": cpu, "sampled": a.sampled, "before": a.before_name, "levels": []}
    try:
        for s in servers:  # warm every isolate
            chat(s.port, "Hello!", 4)
        n = 0
        for lv in [int(x) for x in a.levels.split(",")]:
            for rep in range(a.reps):
                prompts = [f"Write a short story about {TOPICS[(n + i) % len(TOPICS)]}." for i in range(lv)]
                n += lv
                order = servers[rep % len(servers):] + servers[:rep % len(servers)]
                row = {"level": lv, "rep": rep}
                for s in order:
                    row[s.name] = level(s, prompts, a.max_tokens, a.sampled)
                same = all(row[s.name]["texts"] == row["before"]["texts"] for s in servers)
                for s in servers:
                    r = row[s.name]
                    del r["texts"]
                    print(f"{lv:>2} streams rep {rep} {s.name:>6}: {r['cpu_ms_per_token']:6.2f} CPU ms/token, "
                          f"{r['aggregate_tokens_per_s']:6.1f} tok/s aggregate, "
                          f"{r['per_stream_decode_tokens_per_s_median']} tok/s per stream (median), "
                          f"ttft {r['ttft_ms_median']} ms, {r['output_tokens']} tokens, wall {r['wall_s']} s", flush=True)
                row["same_texts"] = same
                print(f"   same texts on every server: {same}")
                out["levels"].append(row)
        for s in servers[1:]:
            info = s.shard_info()
            out[f"{s.name}_shards"] = [{k: i.get(k) for k in ("layers", "stages", "batched_stages", "batched_calls", "max_batch", "holds", "hold_timeouts", "linear_memory_bytes")} for i in info]
            for i in out[f"{s.name}_shards"]:
                print(s.name, "shard", i)
    finally:
        for s in servers:
            s.stop()
    out["load_after"] = open("/proc/loadavg").read().strip()
    print("load after:", out["load_after"])
    if a.json:
        json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
