//! `edgeinfer`: the worker's embedded models on the command line, for batch
//! jobs and as the proof that the core needs no Workers runtime.
//!
//! Every input goes through [`edgeinfer::api::handle`], the function the
//! worker serves HTTP with, rather than through the models directly: the
//! parsing, limits, error messages and numbers are then the API's own by
//! construction, not a second implementation that could drift from it. What
//! this tool adds is only what a batch needs: grouping lines into the
//! largest requests the API accepts, splitting a refused batch to find the
//! lines at fault, keeping output in input order, and progress.

#[cfg(not(target_arch = "wasm32"))]
mod args;
#[cfg(not(target_arch = "wasm32"))]
mod engine;
#[cfg(not(target_arch = "wasm32"))]
mod input;
#[cfg(not(target_arch = "wasm32"))]
mod progress;
#[cfg(not(target_arch = "wasm32"))]
mod route;
#[cfg(not(target_arch = "wasm32"))]
mod run;
#[cfg(not(target_arch = "wasm32"))]
mod session;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    use clap::Parser as _;
    run::main(args::Cli::parse())
}

/// A wasm32 build of every target (`cargo check --target wasm32-unknown-unknown
/// --all-targets`) still needs a `main`; the tool itself has no meaning there.
#[cfg(target_arch = "wasm32")]
fn main() {}
