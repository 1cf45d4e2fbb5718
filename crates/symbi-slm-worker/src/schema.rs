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

use serde_json::{json, Map, Value};

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

/// The dialect, the `oneOf`s and (with `drop_unique`) `uniqueItems`.
fn rewrite(schema: &mut Value, drop_unique: bool) {
    each_schema(schema, 0, &mut |s| {
        if drop_unique {
            s.remove("uniqueItems");
        }
        one_of_types(s);
        one_of_discriminated(s);
    });
    let Value::Object(map) = schema else { return };
    let unknown = map.get("$schema").is_some_and(|d| {
        !d.as_str()
            .is_some_and(|d| DIALECTS.contains(&d.trim_end_matches('#')))
    });
    if unknown {
        map.insert("$schema".into(), FALLBACK_DIALECT.into());
    }
}

/// Whether `schema` holds any `uniqueItems: true` (in a schema, not in a
/// property or definition of that name, nor in an `enum`'s values).
pub fn has_unique_items(schema: &Value) -> bool {
    let mut schema = schema.clone();
    let mut found = false;
    each_schema(&mut schema, 0, &mut |s| {
        found |= s.get("uniqueItems") == Some(&Value::Bool(true));
    });
    found
}

/// Calls `f` on `schema` and every schema inside it (not on data:
/// `enum`, `const`, `default`, `examples`; nor on a map of names:
/// `properties` itself, `$defs`).
fn each_schema(schema: &mut Value, depth: usize, f: &mut impl FnMut(&mut Map<String, Value>)) {
    let Value::Object(map) = schema else { return };
    if depth > MAX_DEPTH {
        return;
    }
    f(map);
    for (k, v) in map.iter_mut() {
        match k.as_str() {
            "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                if let Value::Object(m) = v {
                    m.values_mut().for_each(|s| each_schema(s, depth + 1, f));
                }
            }
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                if let Value::Array(a) = v {
                    a.iter_mut().for_each(|s| each_schema(s, depth + 1, f));
                }
            }
            "items" => match v {
                Value::Array(a) => a.iter_mut().for_each(|s| each_schema(s, depth + 1, f)),
                s => each_schema(s, depth + 1, f),
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
            | "unevaluatedProperties" => each_schema(v, depth + 1, f),
            _ => {}
        }
    }
}

/// Annotations a branch may hold and still only name types.
const ANNOTATIONS: [&str; 5] = ["title", "description", "$comment", "examples", "default"];

/// A `oneOf` of branches that only name types, as the types exactly one
/// branch names (an `allOf` entry, so nothing else of the schema
/// changes). Left alone when a branch does more, when one names
/// `integer` and another `number` (an integer matches both: the rest is
/// not a list of types), or when no type would be left.
fn one_of_types(s: &mut Map<String, Value>) {
    let Some(Value::Array(branches)) = s.get("oneOf") else {
        return;
    };
    let mut named: Vec<Vec<&str>> = Vec::new();
    for b in branches {
        let Value::Object(b) = b else { return };
        if b.keys()
            .any(|k| k != "type" && !ANNOTATIONS.contains(&k.as_str()))
        {
            return;
        }
        let types: Vec<&str> = match b.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => return,
        };
        named.push(types);
    }
    let all: Vec<&str> = named.iter().flatten().copied().collect();
    if all.contains(&"integer") && all.contains(&"number") {
        return;
    }
    let mut once: Vec<&str> = Vec::new();
    for t in &all {
        let branches = named.iter().filter(|b| b.contains(t)).count();
        if branches == 1 && !once.contains(t) {
            once.push(t);
        }
    }
    if once.is_empty() {
        return;
    }
    let types: Vec<Value> = once.iter().map(|&t| Value::from(t)).collect();
    s.remove("oneOf");
    let entry = json!({ "type": types });
    match s.get_mut("allOf") {
        Some(Value::Array(a)) => a.push(entry),
        _ => {
            s.insert("allOf".into(), Value::Array(vec![entry]));
        }
    }
}

/// Keys of a branch that constrains objects only (with annotations).
const OBJECT_KEYWORDS: [&str; 4] = ["properties", "required", "additionalProperties", "type"];

/// A `oneOf` whose branches constrain objects only and are told apart,
/// pair by pair, by a required property's `const`/`enum` values, as an
/// `anyOf` of the same branches, each of which asks for an object (see
/// the module's notes). Left alone otherwise.
fn one_of_discriminated(s: &mut Map<String, Value>) {
    let Some(Value::Array(branches)) = s.get("oneOf") else {
        return;
    };
    if branches.len() < 2 {
        return;
    }
    let mut objects = Vec::with_capacity(branches.len());
    for b in branches {
        let Value::Object(b) = b else { return };
        let only_objects = b.iter().all(|(k, v)| {
            ANNOTATIONS.contains(&k.as_str())
                || (OBJECT_KEYWORDS.contains(&k.as_str()) && (k != "type" || *v == "object"))
        });
        if !only_objects {
            return;
        }
        objects.push(b);
    }
    let values = |b: &Map<String, Value>, p: &str| -> Option<Vec<Value>> {
        let required = b.get("required")?.as_array()?;
        if !required.iter().any(|r| r == p) {
            return None;
        }
        let prop = b.get("properties")?.get(p)?;
        if let Some(c) = prop.get("const") {
            return Some(vec![c.clone()]);
        }
        prop.get("enum")?.as_array().cloned()
    };
    let apart = |x: &Map<String, Value>, y: &Map<String, Value>| {
        let Some(Value::Array(required)) = x.get("required") else {
            return false;
        };
        required
            .iter()
            .filter_map(Value::as_str)
            .any(|p| match (values(x, p), values(y, p)) {
                (Some(a), Some(b)) => !a
                    .iter()
                    .any(|v| b.iter().any(|w| crate::unique::json_eq(v, w))),
                _ => false,
            })
    };
    for i in 0..objects.len() {
        for j in i + 1..objects.len() {
            if !apart(objects[i], objects[j]) {
                return;
            }
        }
    }
    let Some(Value::Array(branches)) = s.remove("oneOf") else {
        return;
    };
    let branches = branches
        .into_iter()
        .map(|mut b| {
            if let Value::Object(m) = &mut b {
                m.insert("type".into(), "object".into());
            }
            b
        })
        .collect();
    let any = json!({ "anyOf": Value::Array(branches) });
    match s.get_mut("allOf") {
        Some(Value::Array(a)) => a.push(any),
        _ => {
            s.insert("allOf".into(), Value::Array(vec![any]));
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
    fn a_one_of_of_types_becomes_the_types_one_branch_names() {
        let port = json!({"oneOf": [{"type": ["string", "null"]}, {"type": ["integer", "null"]}], "description": "x"});
        let engine = for_engine(json!({"properties": {"port": port}}));
        assert_eq!(
            engine["properties"]["port"],
            json!({"allOf": [{"type": ["string", "integer"]}], "description": "x"})
        );
        // A branch that does more, integer beside number, or nothing left:
        // as it was.
        for left in [
            json!({"oneOf": [{"type": "string", "maxLength": 3}, {"type": "integer"}]}),
            json!({"oneOf": [{"type": "integer"}, {"type": "number"}]}),
            json!({"oneOf": [{"type": "string"}, {"type": "string"}]}),
        ] {
            let engine = for_engine(json!({"properties": {"p": left.clone()}}));
            assert_eq!(engine["properties"]["p"], left);
        }
    }

    #[test]
    fn a_one_of_told_apart_by_a_discriminator_becomes_an_any_of_objects() {
        let branch = |kind: Value, extra: &str| json!({"properties": {"type": kind, extra: {"type": "integer"}}, "required": ["type", extra], "additionalProperties": false});
        let one_of = json!({"oneOf": [
            branch(json!({"enum": ["a"]}), "n"),
            branch(json!({"const": "b"}), "m"),
            branch(json!({"enum": ["c", "d"]}), "k")
        ]});
        let engine = for_engine(json!({"properties": {"x": one_of}}));
        let any = &engine["properties"]["x"]["allOf"][0]["anyOf"];
        assert_eq!(any.as_array().map(Vec::len), Some(3), "{engine}");
        assert!(any
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["type"] == "object"));
        assert!(engine["properties"]["x"].get("oneOf").is_none());
        // Values shared, a discriminator not required, or a branch that is
        // not about objects: as it was.
        for left in [
            json!({"oneOf": [branch(json!({"enum": ["a", "b"]}), "n"), branch(json!({"enum": ["b"]}), "m")]}),
            json!({"oneOf": [{"properties": {"type": {"const": "a"}}}, {"properties": {"type": {"const": "b"}}}]}),
            json!({"oneOf": [branch(json!({"const": "a"}), "n"), {"type": "string"}]}),
        ] {
            let engine = for_engine(json!({"properties": {"p": left.clone()}}));
            assert_eq!(engine["properties"]["p"], left);
        }
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
