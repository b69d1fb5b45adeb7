//! The OpenAPI document (src/api/openapi.json) against the built worker in
//! workerd: served as is, valid OpenAPI 3.1, the same paths and methods as
//! the router, and schemathesis' property-based run finding no response the
//! document does not describe. A route, field, limit or status changed in
//! the code but not in the document fails here.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use edgeinfer::api::Route;
use libtest_mimic::Failed;
use serde_json::{json, Value};
use support::{ensure, Bindings, Check, Client, Reply, TempDir};

/// Methods a client may send; the ones a path does not serve must get 405.
/// QUERY stands for the methods the worker crate does not know: it reads
/// them as GET, and the glue once served them as GET.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "QUERY",
];

/// The path template the document uses for `route`. An exhaustive match: a
/// new `Route` variant does not compile until it is added here, and then
/// `router_routes_are_documented` fails until the document has it too.
fn template(route: Route<'_>) -> &'static str {
    match route {
        Route::Playground => "/",
        Route::OpenApi => "/openapi.json",
        Route::Health => "/healthz",
        Route::Models => "/v1/models",
        Route::Model(_) => "/v1/models/{model}",
        Route::Classify => "/v1/classify",
        Route::Embeddings => "/v1/embeddings",
        Route::Similarity => "/v1/similarity",
        Route::ChatCompletions => "/v1/chat/completions",
        Route::Sessions => "/v1/sessions",
        Route::Session(_) => "/v1/sessions/{id}",
        Route::SessionMessages(_) => "/v1/sessions/{id}/messages",
        Route::Responses => "/v1/responses",
        Route::Response(_) => "/v1/responses/{id}",
    }
}

/// One concrete path per route, for [`template`] and the probes.
const ROUTE_PATHS: [&str; 14] = [
    "/",
    "/openapi.json",
    "/healthz",
    "/v1/models",
    "/v1/models/lande",
    "/v1/classify",
    "/v1/embeddings",
    "/v1/similarity",
    "/v1/chat/completions",
    "/v1/sessions",
    "/v1/sessions/{id}",
    "/v1/sessions/{id}/messages",
    "/v1/responses",
    "/v1/responses/{id}",
];

fn spec_path() -> PathBuf {
    support::root().join("src/api/openapi.json")
}

fn spec() -> Result<Value, Failed> {
    Ok(serde_json::from_slice(&std::fs::read(spec_path())?)?)
}

/// The document's operations: path template -> upper-case methods.
fn documented(spec: &Value) -> Result<BTreeMap<String, BTreeSet<String>>, Failed> {
    let paths = spec["paths"].as_object().ok_or("no `paths` object")?;
    Ok(paths
        .iter()
        .map(|(path, item)| {
            let methods = item
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .map(|k| k.to_ascii_uppercase())
                .filter(|m| METHODS.contains(&m.as_str()))
                .collect();
            (path.clone(), methods)
        })
        .collect())
}

fn served_as_is(c: &Client) -> Result<(), Failed> {
    let res = c.get("/openapi.json");
    ensure(res.status == 200, || format!("status {}", res.status))?;
    ensure(
        res.header("content-type") == Some("application/json"),
        || format!("content-type {:?}", res.header("content-type")),
    )?;
    let file = std::fs::read(spec_path())?;
    ensure(res.body == file, || {
        "GET /openapi.json differs from src/api/openapi.json (a stale build?)".into()
    })
}

/// The Python of the venv scripts/setup makes (openai, schemathesis,
/// openapi-spec-validator, all pinned).
fn python() -> Result<PathBuf, Failed> {
    support::client_python().ok_or_else(|| "the test venv is missing: run scripts/setup".into())
}

fn valid_openapi_3_1(_: &Client) -> Result<(), Failed> {
    let spec = spec()?;
    ensure(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        || format!("`openapi` is {}, not 3.1.x", spec["openapi"]),
    )?;
    // The 3.1 validator by name: a 3.0 document read as 3.1 would pass
    // checks it should not.
    let script = "import json, sys\n\
        from openapi_spec_validator import validate, OpenAPIV31SpecValidator\n\
        validate(json.load(open(sys.argv[1])), cls=OpenAPIV31SpecValidator)\n";
    let out = Command::new(python()?)
        .args(["-c", script])
        .arg(spec_path())
        .output()?;
    ensure(out.status.success(), || {
        format!(
            "openapi-spec-validator refused src/api/openapi.json:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Natively: every `Route` has its template in the document, with exactly
/// the methods `Route::allow` lists, and the document has no other path.
fn router_routes_are_documented(_: &Client) -> Result<(), Failed> {
    let documented = documented(&spec()?)?;
    let mut templates = BTreeSet::new();
    for path in ROUTE_PATHS {
        let concrete = path.replace("{id}", &"0".repeat(32));
        let route = Route::parse(&concrete).ok_or_else(|| format!("{path}: no route"))?;
        let template = template(route);
        templates.insert(template.to_string());
        let allow: BTreeSet<String> = route.allow().split(", ").map(str::to_string).collect();
        let methods = documented
            .get(template)
            .ok_or_else(|| format!("{template} (Route::{route:?}) is not in the document"))?;
        ensure(*methods == allow, || {
            format!("{template}: the document has {methods:?}, the router allows {allow:?}")
        })?;
    }
    let extra: Vec<&String> = documented
        .keys()
        .filter(|p| !templates.contains(*p))
        .collect();
    ensure(extra.is_empty(), || {
        format!("documented paths no route serves: {extra:?}")
    })
}

/// Over HTTP: each documented method reaches its route (no 405, no
/// `route_not_found`), every other method gets 405 with the documented ones
/// in `Allow`. Sessions and responses paths use a real one, deleted last.
/// The `id` of what `res` created (`what`), answered with `status`.
fn created_id(res: &Reply, status: u16, what: &str) -> Result<String, Failed> {
    ensure(res.status == status, || {
        format!("create {what}: {}", res.status)
    })?;
    Ok(res.json()["id"]
        .as_str()
        .ok_or_else(|| format!("{what} without id"))?
        .to_string())
}

fn methods_match_over_http(c: &Client) -> Result<(), Failed> {
    let documented = documented(&spec()?)?;
    let created = c.post_json("/v1/sessions", &json!({}));
    let id = created_id(&created, 201, "a session")?;
    // A stored response for the response paths (a short, stored reply).
    let response = c.post_json(
        "/v1/responses",
        &json!({"model": "shakespeare-llama", "input": "Hail.", "max_output_tokens": 2}),
    );
    let response_id = created_id(&response, 200, "a response")?;
    // DELETE last, so the session exists for every other probe.
    let mut order: Vec<(&String, &BTreeSet<String>)> = documented.iter().collect();
    order.sort_by_key(|(_, m)| m.contains("DELETE"));
    for (template, methods) in order {
        let path = match template.strip_prefix("/v1/responses/") {
            Some(rest) => format!("/v1/responses/{}", rest.replace("{id}", &response_id)),
            None => template.replace("{model}", "lande").replace("{id}", &id),
        };
        let mut listed: Vec<&str> = methods.iter().map(String::as_str).collect();
        listed.sort_by_key(|m| *m == "DELETE");
        for method in listed {
            let body: &[u8] = if method == "POST" { b"{}" } else { b"" };
            let res = c.send(method, &path, Some("application/json"), body);
            let code = (res.status == 404).then(|| res.json()["error"]["code"].clone());
            ensure(
                res.status != 405 && code != Some(json!("route_not_found")),
                || {
                    format!(
                        "{method} {path} is documented but got {}: {}",
                        res.status,
                        String::from_utf8_lossy(&res.body)
                    )
                },
            )?;
        }
        for method in METHODS.iter().filter(|m| !methods.contains(**m)) {
            if *method == "QUERY" {
                // ureq sends no method it does not know: a raw request.
                let status = c.raw_status(&format!("QUERY {path} HTTP/1.1"), Vec::new());
                ensure(status == 405, || {
                    format!("QUERY {path} is not documented: want 405, got {status}")
                })?;
                continue;
            }
            let res = c.send(method, &path, Some("application/json"), b"");
            let allow: BTreeSet<String> = res
                .header("allow")
                .unwrap_or_default()
                .split(", ")
                .map(str::to_string)
                .collect();
            ensure(res.status == 405 && allow == *methods, || {
                format!(
                    "{method} {path} is not documented: want 405 with Allow {methods:?}, got {} with Allow {:?}",
                    res.status,
                    res.header("allow")
                )
            })?;
        }
    }
    Ok(())
}

/// schemathesis against the worker, with the document the worker serves:
/// examples, coverage (boundaries and negated constraints), fuzzing and
/// stateful sequences through the sessions' links. Bounded and deterministic,
/// so a run is reproducible and takes a few minutes at most.
fn schemathesis(c: &Client) -> Result<(), Failed> {
    let scratch = TempDir::new("schemathesis");
    let config = support::root().join("tests/schemathesis.toml");
    let out = Command::new(python()?)
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", c.base()))
        .args(["--url", c.base()])
        .args(["--checks", "all"])
        // Whether a schema-valid request is accepted depends on more than
        // its JSON: on the model named (its task; `top_k` up to its label
        // count; `dimensions` equal to its size), on token counts (8,192 per
        // request, the chat context shared with `max_tokens`), on the order
        // of messages (the last one the user's, not empty) and on the
        // session's fill. JSON Schema cannot say these, so valid-looking
        // requests get their documented 413 or 422. Its `integer` also
        // admits `38.0`, which the API's integer fields refuse (422).
        // A CORS preflight (OPTIONS) is answered 204 for any path a route
        // serves, before any lookup: it tells a browser what it may send,
        // not that the resource exists, so it is the same after a DELETE;
        // the stateful phase's use-after-free check follows links to it. A
        // read or a turn after a delete being a 404 is tested by
        // tests/sessions.rs, tests/chat.rs and tests/structured.rs.
        .args([
            "--exclude-checks",
            "positive_data_acceptance,use_after_free",
        ])
        // The same cases every run: a finding is reproducible, CI stable.
        .args(["--max-examples", "25", "--generation-deterministic"])
        .args(["--request-timeout", "60", "--no-color"])
        // Field names with `token` in them are no secrets here.
        .args(["--output-sanitize", "false"])
        // Any file it writes stays out of the work tree.
        .current_dir(&scratch.0)
        .output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("EDGEINFER_SCHEMATHESIS_LOG").is_some() {
        println!("{report}");
    }
    ensure(out.status.success(), || {
        format!("schemathesis found problems:\n{report}")
    })
}

fn checks() -> Vec<(&'static str, Check)> {
    vec![
        ("served_as_is", served_as_is),
        ("valid_openapi_3_1", valid_openapi_3_1),
        ("router_routes_are_documented", router_routes_are_documented),
        ("methods_match_over_http", methods_match_over_http),
        ("schemathesis", schemathesis),
    ]
}

fn main() {
    // Sessions that name no model get the small in-isolate one: the
    // stateful phase fills sessions to their limits, and the default model
    // re-prefills a session's whole history through its shard isolates
    // every turn (seconds per turn at hundreds of tokens; tests/sharded.rs
    // checks its sessions, scripts/bench its speed). One check at a time:
    // schemathesis alone on the worker keeps its run's timing (and so its
    // examples' deadlines) steady.
    let bindings = Bindings {
        vars: vec![("DEFAULT_CHAT_MODEL".into(), "shakespeare-llama".into())],
        ..Bindings::default()
    };
    support::run_checks(&bindings, checks(), |_| Vec::new())
}
