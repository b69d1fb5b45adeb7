//! What Workers Logs get: [`LogLine`], written to the console as JSON,
//! to stderr when the request failed on our side.

use worker::{console_error, console_log, Response, Result};

use crate::api::Served;

/// One JSON line per request, for Workers Logs (`[observability]` in
/// wrangler.toml): what was asked, who answered, how long it took. A
/// session turn's object writes a line of its own when the reply is done,
/// with the tokens it took.
pub(crate) struct LogLine {
    /// Method and route, for a request's line; the session, for a turn's.
    what: What,
    started: f64,
    cache: &'static str,
    cache_error: Option<String>,
}

enum What {
    Request {
        method: String,
        path: String,
        /// `cold` for an isolate's first request, else `warm`.
        isolate: &'static str,
    },
    Turn {
        session: String,
    },
}

impl LogLine {
    pub(crate) fn request(method: &str, path: &str, started: f64, isolate: &'static str) -> Self {
        LogLine {
            what: What::Request {
                method: method.to_string(),
                path: path.to_string(),
                isolate,
            },
            started,
            cache: "off",
            cache_error: None,
        }
    }

    /// The line of a session's turn, written by its object.
    pub(crate) fn turn(session: &str) -> Self {
        LogLine {
            what: What::Turn {
                session: session.to_string(),
            },
            started: super::clock(),
            cache: "off",
            cache_error: None,
        }
    }

    /// What the cache did for the request: `hit` or `miss` (else `off`).
    pub(crate) fn cache(&mut self, outcome: &'static str) {
        self.cache = outcome;
    }

    /// The cache could not be read (the request was answered anyway).
    pub(crate) fn cache_failed(&mut self, error: String) {
        self.cache_error = Some(error);
    }

    pub(crate) fn write(&self, status: u16, served: Option<&Served>, error: Option<&str>) {
        self.emit(self.fields(status, served, error), status);
    }

    fn fields(
        &self,
        status: u16,
        served: Option<&Served>,
        error: Option<&str>,
    ) -> serde_json::Value {
        let mut line = serde_json::json!({
            "status": status,
            "ms": super::clock() - self.started,
            "model": served.map(|s| &s.model),
            "variant": served.and_then(|s| s.arm).map(|a| a.as_str()),
            "tokens": served.and_then(|s| s.tokens),
            "cpu_ms": served.and_then(|s| s.cpu_ms),
            "model_loaded": served.map(|s| s.loaded),
            "error": error,
        });
        match &self.what {
            What::Request {
                method,
                path,
                isolate,
            } => {
                line["method"] = method.as_str().into();
                line["route"] = path.as_str().into();
                line["isolate"] = (*isolate).into();
                line["cache"] = self.cache.into();
                line["cache_error"] = self.cache_error.clone().into();
            }
            What::Turn { session } => line["session"] = session.as_str().into(),
        }
        line
    }

    fn emit(&self, line: serde_json::Value, status: u16) {
        if status >= 500 || self.cache_error.is_some() {
            console_error!("{line}");
        } else {
            console_log!("{line}");
        }
    }

    /// The line of a request a session's object answered: the model is in
    /// its headers (the object's own line has the tokens and the load).
    pub(crate) fn write_forwarded(&self, res: &Response) -> Result<()> {
        let served = match res.headers().get("x-edgeinfer-model")? {
            Some(model) => crate::registry::find(&model)
                .ok()
                .map(|spec| Served::new(spec, false)),
            None => None,
        };
        let status = res.status_code();
        let mut line = self.fields(status, served.as_ref(), None);
        line["model_loaded"] = serde_json::Value::Null;
        self.emit(line, status);
        Ok(())
    }
}
