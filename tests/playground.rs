//! The playground page at `/` (src/playground/index.html): served as one
//! self-contained HTML document, and working in a real browser against the
//! worker in workerd (tests/browser/playground.mjs: Debian's chromium driven
//! by playwright-core; the screenshot lands in target/playground.png).

mod support;

use std::path::PathBuf;
use std::process::Command;

use libtest_mimic::{Failed, Trial};
use support::{ensure, Bindings, Client};

/// The page's budget: one small document, no build step.
const MAX_PAGE_BYTES: usize = 32 * 1024;

/// `GET /` is HTML that loads nothing from another origin: no absolute URL,
/// no external script, stylesheet, image or import.
fn page_is_self_contained(c: &Client) -> Result<(), Failed> {
    let res = c.get("/");
    ensure(res.status == 200, || {
        format!("GET / answered {}", res.status)
    })?;
    let content_type = res.header("content-type").unwrap_or_default();
    ensure(content_type.starts_with("text/html"), || {
        format!("GET / has content-type {content_type:?}")
    })?;
    let html = String::from_utf8(res.body.clone())?;
    ensure(html.starts_with("<!doctype html>"), || {
        "the page does not start with <!doctype html>".into()
    })?;
    ensure(html.len() <= MAX_PAGE_BYTES, || {
        format!(
            "the page is {} bytes; keep it under {MAX_PAGE_BYTES}",
            html.len()
        )
    })?;
    let lower = html.to_ascii_lowercase();
    let context = |at: usize| {
        let bytes = html.as_bytes();
        String::from_utf8_lossy(&bytes[at.saturating_sub(60)..(at + 80).min(bytes.len())])
            .into_owned()
    };
    // Absolute and protocol-relative URLs, and what loads or embeds other documents.
    for needle in [
        "://", "\"//", "'//", "`//", "(//", "@import", "<iframe", "<base", "<object", "<embed",
    ] {
        if let Some(at) = lower.find(needle) {
            return Err(format!(
                "the page contains {needle:?}, which may reach another origin: …{}…",
                context(at)
            )
            .into());
        }
    }
    // Every URL-valued attribute and CSS url() is inline (data:) or a fragment.
    for attr in ["src=", "href=", "action=", "srcset=", "poster=", "url("] {
        for (at, _) in lower.match_indices(attr) {
            let value = lower[at + attr.len()..].trim_start_matches(['"', '\'', ' ']);
            ensure(value.starts_with("data:") || value.starts_with('#'), || {
                format!("the page loads a resource ({attr}): …{}…", context(at))
            })?;
        }
    }
    // The routes it uses are the public ones.
    for route in [
        "/v1/models",
        "/v1/classify",
        "/v1/similarity",
        "/v1/sessions",
    ] {
        ensure(html.contains(route), || {
            format!("the page never calls {route}")
        })?;
    }
    Ok(())
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// The whole page in chromium: models, classify, similarity, a streamed chat
/// reply, the conversation restored after a reload.
fn browser(base: &str) -> Result<(), Failed> {
    let browser = chromium();
    ensure(browser.exists(), || {
        format!(
            "no browser at {}: install Debian's chromium (apt-get install chromium; .ci/run does) or set CHROMIUM",
            browser.display()
        )
    })?;
    let root = support::root();
    let screenshot = root.join("target/playground.png");
    let _ = std::fs::remove_file(&screenshot);
    let out = Command::new("node")
        .arg(root.join("tests/browser/playground.mjs"))
        .arg(base)
        .arg(&screenshot)
        .env("CHROMIUM", &browser)
        .current_dir(&root)
        .output()
        .map_err(|e| format!("run node (is Node.js installed?): {e}"))?;
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure(out.status.success(), || {
        format!(
            "tests/browser/playground.mjs failed ({}); screenshot, if any: {}\n{output}",
            out.status,
            screenshot.display()
        )
    })?;
    ensure(screenshot.exists(), || {
        format!("no screenshot at {}:\n{output}", screenshot.display())
    })?;
    print!("\n{output}");
    Ok(())
}

fn main() {
    support::run_checks(
        &Bindings::default(),
        vec![("page_is_self_contained_html", page_is_self_contained)],
        |base| {
            let base = base.to_string();
            vec![Trial::test("browser_playground", move || browser(&base))]
        },
    )
}
