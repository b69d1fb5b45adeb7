//! The JSON Schemas a reply can be held to (`response_format`, a tool's
//! `parameters`, the Responses API's `text.format`): OpenAI's structured
//! outputs subset and a little more, checked before any grammar is built.
//!
//! A keyword outside the subset is a 400 naming it and where it is, never
//! ignored: a client that sends `uniqueItems` counts on the reply honouring
//! it, and a reply that silently does not would break it later. What is
//! served: `type` (string, number, integer, boolean, null, object, array,
//! or a list of them), `properties`, `required`, `additionalProperties`,
//! `items`, `enum`, `const`, `anyOf`, local `$ref`s into `$defs` /
//! `definitions`, string `minLength` / `maxLength` / `pattern` / `format`,
//! number `minimum` / `maximum` / `exclusiveMinimum` / `exclusiveMaximum`,
//! array `minItems` / `maxItems`, and the annotations (`title`,
//! `description`, `default`, `examples`, `$schema`, `$id`, `$comment`).

use serde_json::Value;

use super::error::ApiError;
use super::parse::kind;

/// Keywords a schema may use (see the module doc).
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
    "definitions",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minItems",
    "maxItems",
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
];

/// `format`s the grammar knows.
const FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
    "uri",
];

const TYPES: &[&str] = &[
    "string", "number", "integer", "boolean", "null", "object", "array",
];

/// Nesting deeper than this is refused (each level is grammar to build
/// and a stack to walk).
pub const MAX_DEPTH: usize = 24;

/// The most bytes a schema may take as JSON.
pub const MAX_SCHEMA_BYTES: usize = 32 * 1024;

/// Checks that `schema` (found at `param`) is an object schema of the
/// served subset; the error names the first keyword or value that is not.
pub fn check(schema: &Value, param: &str) -> Result<(), ApiError> {
    let size = serde_json::to_vec(schema).map_or(usize::MAX, |b| b.len());
    if size > MAX_SCHEMA_BYTES {
        return Err(ApiError::too_large(format!(
            "`{param}` has {size} bytes as JSON; the limit is {MAX_SCHEMA_BYTES}"
        ))
        .with_param(param));
    }
    let Value::Object(_) = schema else {
        return Err(invalid(
            param,
            format!("`{param}` is {}; send a JSON Schema object", kind(schema)),
        ));
    };
    walk(schema, param, 0)
}

fn invalid(param: &str, message: String) -> ApiError {
    ApiError::unsupported("invalid_schema", message).with_param(param)
}

fn unsupported(param: &str, message: String) -> ApiError {
    ApiError::unsupported("unsupported_schema", message).with_param(param)
}

fn walk(schema: &Value, at: &str, depth: usize) -> Result<(), ApiError> {
    if depth > MAX_DEPTH {
        return Err(unsupported(
            at,
            format!("`{at}` nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    let map = match schema {
        Value::Object(map) => map,
        // `true` / `false` are schemas too (anything, nothing).
        Value::Bool(_) => return Ok(()),
        other => {
            return Err(invalid(
                at,
                format!("`{at}` is {}; a schema is an object", kind(other)),
            ))
        }
    };
    for (key, value) in map {
        let here = format!("{at}.{key}");
        if !KEYWORDS.contains(&key.as_str()) {
            return Err(unsupported(
                &here,
                format!(
                    "`{here}`: the JSON Schema keyword `{key}` is not supported; supported: {}",
                    KEYWORDS.join(", ")
                ),
            ));
        }
        match key.as_str() {
            "type" => check_type(value, &here)?,
            "properties" | "$defs" | "definitions" => {
                let Value::Object(props) = value else {
                    return Err(invalid(
                        &here,
                        format!("`{here}` is {}; send an object of schemas", kind(value)),
                    ));
                };
                for (name, sub) in props {
                    walk(sub, &format!("{here}.{name}"), depth + 1)?;
                }
            }
            "required" => match value {
                Value::Array(names) if names.iter().all(Value::is_string) => {}
                _ => {
                    return Err(invalid(
                        &here,
                        format!("`{here}` must be an array of property names"),
                    ))
                }
            },
            "additionalProperties" | "items" => walk(value, &here, depth + 1)?,
            "anyOf" => match value {
                Value::Array(subs) if !subs.is_empty() => {
                    for (i, sub) in subs.iter().enumerate() {
                        walk(sub, &format!("{here}[{i}]"), depth + 1)?;
                    }
                }
                _ => {
                    return Err(invalid(
                        &here,
                        format!("`{here}` must be a non-empty array of schemas"),
                    ))
                }
            },
            "enum" => match value {
                Value::Array(values) if !values.is_empty() => {}
                _ => {
                    return Err(invalid(
                        &here,
                        format!("`{here}` must be a non-empty array of values"),
                    ))
                }
            },
            "$ref" => match value.as_str() {
                Some(r) if r == "#" || r.starts_with("#/") => {}
                _ => {
                    return Err(unsupported(
                        &here,
                        format!(
                            "`{here}` is {value}; only references inside the schema (`#/$defs/...`) are supported"
                        ),
                    ))
                }
            },
            "format" => match value.as_str() {
                Some(f) if FORMATS.contains(&f) => {}
                _ => {
                    return Err(unsupported(
                        &here,
                        format!(
                            "`{here}` is {value}; supported formats: {}",
                            FORMATS.join(", ")
                        ),
                    ))
                }
            },
            "pattern" | "title" | "description" | "$schema" | "$id" | "$comment"
                if !value.is_string() =>
            {
                return Err(invalid(&here, format!("`{here}` must be a string")));
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" if !value.is_u64() => {
                return Err(invalid(
                    &here,
                    format!("`{here}` must be a non-negative integer"),
                ));
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum"
                if !value.is_number() =>
            {
                return Err(invalid(&here, format!("`{here}` must be a number")));
            }
            // const, default, examples: any value; the rest were fine.
            _ => {}
        }
    }
    Ok(())
}

fn check_type(value: &Value, at: &str) -> Result<(), ApiError> {
    let one = |t: &Value| match t.as_str() {
        Some(name) if TYPES.contains(&name) => Ok(()),
        _ => Err(invalid(
            at,
            format!("`{at}` has {t}; a type is one of {}", TYPES.join(", ")),
        )),
    };
    match value {
        Value::Array(types) if !types.is_empty() => types.iter().try_for_each(one),
        Value::String(_) => one(value),
        _ => Err(invalid(
            at,
            format!("`{at}` must be a type name or an array of them"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_strict_subset_passes() {
        let schema = json!({
            "type": "object",
            "title": "Person",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "age": {"type": ["integer", "null"], "minimum": 0},
                "pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}, "maxItems": 3},
                "kind": {"enum": ["a", "b"]},
                "either": {"anyOf": [{"type": "string"}, {"type": "number"}]},
                "when": {"type": "string", "format": "date"}
            },
            "required": ["name", "age"],
            "additionalProperties": false,
            "$defs": {"Pet": {"type": "object", "properties": {"n": {"const": 1}}}}
        });
        assert_eq!(check(&schema, "schema"), Ok(()));
    }

    #[test]
    fn a_keyword_outside_the_subset_is_a_400_naming_it_and_where() {
        let schema = json!({
            "type": "object",
            "properties": {"tags": {"type": "array", "uniqueItems": true}}
        });
        let e = check(&schema, "response_format.json_schema.schema").unwrap_err();
        assert_eq!((e.status, e.code), (400, "unsupported_schema"));
        assert_eq!(
            e.param.as_deref(),
            Some("response_format.json_schema.schema.properties.tags.uniqueItems")
        );
        assert!(
            e.message.contains("`uniqueItems` is not supported"),
            "{}",
            e.message
        );
        for (schema, word) in [
            (json!({"oneOf": [{"type": "string"}]}), "oneOf"),
            (json!({"allOf": [{"type": "string"}]}), "allOf"),
            (
                json!({"type": "object", "patternProperties": {}}),
                "patternProperties",
            ),
            (
                json!({"$ref": "https://example.com/s.json"}),
                "only references inside",
            ),
            (
                json!({"type": "string", "format": "credit-card"}),
                "supported formats",
            ),
        ] {
            let e = check(&schema, "s").unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(word), "{}", e.message);
        }
    }

    #[test]
    fn malformed_schemas_are_400s_too() {
        for schema in [
            json!("object"),
            json!({"type": "map"}),
            json!({"type": "object", "properties": []}),
            json!({"type": "object", "required": "name"}),
            json!({"anyOf": []}),
            json!({"enum": []}),
            json!({"type": "string", "maxLength": -1}),
        ] {
            let e = check(&schema, "s").unwrap_err();
            assert_eq!(e.status, 400, "{schema}");
            assert_eq!(e.kind(), "invalid_request_error");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut schema = json!({"type": "string"});
        for _ in 0..=MAX_DEPTH {
            schema = json!({"type": "array", "items": schema});
        }
        let e = check(&schema, "s").unwrap_err();
        assert!(e.message.contains("nests deeper"), "{}", e.message);
    }
}
