//! What the worker does to a caller's JSON Schema before the engine
//! (llguidance) compiles it: each change keeps the schema's meaning, or is
//! made good as the answer is sampled.
//!
//! - llguidance's options for compact JSON are set (any the caller put
//!   there are replaced: they are ours to set).
//! - A `$schema` naming a dialect the engine does not know is read as
//!   [`FALLBACK_DIALECT`].
//! - `uniqueItems` is taken out: the engine refuses it; the worker keeps
//!   such arrays unique itself ([`crate::unique`]).
//! - A `oneOf` whose branches only name types (Kubernetes'
//!   `IntOrString`: `[{"type": ["string", "null"]}, {"type": ["integer",
//!   "null"]}]`) becomes the types that exactly one branch names (there:
//!   string or integer, since `null` matches both and so neither): the
//!   engine refuses a `oneOf` whose branches it cannot prove disjoint.
//! - A `oneOf` of object branches told apart by a discriminator (each pair
//!   requires a property whose `const` or `enum` values they do not
//!   share, as Iglu's and many API schemas do) becomes an `anyOf` of them
//!   (at most one branch can match an object; a value that is not an
//!   object matches every branch that does not ask for a type, so none is
//!   valid: such branches also get `type: object`).
//! - A `oneOf` branch that is only a local `$ref` is replaced by a copy
//!   of its target, so that the engine can prove the branches disjoint.
//! - `if`/`then`/`else`, `propertyNames` and `minProperties` beside
//!   optional properties are said with keywords the engine implements
//!   ([`keywords`]); formats the engine does not know, with a `pattern`, a
//!   range or another format ([`formats`]). These keep the meaning or
//!   narrow it (the answer is then valid against the caller's schema and
//!   a little less free than it allows), never widen it; where neither
//!   can be done the keyword is left, and the engine refuses it by name.

mod formats;
mod keywords;
mod one_of;

use serde_json::{json, Map, Value};

/// Keys a schema may hold that say nothing of what it allows.
const ANNOTATIONS: [&str; 5] = ["title", "description", "$comment", "examples", "default"];

/// Most bytes of JSON the rewrites copy for one schema ([`Budget`]).
const MAX_COPIED: usize = 256 * 1024;

/// `entry` added to `s`'s `allOf` (made if missing): `s` must then also
/// satisfy it, and nothing else of `s` changes.
fn add_to_all_of(s: &mut Map<String, Value>, entry: Value) {
    match s.get_mut("allOf") {
        Some(Value::Array(a)) => a.push(entry),
        // Not an array: the schema is malformed, and the engine says so.
        Some(_) => {}
        None => {
            s.insert("allOf".into(), Value::Array(vec![entry]));
        }
    }
}

/// The dialects the engine knows by their `$schema` (a trailing `#` aside).
const DIALECTS: [&str; 5] = [
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2019-09/schema",
    "http://json-schema.org/draft-07/schema",
    "http://json-schema.org/draft-06/schema",
    "http://json-schema.org/draft-04/schema",
];

/// The dialect a schema is read in when its `$schema` names another
/// (Kubernetes' unversioned `http://json-schema.org/schema#`, Iglu's
/// self-describing meta-schema, …): the engine would try to fetch that
/// meta-schema (it cannot, in the sandbox, and must not). Draft 7, which
/// the corpus check (`tests/python/schema_corpus.py`) validates such a
/// schema under too.
const FALLBACK_DIALECT: &str = "http://json-schema.org/draft-07/schema#";

/// Deeper than this, a schema is left as it is (the engine's own limits
/// refuse it).
const MAX_DEPTH: usize = 256;

/// The schema the engine compiles for the caller's `schema`.
pub fn for_engine(schema: Value) -> Value {
    let options = json!({
        "whitespace_flexible": false,
        "item_separator": ",",
        "key_separator": ":",
    });
    match schema {
        Value::Object(map) => {
            let mut schema = Value::Object(map);
            rewrite(&mut schema, true);
            if let Value::Object(map) = &mut schema {
                map.insert("x-guidance".into(), options);
            }
            schema
        }
        // `true` allows anything, `false` nothing: as objects.
        Value::Bool(true) => json!({"x-guidance": options}),
        Value::Bool(false) => json!({"not": {}, "x-guidance": options}),
        other => other,
    }
}

/// A tool's parameters as the call grammar embeds them: rewritten as
/// [`for_engine`] does, but `uniqueItems` stays (and is refused: a call's
/// arguments are not tracked).
pub fn for_tool(parameters: &mut Value) {
    rewrite(parameters, false);
}

/// The dialect, the `oneOf`s, the keywords and formats the engine lacks,
/// and (with `drop_unique`) `uniqueItems`. Below a `oneOf` the engine is
/// left to prove (or under `not`) only exact rewrites are made: a narrower
/// branch could let it prove branches disjoint that are not, and so accept
/// a value two branches match. Copies made (`oneOf` targets, `if`
/// branches, `propertyNames`' listed names) share one budget, so nesting
/// cannot make a schema grow without bound; past it a keyword is left for
/// the engine to refuse by name.
fn rewrite(schema: &mut Value, drop_unique: bool) {
    let dialect = schema
        .get("$schema")
        .and_then(Value::as_str)
        .map(|d| d.trim_end_matches('#').to_string());
    let old_draft = dialect.as_deref().is_some_and(|d| {
        d == "http://json-schema.org/draft-04/schema"
            || d == "http://json-schema.org/draft-06/schema"
    });
    let root = schema.clone();
    let mut budget = Budget::new();
    each_schema(schema, Where::default(), &mut |s, at| {
        if drop_unique {
            s.remove("uniqueItems");
        }
        // An `allOf` that is not a list: malformed, the engine says so.
        if s.get("allOf").is_some_and(|a| !a.is_array()) {
            return;
        }
        // Local `$ref`s resolve against the nearest resource: the root's
        // only are read through.
        let own_resource =
            at.depth > 0 && (s.contains_key("$id") || s.get("id").is_some_and(Value::is_string));
        if !at.in_resource && !own_resource {
            one_of::one_of_refs(s, &root, &mut budget);
        }
        one_of::one_of_types(s);
        one_of::one_of_discriminated(s);
        keywords::conditional(s, old_draft, at.exact_only, &mut budget);
        keywords::property_names(s, &mut budget);
        if !at.exact_only {
            keywords::min_properties(s);
        }
        formats::formats(s, at.exact_only);
    });
    let Value::Object(map) = schema else { return };
    let unknown = map
        .get("$schema")
        .is_some_and(|_| !dialect.as_deref().is_some_and(|d| DIALECTS.contains(&d)));
    if unknown {
        map.insert("$schema".into(), FALLBACK_DIALECT.into());
    }
}

/// Bytes of JSON the rewrites of one schema may still copy, and how many
/// more copies they may try (each try measures what it would copy, up to
/// the bytes left: the tries bound that work).
#[derive(Debug)]
struct Budget {
    bytes: usize,
    tries: usize,
}

/// Most copies the rewrites of one schema try.
const MAX_TRIES: usize = 512;

impl Budget {
    fn new() -> Self {
        Budget {
            bytes: MAX_COPIED,
            tries: MAX_TRIES,
        }
    }

    /// Takes the size of `copies` copies of `v`, if they fit.
    fn take(&mut self, v: &Value, copies: usize) -> bool {
        if self.tries == 0 || copies == 0 {
            return copies == 0;
        }
        self.tries -= 1;
        let limit = self.bytes / copies;
        let mut w = Counter { n: 0, limit };
        if serde_json::to_writer(&mut w, v).is_err() {
            return false;
        }
        self.bytes -= w.n * copies;
        true
    }
}

/// Counts bytes written, failing past `limit`.
struct Counter {
    n: usize,
    limit: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.n += buf.len();
        if self.n > self.limit {
            return Err(std::io::Error::other("over budget"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where in the schema a visited schema is.
#[derive(Debug, Clone, Copy, Default)]
struct Where {
    depth: usize,
    /// Below a `oneOf` left to the engine, or a `not`: only exact
    /// rewrites.
    exact_only: bool,
    /// Below a schema (not the root) with an `$id` (or draft 4's `id`):
    /// local `$ref`s there resolve against it, not the root.
    in_resource: bool,
}

/// Whether `schema` holds any `uniqueItems: true` (in a schema, not in a
/// property or definition of that name, nor in an `enum`'s values).
pub fn has_unique_items(schema: &Value) -> bool {
    let mut schema = schema.clone();
    let mut found = false;
    each_schema(&mut schema, Where::default(), &mut |s, _| {
        found |= s.get("uniqueItems") == Some(&Value::Bool(true));
    });
    found
}

/// Calls `f` on `schema` and every schema inside it (not on data:
/// `enum`, `const`, `default`, `examples`; nor on a map of names:
/// `properties` itself, `$defs`), with where each is; after `f` (so a
/// `oneOf` it turned into an `anyOf` is one).
fn each_schema(schema: &mut Value, at: Where, f: &mut impl FnMut(&mut Map<String, Value>, Where)) {
    let Value::Object(map) = schema else { return };
    if at.depth > MAX_DEPTH {
        return;
    }
    f(map, at);
    let own_resource =
        at.depth > 0 && (map.contains_key("$id") || map.get("id").is_some_and(Value::is_string));
    // A `oneOf` whose branches name disjoint types needs no proof that
    // narrowing could fool.
    let typed_one_of = map
        .get("oneOf")
        .and_then(Value::as_array)
        .is_some_and(|b| one_of::disjoint_by_type(b));
    let below = |key: &str| Where {
        depth: at.depth + 1,
        exact_only: at.exact_only || (key == "oneOf" && !typed_one_of) || key == "not",
        in_resource: at.in_resource || own_resource,
    };
    for (k, v) in map.iter_mut() {
        let inner = below(k);
        match k.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                if let Value::Object(m) = v {
                    m.values_mut().for_each(|s| each_schema(s, inner, f));
                }
            }
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                if let Value::Array(a) = v {
                    a.iter_mut().for_each(|s| each_schema(s, inner, f));
                }
            }
            "items" => match v {
                Value::Array(a) => a.iter_mut().for_each(|s| each_schema(s, inner, f)),
                s => each_schema(s, inner, f),
            },
            "additionalProperties"
            | "additionalItems"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "propertyNames"
            | "unevaluatedItems"
            | "unevaluatedProperties" => each_schema(v, inner, f),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_items_leave_schemas_only() {
        let s = json!({
            "properties": {"uniqueItems": {"type": "boolean"}, "t": {"type": "array", "uniqueItems": true}},
            "$defs": {"x": {"items": [{"uniqueItems": false}]}},
            "enum": [{"uniqueItems": true}]
        });
        assert!(has_unique_items(&s));
        let engine = for_engine(s);
        assert_eq!(
            engine["properties"]["uniqueItems"],
            json!({"type": "boolean"})
        );
        assert_eq!(engine["properties"]["t"], json!({"type": "array"}));
        assert_eq!(engine["$defs"]["x"], json!({"items": [{}]}));
        assert_eq!(engine["enum"], json!([{"uniqueItems": true}]));
        assert!(!has_unique_items(
            &json!({"type": "array", "uniqueItems": false})
        ));
        assert!(!has_unique_items(&json!({"enum": [{"uniqueItems": true}]})));
    }

    #[test]
    fn an_unknown_dialect_is_replaced_and_a_known_one_kept() {
        let unknown = for_engine(json!({"$schema": "http://json-schema.org/schema#"}));
        assert_eq!(unknown["$schema"], FALLBACK_DIALECT);
        let known = for_engine(json!({"$schema": "http://json-schema.org/draft-04/schema#"}));
        assert_eq!(known["$schema"], "http://json-schema.org/draft-04/schema#");
        assert!(known["x-guidance"].is_object());
    }
}
