//! The command line. Flags are defaults for every input; a JSONL line's own
//! fields (`model`, `top_k`, `max_tokens`, ...) override them, so one file
//! can mix models and settings.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "edgeinfer",
    version,
    about = "Run edgeinfer's embedded models locally: the same answers as the worker's HTTP API",
    after_help = "Batch mode: --input FILE.jsonl (or - for stdin), one JSON value per line; \
                  one JSON line out per line in, in order, with its `id` (or line number) \
                  and the result, or an `error` object."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Label texts: language (lande), sentiment, profanity.
    ///
    /// Input lines: "text" or {"input": "text", "model"?, "top_k"?, "id"?}.
    Classify(ClassifyArgs),
    /// Sentence embeddings (384 floats, unit length).
    ///
    /// Input lines: "text" or {"input": "text", "model"?, "encoding_format"?, "id"?}.
    Embed(EmbedArgs),
    /// A chat reply from the Shakespeare model.
    ///
    /// With MESSAGE, prints the reply; with --session FILE too, the reply
    /// continues the conversation kept in FILE, and this turn is added to it. Input lines: "message" or
    /// {"messages": [{"role", "content"}, ...], "max_tokens"?, "temperature"?, "seed"?, "id"?, ...}.
    Chat(ChatArgs),
    /// List the embedded models.
    Models(ModelsArgs),
}

/// Where inputs come from and results go, shared by the model commands.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// A JSONL file of inputs, or - for stdin.
    #[arg(long, short, value_name = "FILE.jsonl")]
    pub input: Option<PathBuf>,
    /// Where the JSONL results go (default: stdout).
    #[arg(long, short, value_name = "FILE.jsonl")]
    pub output: Option<PathBuf>,
    /// No progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Requests run at once (default: the number of CPUs).
    #[arg(long, short, value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
}

#[derive(Debug, Args)]
pub struct ClassifyArgs {
    /// Model id or id@version (`edgeinfer models` lists them).
    #[arg(long, short, default_value = "lande")]
    pub model: String,
    /// Labels per input, best first (default 3).
    #[arg(long, value_name = "K")]
    pub top_k: Option<u64>,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Texts to classify, one result line each (instead of --input).
    #[arg(value_name = "TEXT", conflicts_with = "input")]
    pub texts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Model id or id@version (`edgeinfer models` lists them).
    #[arg(long, short, default_value = "all-minilm-l6-v2")]
    pub model: String,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// Texts to embed, one result line each (instead of --input).
    #[arg(value_name = "TEXT", conflicts_with = "input")]
    pub texts: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Model id or id@version (`edgeinfer models` lists them).
    #[arg(long, short, default_value = "shakespeare-llama")]
    pub model: String,
    /// Most tokens in a reply (1 to 224; default 128).
    #[arg(long, value_name = "N")]
    pub max_tokens: Option<u64>,
    /// 0 is greedy; 0 to 2 (default 0.8).
    #[arg(long, value_name = "T")]
    pub temperature: Option<f64>,
    /// Makes sampling reproducible; without it each reply draws a random
    /// seed, as the worker does.
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub seed: Option<i64>,
    /// A system message before the user's (for MESSAGE and plain-string
    /// lines; with --session, the new session's system prompt).
    #[arg(long, value_name = "TEXT")]
    pub system: Option<String>,
    /// Keep the conversation in FILE (JSON, created if missing): the reply
    /// sees every earlier turn there, as a `POST /v1/sessions/{id}/messages`
    /// does. A new file takes --model and --system; an existing one keeps
    /// its own.
    #[arg(
        long,
        value_name = "FILE",
        requires = "message",
        conflicts_with = "input"
    )]
    pub session: Option<PathBuf>,
    #[command(flatten)]
    pub batch: BatchArgs,
    /// The user's message; the reply is printed as text (instead of --input).
    #[arg(value_name = "MESSAGE", conflicts_with = "input")]
    pub message: Option<String>,
}

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print the API's `GET /v1/models` JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}
