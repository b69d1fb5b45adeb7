//! The commands: settings checked once up front, then windows of lines read,
//! processed and written in order.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use edgeinfer::api::limits::MAX_INPUTS;
use edgeinfer::api::{self, HttpRequest, ModelList};
use serde_json::{json, Value};

use crate::args::{BatchArgs, ChatArgs, ClassifyArgs, Cli, Command, EmbedArgs, ModelsArgs};
use crate::engine;
use crate::input::{self, Defaults, Job, Source};
use crate::progress::Progress;
use crate::route::ApiRoute;
use crate::session;

/// Why the tool stops before or during a batch (bad lines never do).
enum Failure {
    /// Arguments that cannot work: exit 2, as clap does for its own.
    Usage(String),
    /// A file that cannot be read or written: exit 1.
    Io(String),
}

pub fn main(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Classify(a) => classify(a),
        Command::Embed(a) => embed(a),
        Command::Chat(a) => chat(a),
        Command::Models(a) => models(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("edgeinfer: error: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Io(message)) => {
            eprintln!("edgeinfer: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn io_error<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> Failure + 'a {
    move |e| Failure::Io(format!("{what} {}: {e}", path.display()))
}

/// Checks the command line's settings with a one-line probe request through
/// `api::validate`, so a bad `--model` or `--temperature` stops the run with
/// the API's own message instead of failing every line. Also loads the
/// model, whose time is then reported apart from the rate.
fn probe(route: ApiRoute, defaults: &Defaults) -> Result<Duration, Failure> {
    let mut body = defaults.fields.clone();
    match route {
        ApiRoute::Classify | ApiRoute::Embed => body.insert("input".into(), json!("probe")),
        ApiRoute::Chat => body.insert(
            "messages".into(),
            json!([{"role": "user", "content": "probe"}]),
        ),
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let req = HttpRequest::post_json(route.path(), &bytes);
    let start = Instant::now();
    api::validate(&req).map_err(|e| {
        let flag = e
            .param
            .as_deref()
            .map_or(String::new(), |p| format!(" (--{})", p.replace('_', "-")));
        // The API's advice names its HTTP route; here the command is the way.
        let message = match e.code {
            "model_not_found" => format!(
                "{}; `edgeinfer models` lists the models",
                e.message.split(';').next().unwrap_or_default()
            ),
            _ => e.message,
        };
        Failure::Usage(format!("{message}{flag}"))
    })?;
    Ok(start.elapsed())
}

fn classify(a: ClassifyArgs) -> Result<(), Failure> {
    let mut defaults = Defaults::default();
    defaults.fields.insert("model".into(), json!(a.model));
    if let Some(k) = a.top_k {
        defaults.fields.insert("top_k".into(), json!(k));
    }
    run_batch_command(ApiRoute::Classify, defaults, &a.batch, a.texts)
}

fn embed(a: EmbedArgs) -> Result<(), Failure> {
    let mut defaults = Defaults::default();
    defaults.fields.insert("model".into(), json!(a.model));
    run_batch_command(ApiRoute::Embed, defaults, &a.batch, a.texts)
}

fn chat(a: ChatArgs) -> Result<(), Failure> {
    let mut defaults = Defaults {
        system: a.system,
        ..Defaults::default()
    };
    defaults.fields.insert("model".into(), json!(a.model));
    for (k, v) in [
        ("max_tokens", a.max_tokens.map(Value::from)),
        ("temperature", a.temperature.map(Value::from)),
        ("seed", a.seed.map(Value::from)),
    ] {
        if let Some(v) = v {
            defaults.fields.insert(k.into(), v);
        }
    }
    let Some(message) = a.message else {
        return run_batch_command(ApiRoute::Chat, defaults, &a.batch, Vec::new());
    };
    if let Some(path) = &a.session {
        return session_turn(path, &defaults, &message, a.batch.output.as_deref());
    }
    // One message: the reply as text, for a person at a terminal.
    probe(ApiRoute::Chat, &defaults)?;
    let job = input::from_argument(ApiRoute::Chat, 1, message, &defaults);
    let outcome = engine::process(ApiRoute::Chat, std::slice::from_ref(&job), 1, &|_, _| {})
        .pop()
        .expect("one outcome per job");
    match outcome {
        Ok(result) => {
            let content = result.get("content").and_then(Value::as_str).unwrap_or("");
            let mut out = open_output(a.batch.output.as_deref())?;
            writeln!(out, "{content}")
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Io(format!("writing the reply: {e}")))
        }
        Err((_, error)) => Err(Failure::Usage(
            error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("the request failed")
                .to_string(),
        )),
    }
}

/// One turn of the conversation in `path`, its reply printed as text.
fn session_turn(
    path: &Path,
    defaults: &Defaults,
    message: &str,
    output: Option<&Path>,
) -> Result<(), Failure> {
    let mut new_session = serde_json::Map::new();
    let mut fields = defaults.fields.clone();
    if let Some(model) = fields.remove("model") {
        new_session.insert("model".into(), model);
    }
    if let Some(system) = &defaults.system {
        new_session.insert("system".into(), json!(system));
    }
    let reply = session::take_turn(path, &new_session, message, &fields).map_err(|e| match e {
        session::TurnError::Refused(status, message) if status < 500 => Failure::Usage(message),
        session::TurnError::Refused(_, message) | session::TurnError::File(message) => {
            Failure::Io(message)
        }
    })?;
    let mut out = open_output(output)?;
    writeln!(out, "{reply}")
        .and_then(|()| out.flush())
        .map_err(|e| Failure::Io(format!("writing the reply: {e}")))
}

fn models(a: ModelsArgs) -> Result<(), Failure> {
    let res = engine::call("GET", "/v1/models", b"");
    let mut out = io::stdout().lock();
    let written = if a.json {
        out.write_all(&res.body).and_then(|()| writeln!(out))
    } else {
        let list: ModelList = serde_json::from_slice(&res.body)
            .map_err(|e| Failure::Io(format!("reading the model list: {e}")))?;
        let mut text = format!(
            "{:<20} {:<10} {:<24} {:>7}  {}\n",
            "MODEL", "VERSION", "TASK", "LABELS", "COMMAND"
        );
        for m in &list.data {
            let command = match m.task.as_str() {
                "sentence-embedding" => "embed",
                "text-generation" => "chat",
                _ => "classify",
            };
            text.push_str(&format!(
                "{:<20} {:<10} {:<24} {:>7}  {}\n",
                m.id,
                m.version,
                m.task,
                m.labels.len(),
                command
            ));
        }
        out.write_all(text.as_bytes())
    };
    written.map_err(|e| Failure::Io(format!("writing to stdout: {e}")))
}

fn open_output(path: Option<&Path>) -> Result<Box<dyn Write>, Failure> {
    Ok(match path {
        None => Box::new(BufWriter::new(io::stdout())),
        Some(p) if p.as_os_str() == "-" => Box::new(BufWriter::new(io::stdout())),
        Some(p) => Box::new(BufWriter::new(
            File::create(p).map_err(io_error("cannot create", p))?,
        )),
    })
}

/// classify, embed and chat over TEXT arguments or a JSONL file.
fn run_batch_command(
    route: ApiRoute,
    defaults: Defaults,
    batch: &BatchArgs,
    texts: Vec<String>,
) -> Result<(), Failure> {
    let what = if route == ApiRoute::Chat {
        "MESSAGE"
    } else {
        "TEXT arguments"
    };
    if texts.is_empty() && batch.input.is_none() {
        return Err(Failure::Usage(format!(
            "nothing to {}: give {what} or --input FILE.jsonl (- for stdin); see `edgeinfer {} --help`",
            route.name(),
            route.name()
        )));
    }
    let load = probe(route, &defaults)?;
    let threads = batch
        .jobs
        .map(usize::from)
        .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
        .unwrap_or(1);
    let mut source = match &batch.input {
        Some(path) => Some(Source::open(path).map_err(io_error("cannot read", path))?),
        None => None,
    };
    if let (Some(i), Some(o)) = (&batch.input, &batch.output) {
        // Creating the output would empty the input before it is read.
        if std::fs::canonicalize(i).ok() == std::fs::canonicalize(o).ok() && i.as_os_str() != "-" {
            return Err(Failure::Usage(format!(
                "--output {} is the input file; write the results elsewhere",
                o.display()
            )));
        }
    }
    let mut out = open_output(batch.output.as_deref())?;
    let write_error = |e: io::Error| Failure::Io(format!("writing the output: {e}"));

    if source.is_none() {
        // TEXT arguments: no progress (there is no file to wait for).
        let jobs: Vec<Job> = texts
            .into_iter()
            .enumerate()
            .map(|(i, t)| input::from_argument(route, i + 1, t, &defaults))
            .collect();
        let outcomes = engine::process(route, &jobs, threads, &|_, _| {});
        let mut failed = 0;
        for (job, outcome) in jobs.iter().zip(&outcomes) {
            failed += usize::from(outcome.is_err());
            writeln!(out, "{}", engine::output_line(job, outcome)).map_err(write_error)?;
        }
        out.flush().map_err(write_error)?;
        if failed > 0 {
            eprintln!(
                "{}: {failed} of {} inputs failed (see their `error`)",
                route.name(),
                jobs.len()
            );
        }
        return Ok(());
    }

    let source = source.as_mut().expect("checked above");
    // Started after the probe loaded the model: the rate is the model's.
    let progress = Mutex::new(Progress::new(route.name(), source.total, batch.quiet));
    let tick = |done: usize, failed: usize| {
        progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(done, failed);
    };
    // Lines are read, run and written a window at a time. For the batch
    // routes a window is a fixed number of lines, whatever `--jobs` says, so
    // the requests (and so the bytes out) depend on the input alone; it
    // holds enough full requests to keep several threads busy.
    let window_jobs = match route {
        ApiRoute::Chat => 4 * threads,
        ApiRoute::Classify | ApiRoute::Embed => 32 * MAX_INPUTS,
    };
    let mut line = 0;
    let mut at_end = false;
    while !at_end {
        let mut window = Vec::with_capacity(window_jobs);
        let mut bytes = 0;
        while window.len() < window_jobs && bytes < 16 << 20 {
            match source
                .next_line()
                .map_err(|e| Failure::Io(format!("reading the input: {e}")))?
            {
                Some(raw) => {
                    line += 1;
                    bytes += raw.len();
                    window.push(input::parse_line(route, line, raw, &defaults));
                }
                None => {
                    at_end = true;
                    break;
                }
            }
        }
        let outcomes = engine::process(route, &window, threads, &tick);
        let mut text = String::new();
        for (job, outcome) in window.iter().zip(&outcomes) {
            text.push_str(&engine::output_line(job, outcome));
            text.push('\n');
        }
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(write_error)?;
    }
    progress
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .finish(load);
    Ok(())
}
