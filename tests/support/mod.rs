//! Test harness: builds the worker when its inputs changed, serves it with
//! workerd (or, with `EDGEINFER_SERVER=deno`, the Deno server of the same
//! build) on 127.0.0.1 at a free port, waits until it answers, and stops its
//! whole process group when dropped, also when a test fails.

#![allow(dead_code)]

pub mod load;
pub mod sse;

use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime};

/// A check's verdict for libtest-mimic: `Ok`, or a failure with `message`.
pub fn ensure(cond: bool, message: impl FnOnce() -> String) -> Result<(), libtest_mimic::Failed> {
    if cond {
        Ok(())
    } else {
        Err(message().into())
    }
}

/// A whole chat completion that must be a 200 (the reply's JSON).
pub fn chat_ok(
    c: &Client,
    body: &serde_json::Value,
) -> Result<serde_json::Value, libtest_mimic::Failed> {
    let res = c.post_json("/v1/chat/completions", body);
    ensure(res.status == 200, || {
        format!(
            "{body}: {} {}",
            res.status,
            String::from_utf8_lossy(&res.body)
        )
    })?;
    Ok(res.json())
}

/// tests/clients/openai_chat.py (the official openai Python client) against
/// `c`, with `env` added: Ok when it exits 0.
pub fn openai_python_client(c: &Client, env: &[(&str, &str)]) -> Result<(), libtest_mimic::Failed> {
    let Some(python) = client_python() else {
        return Err("the openai Python client is not installed: run scripts/setup".into());
    };
    let out = Command::new(python)
        .arg(root().join("tests/clients/openai_chat.py"))
        .env("EDGEINFER_BASE_URL", format!("{}/v1", c.base()))
        .envs(env.iter().copied())
        .output()
        .expect("run tests/clients/openai_chat.py");
    ensure(out.status.success(), || {
        format!(
            "openai_chat.py failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The last line of `node script args...`'s output as JSON (a script may
/// log other lines before it), or why there is none.
pub fn node_result(
    script: &str,
    args: &[&std::ffi::OsStr],
) -> Result<serde_json::Value, libtest_mimic::Failed> {
    let out = Command::new("node")
        .arg(root().join(script))
        .args(args)
        .output()
        .map_err(|e| format!("run node: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure(out.status.success(), || {
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))
    })?;
    stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("no result: {stdout}").into())
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The reference outputs of a model: `models/<dir>/golden.json`, as the
/// manifest lists it (tests/golden.rs checks every model has a test that
/// reads its file through here).
pub fn golden(dir: &str) -> serde_json::Value {
    let path = root().join("models").join(dir).join("golden.json");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The SmolLM2-135M-Instruct GGUF from its PyPI package, where
/// models/smollm2/export.sh puts it (`EDGEINFER_MODELS` or the user's cache;
/// scripts/setup runs it). Its sha256 is checked by that script.
pub fn smollm2_gguf() -> PathBuf {
    let models = std::env::var_os("EDGEINFER_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                });
            cache.join("edgeinfer/models")
        });
    models.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Builds `build/` once per test process, when its inputs changed
/// (`scripts/build-worker --if-stale`; EDGEINFER_REBUILD=1 forces a build).
pub fn ensure_built() {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| build_worker(&["--if-stale"]));
}

/// Runs scripts/build-worker with `args`, failing the test if it fails.
fn build_worker(args: &[&str]) {
    let status = Command::new(root().join("scripts/build-worker"))
        .args(args)
        .current_dir(root())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .expect("run scripts/build-worker (did scripts/setup run?)");
    assert!(status.success(), "scripts/build-worker {args:?} failed");
}

/// The server the tests speak to: the built worker on workerd, or the same
/// build under Deno (build/deno/main.mjs). The checks are the same; a
/// check of something only one of them has is marked with [`only_on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Workerd,
    Deno,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Workerd => "workerd",
            Server::Deno => "deno",
        }
    }
}

/// `EDGEINFER_SERVER`: `workerd` (the default) or `deno`.
pub fn server() -> Server {
    match std::env::var("EDGEINFER_SERVER").as_deref() {
        Err(_) | Ok("") | Ok("workerd") => Server::Workerd,
        Ok("deno") => Server::Deno,
        Ok(other) => panic!("EDGEINFER_SERVER={other}: expected workerd or deno"),
    }
}

/// `trial`, ignored (and so listed as such) unless the tests speak to
/// `server`: for what only one platform has (a KV service standing in for
/// a failing one, shard Workers on sockets of their own, wrangler's KV).
pub fn only_on(server: Server, trial: libtest_mimic::Trial) -> libtest_mimic::Trial {
    let other = self::server() != server;
    trial.with_ignored_flag(other)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// A running worker. Dropping it stops every process it started.
pub struct Worker {
    child: Child,
    pub base: String,
    log: PathBuf,
    _state: TempDir,
    /// From spawning workerd to the first 200 from /healthz.
    pub startup: Duration,
    /// With `Bindings::shard_sockets`: each shard Worker's own base URL.
    pub shards: Vec<String>,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = root()
            .join("target/edgeinfer-test")
            .join(format!("{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create test dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `compatibility_date` from wrangler.toml, so workerd runs the worker as
/// wrangler and production do.
fn compatibility_date() -> String {
    let text = std::fs::read_to_string(root().join("wrangler.toml")).expect("read wrangler.toml");
    text.lines()
        .find_map(|l| {
            l.strip_prefix("compatibility_date").map(|v| {
                v.trim_start_matches([' ', '='])
                    .trim()
                    .trim_matches('"')
                    .to_string()
            })
        })
        .expect("wrangler.toml sets compatibility_date")
}

/// One module of a worker: its name, workerd kind (`esModule`, `wasm`) and bytes.
pub struct Module {
    pub name: &'static str,
    pub kind: &'static str,
    pub bytes: Vec<u8>,
}

/// The built worker's modules: the entry module first (workerd's main
/// module), then the Rust worker's JS glue and its wasm.
pub fn built_modules() -> Vec<Module> {
    modules_in(&root().join("build"))
}

/// The modules of a worker built into `dir` by scripts/build-worker.
pub fn modules_in(dir: &Path) -> Vec<Module> {
    let read = |f: &str| {
        std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("read {}/{f}: {e}", dir.display()))
    };
    vec![
        Module {
            name: "entry.mjs",
            kind: "esModule",
            bytes: read("entry.mjs"),
        },
        Module {
            name: "index.js",
            kind: "esModule",
            bytes: read("index.js"),
        },
        Module {
            name: "index_bg.wasm",
            kind: "wasm",
            bytes: read("index_bg.wasm"),
        },
    ]
}

/// Builds the `test-panic` worker (target/test-panic-worker) when stale and
/// returns its modules.
pub fn test_panic_modules() -> Vec<Module> {
    build_worker(&["--if-stale", "--test-panic"]);
    modules_in(&root().join("target/test-panic-worker"))
}

/// What the worker is bound to besides its modules.
#[derive(Default, Clone)]
pub struct Bindings {
    /// The `CACHE` KV namespace, served by this JavaScript module (workerd
    /// turns KV calls into HTTP requests to it): used to make KV fail or hang.
    pub kv_service: Option<String>,
    /// Text variables, as `[vars]` in wrangler.toml.
    pub vars: Vec<(String, String)>,
    /// Where the `ChatSession` objects keep their SQLite files; a fresh
    /// directory when `None`. Reusing one across restarts keeps the sessions.
    pub sessions_dir: Option<PathBuf>,
    /// Leave out the shard Workers of the sharded chat model (the default
    /// chat model), which are otherwise served too (built by
    /// scripts/build-shards) and bound to the front worker as wrangler.toml
    /// binds them. Without them its requests get the 503 of a shard down.
    pub no_shards: bool,
    /// Serve each shard Worker on a socket of its own too (the bench reads
    /// its `GET /`: memory, load time); their bases are `Worker::shards`.
    pub shard_sockets: bool,
    /// Shards replaced by a Worker that fails, to test a shard that is down
    /// or fails mid-reply.
    pub broken_shards: Vec<(usize, BrokenShard)>,
    /// `RATE_LIMITER` bound to objects whose every call throws: a limiter
    /// that is down.
    pub broken_limiter: bool,
    /// Every shard's `TOKEN_BUDGET` instead of its plan's.
    pub shard_budget: Option<usize>,
}

/// How a stand-in shard fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenShard {
    /// Every `open` throws: the shard is down.
    Down,
    /// `open` works; every pass throws: it fails mid-reply.
    FailsPasses,
}

/// One shard Worker as scripts/build-shards wrote it (build/shards/plan.json).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ShardPlan {
    pub model: String,
    pub index: usize,
    pub binding: String,
    pub script: String,
    pub layers: [usize; 2],
    pub weights_bytes: u64,
    pub planned_memory_bytes: u64,
    pub sessions: usize,
    pub token_budget: usize,
}

/// Builds the shard Workers when their inputs changed and returns the plan.
pub fn shard_plan() -> Vec<ShardPlan> {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new(root().join("scripts/build-shards"))
            .arg("--if-stale")
            .current_dir(root())
            .status()
            .expect("run scripts/build-shards (did scripts/setup run?)");
        assert!(status.success(), "scripts/build-shards failed");
    });
    let path = root().join("build/shards/plan.json");
    let text = std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).expect("build/shards/plan.json")
}

/// The files of shard `script` linked into `dir/<script>/` (hard links: the
/// weights are tens of MB, and workerd resolves `embed` paths relative to
/// its config).
fn link_shard(dir: &Path, script: &str) {
    let from = root().join("build/shards").join(script);
    let to = dir.join(script);
    std::fs::create_dir_all(&to).expect("create shard dir");
    for file in ["entry.mjs", "pass.mjs", "shard.wasm", "weights.bin"] {
        if std::fs::hard_link(from.join(file), to.join(file)).is_err() {
            std::fs::copy(from.join(file), to.join(file))
                .unwrap_or_else(|e| panic!("copy {script}/{file}: {e}"));
        }
    }
}

/// A Worker standing for a broken shard (`BrokenShard`, its kind in `MODE`).
const BROKEN_SHARD: &str = "import { WorkerEntrypoint, RpcTarget } from \"cloudflare:workers\";\n\
class Failing extends RpcTarget {\n\
  forward() { throw new Error(\"this shard failed a pass (test)\"); }\n\
}\n\
export default class extends WorkerEntrypoint {\n\
  begin() {\n\
    if (this.env.MODE === \"down\") throw new Error(\"this shard is down (test)\");\n\
    return { pass: new Failing(), cached: 0 };\n\
  }\n\
  fetch() { return new Response(\"broken\", { status: 503 }); }\n\
}\n";

/// The objects of a limiter that is down (`Bindings::broken_limiter`).
const BROKEN_LIMITER: &str = "export class Failing {\n\
  fetch() { throw new Error(\"the limiter is down (test)\"); }\n\
}\n\
export default { fetch() { return new Response(\"limiter\"); } };\n";

/// A workerd config serving `modules` on 127.0.0.1:`port`. workerd resolves
/// `embed` paths relative to the config, so the modules are written next to
/// it: the server runs a snapshot of the build.
fn workerd_config(
    dir: &Path,
    port: u16,
    modules: &[Module],
    bindings: &Bindings,
    shard_ports: &[u16],
) -> PathBuf {
    let mut list = String::new();
    for m in modules {
        std::fs::write(dir.join(m.name), &m.bytes)
            .unwrap_or_else(|e| panic!("write {}: {e}", m.name));
        list.push_str(&format!(
            "    (name = \"{0}\", {1} = embed \"{0}\"),\n",
            m.name, m.kind
        ));
    }
    // The session objects, when the worker has them (the bench also serves
    // an empty worker, to time the runtime alone).
    let has_sessions = modules
        .iter()
        .any(|m| m.kind == "esModule" && m.bytes.windows(11).any(|w| w == b"ChatSession"));
    let sessions_dir = bindings
        .sessions_dir
        .clone()
        .unwrap_or_else(|| dir.join("sessions"));
    std::fs::create_dir_all(&sessions_dir).expect("create the sessions directory");
    let mut binds = String::new();
    let mut services = String::from("(name = \"main\", worker = .edgeinfer)");
    let mut objects = String::new();
    let mut extra_limiter = String::new();
    if has_sessions {
        binds.push_str("    (name = \"SESSIONS\", durableObjectNamespace = \"ChatSession\"),\n");
        services.push_str(&format!(
            ", (name = \"sessions-disk\", disk = (path = {:?}, writable = true))",
            sessions_dir.display().to_string()
        ));
        let has_limiter = modules
            .iter()
            .any(|m| m.kind == "esModule" && m.bytes.windows(11).any(|w| w == b"RateLimiter"));
        let limiter = if has_limiter && bindings.broken_limiter {
            std::fs::write(dir.join("limiter.mjs"), BROKEN_LIMITER).expect("write broken limiter");
            binds.push_str(
                "    (name = \"RATE_LIMITER\", durableObjectNamespace = (className = \"Failing\", serviceName = \"limiter\")),\n",
            );
            services.push_str(", (name = \"limiter\", worker = .limiter)");
            extra_limiter = format!(
                "const limiter :Workerd.Worker = (\n  modules = [(name = \"limiter.mjs\", esModule = embed \"limiter.mjs\")],\n  durableObjectNamespaces = [(className = \"Failing\", uniqueKey = \"broken-limiter\")],\n  durableObjectStorage = (inMemory = void),\n  compatibilityDate = \"{}\",\n);\n",
                compatibility_date()
            );
            ""
        } else if has_limiter {
            binds.push_str(
                "    (name = \"RATE_LIMITER\", durableObjectNamespace = \"RateLimiter\"),\n",
            );
            "    (className = \"RateLimiter\", uniqueKey = \"edgeinfer-rate-limiter\", enableSql = true),\n"
        } else {
            ""
        };
        objects.push_str(&format!(
            "  durableObjectNamespaces = [\n    (className = \"ChatSession\", uniqueKey = \"edgeinfer-chat-sessions\", enableSql = true),\n{limiter}  ],\n  durableObjectStorage = (localDisk = \"sessions-disk\"),\n",
        ));
    }
    let mut extra = extra_limiter;
    let mut sockets =
        format!("(name = \"http\", address = \"127.0.0.1:{port}\", http = (), service = \"main\")");
    if let Some(js) = &bindings.kv_service {
        std::fs::write(dir.join("kv.js"), js).expect("write kv service");
        binds.push_str("    (name = \"CACHE\", kvNamespace = \"kv\"),\n");
        services.push_str(", (name = \"kv\", worker = .kv)");
        extra.push_str(&format!(
            "const kv :Workerd.Worker = (\n  modules = [(name = \"kv.js\", esModule = embed \"kv.js\")],\n  compatibilityDate = \"{}\",\n);\n",
            compatibility_date()
        ));
    }
    for (name, value) in &bindings.vars {
        binds.push_str(&format!("    (name = {name:?}, text = {value:?}),\n"));
    }
    // Only the front worker binds shards (the bench also serves an empty one).
    if !bindings.no_shards && has_sessions {
        let date = compatibility_date();
        let plan = shard_plan();
        for (k, shard) in plan.iter().enumerate() {
            // Unique across models (models/local.toml may add some).
            let worker = format!("shard{k}");
            binds.push_str(&format!(
                "    (name = {:?}, service = {:?}),\n",
                shard.binding, shard.script
            ));
            services.push_str(&format!(
                ", (name = {:?}, worker = .{worker})",
                shard.script
            ));
            // Broken shards stand for the first sharded model's (the manifest's).
            if let Some((_, how)) = bindings
                .broken_shards
                .iter()
                .find(|(i, _)| *i == shard.index && shard.model == plan[0].model)
            {
                std::fs::write(dir.join("broken.mjs"), BROKEN_SHARD).expect("write broken shard");
                let mode = match how {
                    BrokenShard::Down => "down",
                    BrokenShard::FailsPasses => "fails",
                };
                extra.push_str(&format!(
                    "const {worker} :Workerd.Worker = (\n  modules = [(name = \"broken.mjs\", esModule = embed \"broken.mjs\")],\n  bindings = [(name = \"MODE\", text = \"{mode}\")],\n  compatibilityDate = \"{date}\",\n);\n"
                ));
                continue;
            }
            link_shard(dir, &shard.script);
            if let Some(p) = shard_ports.get(k) {
                sockets.push_str(&format!(
                    ", (name = \"{worker}\", address = \"127.0.0.1:{p}\", http = (), service = {:?})",
                    shard.script
                ));
            }
            extra.push_str(&format!(
                "const {worker} :Workerd.Worker = (\n  modules = [\n    (name = \"entry.mjs\", esModule = embed \"{s}/entry.mjs\"),\n    (name = \"pass.mjs\", esModule = embed \"{s}/pass.mjs\"),\n    (name = \"shard.wasm\", wasm = embed \"{s}/shard.wasm\"),\n    (name = \"weights.bin\", data = embed \"{s}/weights.bin\"),\n  ],\n  bindings = [(name = \"TOKEN_BUDGET\", text = \"{budget}\")],\n  compatibilityDate = \"{date}\",\n);\n",
                s = shard.script,
                budget = bindings.shard_budget.unwrap_or(shard.token_budget),
            ));
        }
    }
    let config = format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [{services}],
  sockets = [{sockets}],
);
const edgeinfer :Workerd.Worker = (
  modules = [
{list}  ],
  bindings = [
{binds}  ],
{objects}  compatibilityDate = "{date}",
);
{extra}"#,
        date = compatibility_date()
    );
    let path = dir.join("config.capnp");
    std::fs::write(&path, config).expect("write workerd config");
    path
}

/// The Python that has the pinned `openai` client (scripts/setup makes it).
pub fn client_python() -> Option<PathBuf> {
    let tools = std::env::var_os("EDGEINFER_TOOLS")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(cache.join("edgeinfer/tools"))
        })?;
    let python = tools.join("client-venv/bin/python");
    python.exists().then_some(python)
}

/// Deno, from the npm package in package-lock.json.
pub fn deno_bin() -> PathBuf {
    let bin = root().join("node_modules/.bin/deno");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup",
        bin.display()
    );
    bin
}

/// `deno --version`'s first line.
pub fn deno_version() -> String {
    Command::new(deno_bin())
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

pub fn workerd_bin() -> PathBuf {
    let bin = root().join("node_modules/@cloudflare/workerd-linux-64/bin/workerd");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup",
        bin.display()
    );
    bin
}

impl Worker {
    /// Builds if needed, then serves the worker at a free port with
    /// [`server`]: `workerd serve` (the runtime of `wrangler dev` and of
    /// production), or Deno.
    pub fn start() -> Worker {
        Self::start_with(&Bindings::default())
    }

    /// The built worker with `bindings`.
    pub fn start_with(bindings: &Bindings) -> Worker {
        Self::start_on(server(), bindings)
    }

    /// The built worker with `bindings` on `server` (the bench runs both).
    pub fn start_on(server: Server, bindings: &Bindings) -> Worker {
        ensure_built();
        match server {
            Server::Workerd => Self::spawn_workerd(&built_modules(), bindings),
            Server::Deno => Self::spawn_deno(&root().join("build"), bindings),
        }
    }

    /// A Deno program alone (`source`, which must listen on 127.0.0.1 at
    /// `PORT` and answer /healthz): the bench's empty server.
    pub fn start_deno_script(source: &str) -> Worker {
        let state = TempDir::new("deno-script");
        let port = free_port();
        let script = state.0.join("server.mjs");
        std::fs::write(&script, source).expect("write the script");
        let mut command = Command::new(deno_bin());
        command
            .args(["run", "--no-prompt", "--allow-env=PORT"])
            .arg(format!("--allow-net=127.0.0.1:{port}"))
            .arg(&script)
            .env("PORT", port.to_string())
            .env("DENO_NO_UPDATE_CHECK", "1");
        Self::spawn(command, state, port)
    }

    /// Resident memory of the server's processes (the runtime and all it
    /// holds), from /proc.
    pub fn rss_bytes(&self) -> u64 {
        fn tree(pid: u32) -> Vec<u32> {
            let mut all = vec![pid];
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                all.extend(tree(child));
            }
            all
        }
        tree(self.child.id())
            .into_iter()
            .filter_map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let kb: u64 = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()?;
                Some(kb * 1024)
            })
            .sum()
    }

    /// The `test-panic` build (a route that panics), on [`server`].
    pub fn start_test_panic() -> Worker {
        match server() {
            Server::Workerd => Self::start_modules(&test_panic_modules()),
            Server::Deno => {
                build_worker(&["--if-stale", "--test-panic"]);
                Self::spawn_deno(
                    &root().join("target/test-panic-worker"),
                    &Bindings {
                        no_shards: true,
                        ..Bindings::default()
                    },
                )
            }
        }
    }

    /// Serves the Deno server of the build in `build` (its deno/main.mjs)
    /// with `bindings`: vars as environment variables, the cache and the
    /// sessions in a Deno KV file (in `sessions_dir`, when set, so a
    /// restart keeps them).
    fn spawn_deno(build: &Path, bindings: &Bindings) -> Worker {
        assert!(
            bindings.kv_service.is_none()
                && !bindings.shard_sockets
                && bindings.broken_shards.is_empty()
                && !bindings.broken_limiter,
            "a KV service, shard sockets, broken shards and a broken limiter are workerd's: mark the check only_on(Server::Workerd)"
        );
        let state = TempDir::new("deno");
        let port = free_port();
        let kv_dir = bindings
            .sessions_dir
            .clone()
            .unwrap_or_else(|| state.0.join("kv"));
        std::fs::create_dir_all(&kv_dir).expect("create the KV directory");
        let mut command = Command::new(deno_bin());
        command
            .arg("run")
            .args(["--no-prompt", "--unstable-kv", "--allow-env"])
            .arg("--config")
            .arg(build.join("deno/deno.json"))
            .arg(format!("--allow-net=127.0.0.1:{port}"))
            .arg(format!(
                "--allow-read={},{},{}",
                build.display(),
                root().join("build/shards").display(),
                kv_dir.display()
            ))
            .arg(format!("--allow-write={}", kv_dir.display()))
            .arg(build.join("deno/main.mjs"))
            .env("PORT", port.to_string())
            .env("EDGEINFER_ADDRESS", "127.0.0.1")
            .env("EDGEINFER_KV", kv_dir.join("edgeinfer.sqlite3"))
            .env("DENO_NO_UPDATE_CHECK", "1");
        if bindings.no_shards {
            command.env("EDGEINFER_SHARDS", "off");
        } else {
            shard_plan();
        }
        for (name, value) in &bindings.vars {
            command.env(name, value);
        }
        Self::spawn(command, state, port)
    }

    /// Serves any worker alone (no shard Workers); the first module is the
    /// main one.
    pub fn start_modules(modules: &[Module]) -> Worker {
        Self::spawn_workerd(
            modules,
            &Bindings {
                no_shards: true,
                ..Bindings::default()
            },
        )
    }

    /// Serves `modules` with `bindings` (shard Workers included unless
    /// `no_shards`, when the modules have the chat sessions: the front).
    pub fn start_modules_with(modules: &[Module], bindings: &Bindings) -> Worker {
        Self::spawn_workerd(modules, bindings)
    }

    fn spawn_workerd(modules: &[Module], bindings: &Bindings) -> Worker {
        let state = TempDir::new("workerd");
        let port = free_port();
        let shard_ports: Vec<u16> = if bindings.shard_sockets && !bindings.no_shards {
            shard_plan().iter().map(|_| free_port()).collect()
        } else {
            Vec::new()
        };
        let config = workerd_config(&state.0, port, modules, bindings, &shard_ports);
        let mut command = Command::new(workerd_bin());
        command.arg("serve").arg(&config).arg("--verbose");
        let mut worker = Self::spawn(command, state, port);
        worker.shards = shard_ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        worker
    }

    /// The built worker under `wrangler dev` (miniflare's KV, as users run it
    /// locally), with the `CACHE` namespace of wrangler.toml and state kept in
    /// a temporary directory. Slower to start than plain workerd; used where
    /// the real KV emulation matters.
    pub fn start_wrangler() -> Worker {
        Self::start_wrangler_with(&[])
    }

    /// As [`Worker::start_wrangler`], with `vars` (name, value) set as
    /// `wrangler dev --var` does.
    pub fn start_wrangler_with(vars: &[(&str, &str)]) -> Worker {
        ensure_built();
        let state = TempDir::new("wrangler");
        let port = free_port();
        let config = Command::new(root().join("scripts/nobuild-config"))
            .output()
            .expect("run scripts/nobuild-config");
        assert!(config.status.success(), "scripts/nobuild-config failed");
        let main = root().join("build/entry.mjs");
        let text = String::from_utf8_lossy(&config.stdout).replace(
            "main = \"build/entry.mjs\"",
            &format!("main = {:?}", main.display().to_string()),
        );
        let toml = state.0.join("wrangler.toml");
        std::fs::write(&toml, text).expect("write wrangler config");
        let mut command = Command::new(root().join("node_modules/.bin/wrangler"));
        command
            .arg("dev")
            .arg("-c")
            .arg(&toml)
            .args(["--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-port", &free_port().to_string()])
            .arg("--persist-to")
            .arg(state.0.join("state"))
            .args(["--log-level", "log"])
            .args(
                vars.iter()
                    .flat_map(|(k, v)| ["--var".to_string(), format!("{k}:{v}")]),
            )
            .env("WRANGLER_SEND_METRICS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("XDG_CONFIG_HOME", root().join(".config"));
        Self::spawn(command, state, port)
    }

    fn spawn(mut command: Command, state: TempDir, port: u16) -> Worker {
        let log = state.0.join("server.log");
        let out = File::create(&log).expect("create log");
        let spawned = Instant::now();
        let child = command
            .current_dir(&state.0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("spawn the worker's server");
        let mut worker = Worker {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            _state: state,
            startup: Duration::ZERO,
            shards: Vec::new(),
        };
        worker.wait_ready();
        worker.startup = spawned.elapsed();
        worker
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let client = Client::new(&self.base);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the server ({}) exited ({status}) before serving:\n{}",
                    server().name(),
                    self.log_text()
                );
            }
            if let Ok(res) = client.try_get("/healthz") {
                if res.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not answer /healthz within 120 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Kills the server at once (SIGKILL to its process group), as a crash or
    /// an evicted machine would: nothing gets to finish or flush.
    pub fn crash(mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        let _ = File::open(&self.log).and_then(|mut f| f.read_to_string(&mut s));
        s
    }

    pub fn client(&self) -> Client {
        Client::new(&self.base)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill")
                .args([sig, "--", &group])
                .stderr(Stdio::null())
                .status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("-KILL");
        let _ = self.child.wait();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the status and the error contract `{"error": {"type", "message"}}`.
    pub fn expect_error(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let body = self.json();
        let error = &body["error"];
        assert!(error["type"].is_string(), "error.type missing: {body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error.message missing: {body}"
        );
        error.clone()
    }
}

/// A small blocking HTTP client that returns every status as a value.
pub struct Client {
    base: String,
    agent: ureq::Agent,
    /// Sent with every request (`Client::with_header`).
    headers: Vec<(String, String)>,
}

impl Client {
    pub fn new(base: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Client {
            base: base.to_string(),
            agent: config.into(),
            headers: Vec::new(),
        }
    }

    /// The same client, sending `name: value` with every request (an API
    /// key, say).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// What [`Client::with_header`] added.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn read(mut res: ureq::http::Response<ureq::Body>) -> Reply {
        let status = res.status().as_u16();
        let headers = res
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = res
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .expect("read body");
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn try_get(&self, path: &str) -> Result<Reply, ureq::Error> {
        let mut req = self.agent.get(format!("{}{path}", self.base));
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req.call().map(Self::read)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Any method, any content type (or none), any body bytes.
    pub fn send(&self, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        self.try_send(method, path, content_type, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// As [`Client::send`], with a failed connection as an error.
    pub fn try_send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, ureq::Error> {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        let req = req.body(body.to_vec()).expect("build request");
        self.agent.run(req).map(Self::read)
    }

    /// Connects, and writes `head` (plus `Host` and the blank line) and `body`
    /// from a second thread, which returns the writing half when done; the
    /// reading half (60 s timeout) is returned at once.
    fn send_raw(
        &self,
        head: &str,
        body: Vec<u8>,
    ) -> (
        std::net::TcpStream,
        std::thread::JoinHandle<std::net::TcpStream>,
    ) {
        use std::io::Write;
        let addr = self.base.trim_start_matches("http://");
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("set timeout");
        let mut writer = stream.try_clone().expect("clone socket");
        let head = format!("{head}\r\nHost: {addr}\r\n\r\n");
        let sender = std::thread::spawn(move || {
            let _ = writer.write_all(head.as_bytes());
            for chunk in body.chunks(64 * 1024) {
                if writer.write_all(chunk).is_err() {
                    break;
                }
            }
            writer
        });
        (stream, sender)
    }

    /// Sends `head` (request line and headers, without the blank line) and
    /// `body` on a raw connection, writing from a second thread while this one
    /// reads, as curl does: a server may answer (413) before reading a body,
    /// and this sees that answer instead of a connection reset. Returns the
    /// status code. For requests a well-behaved client library will not send.
    pub fn raw_status(&self, head: &str, body: Vec<u8>) -> u16 {
        use std::io::{BufRead, BufReader};
        let (stream, sender) = self.send_raw(&format!("{head}\r\nConnection: close"), body);
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .expect("read status line");
        let _ = sender.join();
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"))
    }

    /// Sends `head` with `body` and then `GET {next}` on the same kept-alive
    /// connection, as a client library reuses a pooled socket; returns both
    /// statuses. The body is written from a second thread, as in
    /// [`Client::raw_status`], so an answer before the body's end is seen.
    pub fn statuses_on_one_connection(&self, head: &str, body: Vec<u8>, next: &str) -> (u16, u16) {
        use std::io::{BufReader, Write};
        let addr = self.base.trim_start_matches("http://").to_string();
        let (stream, sender) = self.send_raw(head, body);
        let mut reader = BufReader::new(stream);
        let first = read_response(&mut reader);
        let mut writer = sender.join().expect("writer thread");
        let second = format!("GET {next} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        writer
            .write_all(second.as_bytes())
            .expect("write the second request");
        (first, read_response(&mut reader))
    }

    /// A 1 MiB body (over the limit) and then `GET /healthz` on the same
    /// connection: the statuses of both.
    pub fn oversize_body_then_get(&self) -> (u16, u16) {
        let big = vec![b' '; 1 << 20];
        let head = format!(
            "POST /v1/classify HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
            big.len()
        );
        self.statuses_on_one_connection(&head, big, "/healthz")
    }

    /// Any method with the given headers.
    pub fn send_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        let req = req.body(body.to_vec()).expect("build request");
        self.agent
            .run(req)
            .map(Self::read)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Reply {
        self.send(
            "POST",
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }
}

/// Reads one HTTP/1.1 response (status line, headers, and a body framed by
/// `Content-Length` or chunked) and returns its status.
fn read_response(reader: &mut impl std::io::BufRead) -> u16 {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let (mut length, mut chunked) = (0usize, false);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).expect("read header");
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((header, ""));
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().expect("content-length");
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    fn skip(reader: &mut impl std::io::BufRead, n: usize) {
        let mut buf = vec![0; n];
        reader.read_exact(&mut buf).expect("read body");
    }
    if !chunked {
        skip(reader, length);
        return status;
    }
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).expect("read chunk size");
        let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        skip(reader, size + 2);
        if size == 0 {
            return status;
        }
    }
}

/// A check of a test binary that shares one worker.
pub type Check = fn(&Client) -> Result<(), libtest_mimic::Failed>;

/// The `main` of a test binary whose checks speak to one worker served with
/// `bindings`: each check in order, one at a time (some come after every
/// hostile one, some time a stream), then `more`, which make their own
/// servers or wait for the shared one's base (passed in). The worker is
/// started only when a check will run (not for `--list`), and its log is
/// printed when one failed.
pub fn run_checks(
    bindings: &Bindings,
    checks: Vec<(&'static str, Check)>,
    more: impl FnOnce(&str) -> Vec<libtest_mimic::Trial>,
) -> ! {
    let mut args = libtest_mimic::Arguments::from_args();
    args.test_threads = Some(1);
    let worker = (!args.list).then(|| Worker::start_with(bindings));
    let base = worker.as_ref().map(|w| w.base.clone()).unwrap_or_default();
    let mut trials: Vec<libtest_mimic::Trial> = checks
        .into_iter()
        .map(|(name, check)| {
            let base = base.clone();
            libtest_mimic::Trial::test(name, move || check(&Client::new(&base)))
        })
        .collect();
    trials.extend(more(&base));
    let conclusion = libtest_mimic::run(&args, trials);
    if conclusion.has_failed() {
        if let Some(w) = &worker {
            eprintln!("--- {} log ---\n{}", server().name(), w.log_text());
        }
    }
    drop(worker);
    conclusion.exit()
}
