//! `scripts/add-model PATH.gguf --license TEXT [options]`: makes a chat
//! model of a GGUF file the user brings, as build.rs and scripts/build-shards
//! will serve it, or says why it cannot.
//!
//! It hard-links (or copies) the file into the models cache under a name
//! with its hash (`local/<id>-<sha256 prefix>.gguf`), writes its entry
//! into models/local.toml (the user's manifest beside models/manifest.toml,
//! not in git; an entry of the same id is replaced), and runs every check
//! build.rs runs on it -- architecture, tensor types, the tokenizer built
//! from the file's vocabulary, the ChatML template, the shard plan -- so a
//! file that cannot be served is refused here, with the reason, before
//! its entry is written. It prints the plan: every Worker, what it holds,
//! its weights and planned memory. The front worker's bindings to them are
//! added by scripts/nobuild-config from build/shards/plan.json.
//!
//! Options: `--id NAME` (default: from the file's `general.name`),
//! `--context N` (default 1024) and `--sessions N` (default 2; fewer when
//! the plan needs more Workers than a request may reach), `--system TEXT`
//! (the default system message; default: the one the file's template
//! writes), `--source REGISTRY:PACKAGE@VERSION` (where the file came from),
//! `--description TEXT`.

use std::path::{Path, PathBuf};

use edgeinfer_pipeline as check;

use check::gguf_tokenizer::Vocabulary;
use check::pack_gguf::Gguf;
use sha2::{Digest, Sha256};

fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("add-model: {message}");
    std::process::exit(1)
}

/// A TOML basic string: JSON's escapes are all TOML's.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|e| fail(e))
}

/// An id from a model's name: lower-case ASCII letters, digits, '-' and '.'.
fn id_of(name: &str) -> String {
    let mut id = String::new();
    for c in name.chars() {
        match c {
            c if c.is_ascii_alphanumeric() || c == '.' => id.push(c.to_ascii_lowercase()),
            _ if !id.ends_with('-') && !id.is_empty() => id.push('-'),
            _ => {}
        }
    }
    id.trim_end_matches('-').to_string()
}

struct Options {
    file: PathBuf,
    license: String,
    id: Option<String>,
    context: Option<usize>,
    sessions: Option<usize>,
    system: Option<String>,
    source: Option<String>,
    description: Option<String>,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        file: PathBuf::new(),
        license: String::new(),
        id: None,
        context: None,
        sessions: None,
        system: None,
        source: None,
        description: None,
    };
    let usage = "usage: scripts/add-model PATH.gguf --license TEXT [--id NAME] [--context N] \
                 [--sessions N] [--system TEXT] [--source REGISTRY:PACKAGE@VERSION] [--description TEXT]";
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| fail(format!("{arg} needs a value\n{usage}")))
        };
        let number = |v: String| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| fail(format!("{arg} takes a positive whole number, not {v:?}")))
        };
        match arg.as_str() {
            "--license" => o.license = value(),
            "--id" => o.id = Some(value()),
            "--context" => o.context = Some(number(value())),
            "--sessions" => o.sessions = Some(number(value())),
            "--system" => o.system = Some(value()),
            "--source" => o.source = Some(value()),
            "--description" => o.description = Some(value()),
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0)
            }
            a if a.starts_with("--") => fail(format!("unknown option {a}\n{usage}")),
            a if o.file.as_os_str().is_empty() => o.file = PathBuf::from(a),
            a => fail(format!("one file at a time (also given {a})\n{usage}")),
        }
    }
    if o.file.as_os_str().is_empty() {
        fail(usage);
    }
    if o.license.trim().is_empty() {
        fail(format!(
            "--license is required: the model's license line, as /v1/models shows it \
             (e.g. \"Apache-2.0 (Qwen2.5-Coder-0.5B-Instruct by Alibaba Cloud)\")\n{usage}"
        ));
    }
    o
}

/// `REGISTRY:PACKAGE@VERSION`, or where the file is from when not given.
fn source(given: Option<&str>, file: &Path) -> (String, String, String) {
    match given {
        Some(s) => {
            let (registry, rest) = s
                .split_once(':')
                .unwrap_or_else(|| fail(format!("--source {s:?}: give REGISTRY:PACKAGE@VERSION")));
            let (package, version) = rest.split_once('@').unwrap_or((rest, ""));
            (registry.into(), package.into(), version.into())
        }
        None => (
            "file".into(),
            file.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            String::new(),
        ),
    }
}

/// The manifest entry, in models/manifest.toml's format.
#[allow(clippy::too_many_arguments)]
fn entry(
    o: &Options,
    id: &str,
    artifact: &str,
    sha256: &str,
    quantization: &str,
    description: &str,
    system: &str,
    context: usize,
    sessions: usize,
) -> String {
    let (registry, package, version) = source(o.source.as_deref(), &o.file);
    format!(
        "[[model]]\n\
         # Added by scripts/add-model from {file}.\n\
         id = {id}\n\
         version = \"0.1.0\"\n\
         task = \"text-generation\"\n\
         description = {description}\n\
         license = {license}\n\
         source = {{ registry = {registry}, package = {package}, version = {version} }}\n\
         export = \"scripts/add-model\"\n\
         artifact = {artifact}\n\
         sha256 = \"{sha256}\"\n\
         quantization = {quantization}\n\
         labels = []\n\
         \n\
         [model.input]\n\
         kind = \"gguf-chat\"\n\
         context = {context}\n\
         default_system = {system}\n\
         \n\
         [model.input.template]\n\
         start = \"<|im_start|>\"\n\
         end = \"<|im_end|>\"\n\
         \n\
         [model.input.shards]\n\
         isolate_mib = 122\n\
         worker_mib = 64\n\
         code_kib = 256\n\
         runtime_mib = 6\n\
         sessions = {sessions}\n",
        file = o.file.display().to_string().replace(['\n', '\r'], " "),
        id = quoted(id),
        description = quoted(description),
        license = quoted(&o.license),
        registry = quoted(&registry),
        package = quoted(&package),
        version = quoted(&version),
        artifact = quoted(artifact),
        quantization = quoted(quantization),
        system = quoted(system),
    )
}

/// models/local.toml's text but the entry of `id`: the file cut at each
/// `[[model]]` line (an entry's tables follow it up to the next), the
/// entry whose `id` line is `id`'s dropped, the rest kept as written.
fn other_entries(text: &str, id: &str) -> String {
    let own = format!("id = {}", quoted(id));
    let mut blocks: Vec<String> = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim() == "[[model]]" {
            blocks.push(String::new());
        }
        if let Some(block) = blocks.last_mut() {
            block.push_str(line);
        }
    }
    let mut kept = String::new();
    for (i, block) in blocks.iter().enumerate() {
        if i > 0 && block.lines().any(|l| l.trim() == own) {
            continue;
        }
        kept.push_str(block);
        if !kept.is_empty() && !kept.ends_with('\n') {
            kept.push('\n');
        }
    }
    if !kept.is_empty() && !kept.ends_with("\n\n") {
        kept.push('\n');
    }
    kept
}

fn main() {
    let o = options();
    let bytes =
        std::fs::read(&o.file).unwrap_or_else(|e| fail(format!("read {}: {e}", o.file.display())));
    let gguf = Gguf::parse(&bytes).unwrap_or_else(|e| fail(format!("{}: {e}", o.file.display())));
    let architecture = gguf.architecture().unwrap_or_else(|e| fail(e));
    let config = gguf.config().unwrap_or_else(|e| fail(e));
    let name = gguf.string("general.name").ok();
    let id = o.id.clone().unwrap_or_else(|| {
        id_of(name.unwrap_or_else(|| {
            o.file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("model")
        }))
    });
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || id.starts_with('.')
    {
        fail(format!(
            "model id {id:?}: give one of ASCII letters, digits, '-', '_' and '.' (--id NAME)"
        ));
    }
    // The tokens the front's ChatML rendering needs (other templates are
    // not served yet).
    let vocabulary = Vocabulary::of(&gguf).unwrap_or_else(|e| fail(e));
    let template = gguf.string("tokenizer.chat_template").unwrap_or("");
    for token in ["<|im_start|>", "<|im_end|>"] {
        if !vocabulary.tokens.contains(&token) || !template.contains(token) {
            fail(format!(
                "the file's chat template is not ChatML (no {token}): only ChatML templates \
                 (SmolLM2, Qwen2 and their kin) are served for now"
            ));
        }
    }
    let system = o
        .system
        .clone()
        .or_else(|| check::chatml_default_system(template))
        .unwrap_or_default();
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut kinds: Vec<String> = gguf
        .tensor_kinds()
        .into_iter()
        .map(|(kind, count)| format!("{kind} x{count}"))
        .collect();
    kinds.sort();
    let quantization = format!(
        "the file's own blocks, read in place ({}), no second quantization",
        kinds.join(", ")
    );
    let description = o.description.clone().unwrap_or_else(|| {
        format!(
            "{} ({} architecture, {} layers, {} dims, vocabulary {}), added with scripts/add-model; \
             served by shard Workers.",
            name.unwrap_or(&id),
            architecture.name(),
            gguf.layers().unwrap_or_else(|e| fail(e)),
            config.dims,
            config.vocab
        )
    });

    // Into the models cache, where build.rs and scripts/build-shards read
    // it, named by its hash: adding another file under the same id never
    // changes the bytes an existing entry names.
    let artifact = format!("local/{id}-{}.gguf", &sha256[..16]);
    let cached = check::models_cache().join(&artifact);
    std::fs::create_dir_all(cached.parent().unwrap_or(Path::new(".")))
        .unwrap_or_else(|e| fail(format!("create the models cache: {e}")));
    // Already there: the same bytes (build.rs checks the whole sha256).
    if !cached.exists() && std::fs::hard_link(&o.file, &cached).is_err() {
        // A copy lands under a temporary name first: never half a file.
        let partial = cached.with_extension("gguf.partial");
        std::fs::copy(&o.file, &partial)
            .and_then(|_| std::fs::rename(&partial, &cached))
            .unwrap_or_else(|e| fail(format!("copy into {}: {e}", cached.display())));
    }

    let models = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("models"))
        .unwrap_or_else(|| PathBuf::from("models"));
    // The largest context and sessions that plan, from what was asked.
    let contexts: Vec<usize> = match o.context {
        Some(c) => vec![c],
        None => vec![1024, 512],
    };
    let sessions: Vec<usize> = match o.sessions {
        Some(s) => vec![s],
        None => vec![2, 1],
    };
    let mut last_error = None;
    for &context in &contexts {
        for &sessions in &sessions {
            let text = entry(
                &o,
                &id,
                &artifact,
                &sha256,
                &quantization,
                &description,
                &system,
                context,
                sessions,
            );
            let manifest = std::fs::read_to_string(models.join("manifest.toml"))
                .unwrap_or_else(|e| fail(format!("read models/manifest.toml: {e}")));
            let local =
                std::fs::read_to_string(models.join(check::LOCAL_MANIFEST)).unwrap_or_default();
            let local = format!("{}{text}", other_entries(&local, &id));
            let all =
                check::parse_manifest(&format!("{manifest}\n{local}")).unwrap_or_else(|e| fail(e));
            let Some(m) = all.model.iter().find(|m| m.id == id) else {
                fail("the entry did not parse back")
            };
            match check::check_model(&models, &all.model, m)
                .and_then(|_| check::shard_plan(m, &gguf))
            {
                Ok(plan) => {
                    std::fs::write(models.join(check::LOCAL_MANIFEST), &local)
                        .unwrap_or_else(|e| fail(format!("write models/local.toml: {e}")));
                    report(&id, &plan, context, sessions, &system);
                    return;
                }
                Err(e) => last_error = Some(e),
            }
        }
    }
    fail(last_error.map_or_else(|| "no plan".to_string(), |e| e.to_string()))
}

fn report(id: &str, plan: &check::plan::SplitPlan, context: usize, sessions: usize, system: &str) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "{id}: written to models/local.toml (context {context}, {sessions} session(s) per shard)"
    );
    if system.is_empty() {
        println!("  no default system message");
    } else {
        println!("  default system message: {system:?}");
    }
    println!(
        "  {} Workers a request reaches (the front's own included; at most {}):",
        plan.workers(),
        check::plan::MOST_WORKERS
    );
    for (i, s) in plan.vocab.iter().enumerate() {
        let (binding, script) = check::slice_names(id, i);
        println!(
            "    {script:<40} {binding:<32} vocabulary rows {}..{}: {:.1} MiB weights, {:.1} MiB planned memory",
            s.rows.start,
            s.rows.end,
            mib(s.weights),
            mib(s.memory)
        );
    }
    for (i, s) in plan.layers.iter().enumerate() {
        let (binding, script) = check::shard_names(id, i);
        println!(
            "    {script:<40} {binding:<32} layers {}..{}{}{}: {:.1} MiB weights, {:.1} MiB planned memory",
            s.layers.start,
            s.layers.end,
            if s.embedding { " + embedding" } else { "" },
            if s.head { " + head" } else { "" },
            mib(s.weights),
            mib(s.memory)
        );
    }
    println!(
        "next: scripts/dev serves it (model \"{id}\"); scripts/deploy --dry-run sizes every Worker"
    );
}
