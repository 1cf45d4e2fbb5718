//! Output constraints: JSON Schema, any JSON object, a regular expression
//! or a Lark grammar, compiled by llguidance into a matcher that says,
//! before each token, which tokens of the vocabulary may come next.
//!
//! Compiled in the worker (a hostile schema costs only the sandboxed
//! worker) when the request arrives, before it waits or starts, so an
//! error reaches the caller before any token is spent. The compile is
//! bounded by llguidance's fuel and size limits ([`limits`]); each mask
//! is bounded by its per-step fuel. JSON is compact: no whitespace
//! outside strings (the separators are `,` and `:`).
//!
//! Independent of llama.cpp: the engine hands in its vocabulary as a
//! [`TokEnv`]; the fuzz target hands in a byte-level one.

use std::sync::Arc;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use symbiont_slm_protocol::{Constraint, RequestError};
use toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

/// llguidance's limits for one request's grammar: its defaults, which
/// bound a compile to tens of milliseconds and a mask to a few (see
/// `tests/constraints.rs` for hostile schemas measured against them),
/// without the parser state in error messages.
pub fn limits() -> ParserLimits {
    ParserLimits {
        verbose_errors: false,
        ..ParserLimits::default()
    }
}

/// Compiles constraints against one vocabulary.
pub struct Compiler {
    factory: ParserFactory,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler").finish_non_exhaustive()
    }
}

impl Compiler {
    /// A compiler for the vocabulary of `env`.
    pub fn new(env: &TokEnv) -> Result<Self, String> {
        let mut factory = ParserFactory::new_simple(env).map_err(|e| e.to_string())?;
        factory.quiet();
        *factory.limits_mut() = limits();
        Ok(Self { factory })
    }

    /// A compiler over single bytes (256 tokens and an end token): for
    /// the fuzz target and tests without a model.
    pub fn bytes() -> Self {
        let words: Vec<Vec<u8>> = (0..=255u8)
            .map(|b| vec![b])
            .chain(std::iter::once(b"\xFF</s>".to_vec()))
            .collect();
        let info = TokRxInfo::new(words.len() as u32, 256);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        Self::new(&env).expect("a byte vocabulary compiles")
    }

    /// The matcher of `constraint`, or why it cannot be compiled (naming
    /// the keyword, and where in a schema it is when that can be found).
    pub fn compile(&self, constraint: &Constraint) -> Result<Matcher, RequestError> {
        let (grammar, schema) = match constraint {
            Constraint::JsonObject => {
                let schema = compact(json!({"type": "object"}));
                (TopLevelGrammar::from_json_schema(schema), None)
            }
            Constraint::JsonSchema { schema } => {
                let value: Value =
                    serde_json::from_str(schema).map_err(|e| RequestError::Constraint {
                        detail: format!("the schema is not JSON: {e}"),
                        at: None,
                    })?;
                if !(value.is_object() || value.is_boolean()) {
                    return Err(RequestError::Constraint {
                        detail: "a JSON Schema is an object or a boolean".into(),
                        at: Some(String::new()),
                    });
                }
                (
                    TopLevelGrammar::from_json_schema(compact(value.clone())),
                    Some(value),
                )
            }
            Constraint::Regex { pattern } => (TopLevelGrammar::from_regex(pattern), None),
            Constraint::Lark { grammar } => (TopLevelGrammar::from_lark(grammar.clone()), None),
        };
        let parser = self.factory.create_parser(grammar);
        let mut matcher = Matcher::new(parser);
        // The first mask too: a grammar too wide for the per-token limits
        // fails here, as the caller's error, rather than after its prompt
        // was read.
        let _ = matcher.compute_mask();
        if let Some(e) = matcher.get_error() {
            let at = schema.as_ref().and_then(|s| locate(s, &e));
            return Err(RequestError::Constraint {
                detail: clean(&e),
                at,
            });
        }
        Ok(matcher)
    }
}

/// The schema with llguidance's options for compact JSON (any options
/// the caller put there are replaced: they are ours to set).
fn compact(schema: Value) -> Value {
    let options = json!({
        "whitespace_flexible": false,
        "item_separator": ",",
        "key_separator": ":",
    });
    match schema {
        Value::Object(mut map) => {
            map.insert("x-guidance".into(), options);
            Value::Object(map)
        }
        // `true` allows anything, `false` nothing: as objects.
        Value::Bool(true) => json!({"x-guidance": options}),
        Value::Bool(false) => json!({"not": {}, "x-guidance": options}),
        other => other,
    }
}

/// llguidance's message without its framing ("Unimplemented keys" and
/// the like are kept).
pub(crate) fn clean(e: &str) -> String {
    let e = e.trim();
    let e = e.strip_prefix("parser error: ").unwrap_or(e);
    let e = e.trim_end_matches("<non-verbose/>").trim();
    let mut out: String = e.chars().take(400).collect();
    if out.len() < e.len() {
        out.push('…');
    }
    out
}

/// Where in `schema` the keyword an error names is: the JSON pointer of
/// the first (depth-first) object holding an unimplemented key or the
/// unknown format the message names.
fn locate(schema: &Value, error: &str) -> Option<String> {
    let wanted: Vec<(String, Option<String>)> =
        if let Some(rest) = error.split("Unimplemented keys: ").nth(1) {
            let list = rest.split(']').next().unwrap_or("");
            list.split(',')
                .map(|k| {
                    k.trim()
                        .trim_start_matches('[')
                        .trim_matches('"')
                        .to_string()
                })
                .filter(|k| !k.is_empty())
                .map(|k| (k, None))
                .collect()
        } else if let Some(rest) = error.split("Unknown format: ").nth(1) {
            let format = rest.split_whitespace().next().unwrap_or("").to_string();
            vec![("format".to_string(), Some(format))]
        } else {
            return None;
        };
    /// Keywords whose object's keys are names (of properties, of
    /// definitions), not keywords.
    const NAME_MAPS: [&str; 5] = [
        "properties",
        "patternProperties",
        "$defs",
        "definitions",
        "dependentSchemas",
    ];
    /// Keywords whose values are data, not schemas.
    const DATA: [&str; 6] = [
        "enum",
        "const",
        "default",
        "examples",
        "required",
        "x-guidance",
    ];
    /// `names`: `v` is a name map, whose values are schemas.
    fn walk(
        v: &Value,
        names: bool,
        path: &mut Vec<String>,
        wanted: &[(String, Option<String>)],
    ) -> Option<String> {
        let mut children: Vec<(String, &Value, bool)> = Vec::new();
        match v {
            Value::Object(map) if names => {
                children.extend(map.iter().map(|(k, c)| (k.clone(), c, false)));
            }
            Value::Object(map) => {
                for (key, value) in wanted {
                    let hit = match (map.get(key), value) {
                        (Some(_), None) => true,
                        (Some(Value::String(s)), Some(v)) => s == v,
                        _ => false,
                    };
                    if hit {
                        return Some(pointer(path, key));
                    }
                }
                children.extend(
                    map.iter()
                        .filter(|(k, _)| !DATA.contains(&k.as_str()))
                        .map(|(k, c)| (k.clone(), c, NAME_MAPS.contains(&k.as_str()))),
                );
            }
            Value::Array(items) => {
                children.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (i.to_string(), c, false)),
                );
            }
            _ => {}
        }
        for (k, child, names) in children {
            path.push(k);
            let found = walk(child, names, path, wanted);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        None
    }
    walk(schema, false, &mut Vec::new(), &wanted)
}

/// The JSON pointer (RFC 6901) of `key` under `path`.
fn pointer(path: &[String], key: &str) -> String {
    path.iter()
        .map(String::as_str)
        .chain(std::iter::once(key))
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(m: &mut Matcher, text: &str) -> Result<(), String> {
        for b in text.bytes() {
            let mask = m.compute_mask().map_err(|e| e.to_string())?;
            if !mask.is_allowed(u32::from(b)) {
                return Err(format!("byte {:?} refused", b as char));
            }
            m.consume_token(u32::from(b)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn refused(c: &Compiler, constraint: &Constraint) -> RequestError {
        match c.compile(constraint) {
            Ok(_) => panic!("compiled: {constraint:?}"),
            Err(e) => e,
        }
    }

    fn schema(s: Value) -> Constraint {
        Constraint::JsonSchema {
            schema: s.to_string(),
        }
    }

    #[test]
    fn a_schema_allows_its_values_compact_and_refuses_others() {
        let c = Compiler::bytes();
        let s = schema(json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}, "s": {"enum": ["a", "b"]}},
            "required": ["n", "s"],
            "additionalProperties": false
        }));
        let mut m = c.compile(&s).unwrap();
        text_of(&mut m, r#"{"n":12,"s":"b"}"#).unwrap();
        assert!(m.is_accepting().unwrap());
        // Whitespace outside strings is not free.
        let mut m = c.compile(&s).unwrap();
        assert!(text_of(&mut m, r#"{ "n":1"#).is_err());
        // A value the schema refuses.
        let mut m = c.compile(&s).unwrap();
        assert!(text_of(&mut m, r#"{"n":1,"s":"c""#).is_err());
    }

    #[test]
    fn json_mode_regex_and_lark_constrain() {
        let c = Compiler::bytes();
        let mut m = c.compile(&Constraint::JsonObject).unwrap();
        assert!(text_of(&mut m, "[1]").is_err());
        let mut m = c.compile(&Constraint::JsonObject).unwrap();
        text_of(&mut m, r#"{"a":[1,{"b":null}]}"#).unwrap();
        let rx = Constraint::Regex {
            pattern: r"\d{3}-[a-z]+".into(),
        };
        let mut m = c.compile(&rx).unwrap();
        text_of(&mut m, "123-ab").unwrap();
        let mut m = c.compile(&rx).unwrap();
        assert!(text_of(&mut m, "12a").is_err());
        let lark = Constraint::Lark {
            grammar: "start: \"yes\" | \"no\"".into(),
        };
        let mut m = c.compile(&lark).unwrap();
        text_of(&mut m, "no").unwrap();
        assert!(m.is_accepting().unwrap());
        let mut m = c.compile(&lark).unwrap();
        assert!(text_of(&mut m, "maybe").is_err());
    }

    #[test]
    fn errors_name_the_keyword_and_where_it_is() {
        let c = Compiler::bytes();
        let e = refused(
            &c,
            &schema(json!({
                "type": "object",
                "properties": {
                    "if": {"enum": [{"if": 1}]},
                    "a": {"type": "object", "properties": {"b": {"type": "string", "contentEncoding": "base64", "if": {}}}}
                }
            })),
        );
        let RequestError::Constraint { detail, at } = e else {
            panic!("{e:?}")
        };
        assert!(detail.contains("\"if\""), "{detail}");
        assert_eq!(at.as_deref(), Some("/properties/a/properties/b/if"));
        let e = refused(
            &c,
            &schema(json!({"type": "string", "format": "no-such-format"})),
        );
        let RequestError::Constraint { detail, at } = e else {
            panic!("{e:?}")
        };
        assert!(detail.contains("no-such-format"), "{detail}");
        assert_eq!(at.as_deref(), Some("/format"));
        for (bad, says) in [(r#"{"type": "#, "not JSON"), ("[1]", "object or a boolean")] {
            let e = refused(&c, &Constraint::JsonSchema { schema: bad.into() });
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = refused(
            &c,
            &Constraint::Lark {
                grammar: "start: undefined_rule".into(),
            },
        );
        assert!(e.to_string().contains("undefined_rule"), "{e}");
        // The allowed case: the same shapes compile without the bad parts.
        c.compile(&schema(json!({"type": "string", "format": "date-time"})))
            .unwrap();
    }

    #[test]
    fn the_callers_engine_options_are_replaced() {
        let c = Compiler::bytes();
        // A schema asking for free whitespace gets compact JSON anyway.
        let mut m = c
            .compile(&schema(json!({"type": "array", "x-guidance": {"whitespace_flexible": true, "lenient": true}})))
            .unwrap();
        assert!(text_of(&mut m, "[ 1").is_err());
    }
}
