//! A model's own chat template, the Jinja text a GGUF file carries as
//! `tokenizer.chat_template`, rendered as transformers' `apply_chat_template`
//! renders it: the reference every model card's prompt format is written
//! against, and what llama.cpp's server imitates too.
//!
//! transformers runs Jinja2 with `trim_blocks` and `lstrip_blocks`, loop
//! controls, a `tojson` that is Python's `json.dumps(ensure_ascii=False)`,
//! and the globals `raise_exception` and `strftime_now`; templates also call
//! Python's own string and dict methods (`.strip()`, `.items()`). minijinja
//! does the Jinja, its `pycompat` the methods; this module adds the rest
//! with Python's output exactly (minijinja's own `tojson` writes compact,
//! HTML-escaped JSON, which would change every prompt with tools in it).
//!
//! Rendering makes text, not tokens: how that text is cut into ids, and
//! what a caller may not smuggle into it (a control token typed in a
//! message), is the caller's concern.

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

/// Why a template cannot be used or cannot render these messages: its
/// syntax (at load), or its own `raise_exception` (at render, e.g. "roles
/// must alternate"), said as the template says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chat template: {0}")]
pub struct JinjaError(String);

impl From<Error> for JinjaError {
    fn from(e: Error) -> Self {
        // A template's raise_exception message alone; other errors with
        // minijinja's description of where.
        match e.kind() {
            ErrorKind::InvalidOperation => {
                JinjaError(e.detail().unwrap_or("invalid operation").to_string())
            }
            _ => JinjaError(e.to_string()),
        }
    }
}

/// A compiled chat template and the special tokens it may print.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

const NAME: &str = "chat_template";

impl ChatTemplate {
    /// Compiles `source`; `bos_token` and `eos_token` are the strings of the
    /// model's BOS and EOS tokens, which templates print as `{{ bos_token }}`.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, JinjaError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(NAME, source.to_string())?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
        })
    }

    /// The prompt text for `messages` (a list of objects, OpenAI's shape:
    /// `role`, `content`, `tool_calls`, ...), with `tools` (a list of
    /// function definitions) where the template has them, and the reply's
    /// opening when `add_generation_prompt`. `now` (seconds since the Unix
    /// epoch, UTC) is what `strftime_now` formats: Llama 3's templates print
    /// today's date.
    pub fn render(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
        now: i64,
    ) -> Result<String, JinjaError> {
        let template = self.env.get_template(NAME)?;
        let strftime_now = Value::from_function(move |format: String| strftime(now, &format));
        // transformers passes tools=None and documents=None when absent.
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            tools => tools.map(Value::from_serialize),
            documents => Value::from(()),
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
            strftime_now => strftime_now,
        };
        Ok(template.render(ctx)?)
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, as
/// transformers' `tojson` filter calls it: `", "` and `": "` between items
/// (`","` and newlines with an indent), keys in the order given, non-ASCII
/// characters as they are.
fn tojson(value: Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    dump(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

fn dump(value: &Value, indent: Option<usize>, depth: usize, out: &mut String) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * depth));
        }
    };
    let separator = if indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                out.push_str(&value.to_string());
            } else {
                out.push_str(&python_float(f64::try_from(value.clone())?));
            }
        }
        ValueKind::String => quote(value.as_str().unwrap_or_default(), out),
        ValueKind::Map | ValueKind::Seq | ValueKind::Iterable => {
            // A map iterates its keys, a sequence its items.
            let map = value.kind() == ValueKind::Map;
            let items: Vec<Value> = value.try_iter()?.collect();
            let (open, close) = if map { ('{', '}') } else { ('[', ']') };
            out.push(open);
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(separator);
                }
                newline(out, depth + 1);
                if map {
                    match item.as_str() {
                        Some(k) => quote(k, out),
                        None => quote(&item.to_string(), out),
                    }
                    out.push_str(": ");
                    dump(&value.get_item(item)?, indent, depth + 1, out)?;
                } else {
                    dump(item, indent, depth + 1, out)?;
                }
            }
            if !items.is_empty() {
                newline(out, depth);
            }
            out.push(close);
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson cannot write a {}", value.kind()),
            ))
        }
    }
    Ok(())
}

/// A JSON string as Python writes it with `ensure_ascii=False`.
fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr` of a float: the shortest digits that read back, with
/// `.0` on whole numbers and an exponent (`1e+16`, `1e-05`) outside
/// 1e-4 .. 1e16, `NaN` and `Infinity` as `json.dumps` writes them.
fn python_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        // Rust's `{:e}` is the shortest digits too: "1e16", "1.5e-7".
        let s = format!("{x:e}");
        let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    let s = format!("{x}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// `strftime` of the UTC time `now` for the directives chat templates use
/// (`%d %b %Y`, `%B`, `%m`, `%y`, `%A`, `%a`, `%H:%M:%S`, `%j`, `%%`);
/// anything else is kept as written.
fn strftime(now: i64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
    ];
    let days = now.div_euclid(86_400);
    let secs = now.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let year_start = days_from_civil(year, 1, 1);
    let weekday = DAYS[days.rem_euclid(7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(&weekday[..3]),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('j') => out.push_str(&format!("{:03}", days - year_start + 1)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// The proleptic Gregorian date of a day count from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse: days from 1970-01-01 to a date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tojson_writes_what_python_writes() {
        let t = ChatTemplate::new("{{ x | tojson }}|{{ x | tojson(indent=2) }}", "", "").unwrap();
        let x = json!({"b": [1, 2.5, 1e20, "é\"\n"], "a": {}, "c": null, "d": true, "e": 3.0});
        let out = t
            .env
            .get_template(NAME)
            .unwrap()
            .render(minijinja::context! { x => Value::from_serialize(&x) })
            .unwrap();
        assert_eq!(
            out,
            "{\"b\": [1, 2.5, 1e+20, \"é\\\"\\n\"], \"a\": {}, \"c\": null, \"d\": true, \"e\": 3.0}|\
             {\n  \"b\": [\n    1,\n    2.5,\n    1e+20,\n    \"é\\\"\\n\"\n  ],\n  \"a\": {},\n  \
             \"c\": null,\n  \"d\": true,\n  \"e\": 3.0\n}"
        );
    }

    #[test]
    fn floats_as_python_repr() {
        for (x, want) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (0.0001, "0.0001"),
            (-2.5e-5, "-2.5e-05"),
            (123456789.125, "123456789.125"),
        ] {
            assert_eq!(python_float(x), want, "{x}");
        }
    }

    #[test]
    fn strftime_as_python() {
        // 2024-07-26 13:25:09 UTC, a Friday, day 208 (Python's own output).
        let t = 1_722_000_309;
        assert_eq!(strftime(t, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(
            strftime(t, "%A %a %B %m %y %H:%M:%S %j %%"),
            "Friday Fri July 07 24 13:25:09 208 %"
        );
        assert_eq!(strftime(0, "%Y-%m-%d %A"), "1970-01-01 Thursday");
        assert_eq!(strftime(951_782_400, "%Y-%m-%d"), "2000-02-29");
    }

    #[test]
    fn a_template_refuses_as_it_says() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation roles must alternate') }}{% endif %}",
            "",
            "",
        )
        .unwrap();
        let e = t
            .render(
                &json!([{"role": "assistant", "content": "x"}]),
                None,
                true,
                0,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "chat template: Conversation roles must alternate"
        );
        assert!(ChatTemplate::new("{% if %}", "", "").is_err());
    }
}
