//! `oneOf`s the engine cannot prove disjoint, made ones it can: see the
//! notes of [`super`].

use super::{add_to_all_of, Budget, ANNOTATIONS};
use serde_json::{json, Map, Value};

/// A `oneOf` of branches that only name types, as the types exactly one
/// branch names (an `allOf` entry, so nothing else of the schema
/// changes). Left alone when a branch does more, when one names
/// `integer` and another `number` (an integer matches both: the rest is
/// not a list of types), or when no type would be left.
pub(super) fn one_of_types(s: &mut Map<String, Value>) {
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
    add_to_all_of(s, json!({ "type": types }));
}

/// Whether `branches` (a `oneOf`'s) each name their types and no two
/// share one (`integer` within `number` counts as shared): then at most
/// one branch can match any value, whatever else the branches say, so
/// narrowing inside them keeps the `oneOf`'s meaning.
pub(super) fn disjoint_by_type(branches: &[Value]) -> bool {
    let mut seen: Vec<&str> = Vec::new();
    for b in branches {
        let types: Vec<&str> = match b.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => return false,
        };
        for t in &types {
            let clash = |u: &&str| {
                u == t || matches!((*u, *t), ("integer", "number") | ("number", "integer"))
            };
            if seen.iter().any(clash) {
                return false;
            }
        }
        seen.extend(types);
    }
    true
}

/// Keys that make a schema a resource of its own (its `$ref`s resolve
/// against it): such a schema is not copied elsewhere.
const RESOURCE_KEYS: [&str; 5] = ["$id", "id", "$anchor", "$dynamicAnchor", "$recursiveAnchor"];

/// Each branch of a `oneOf` that is only a local `$ref` (with
/// annotations), replaced by a copy of the schema it points to in `root`
/// (the caller's schema before any rewrite), while `budget` (bytes of
/// JSON copied) lasts: the engine does not look through a `$ref` to prove
/// branches disjoint (Prometheus' rules: a recording rule and an alerting
/// rule, each requiring a property the other forbids). The copy's own
/// `$ref`s point into the same root, so they still resolve; a recursive
/// schema is copied one level per visit, and the budget bounds the whole.
pub(super) fn one_of_refs(s: &mut Map<String, Value>, root: &Value, budget: &mut Budget) {
    let Some(Value::Array(branches)) = s.get_mut("oneOf") else {
        return;
    };
    let target = |b: &Value| -> Option<&Value> {
        let m = b.as_object()?;
        let r = m.get("$ref")?.as_str()?;
        if m.keys()
            .any(|k| k != "$ref" && !ANNOTATIONS.contains(&k.as_str()))
        {
            return None;
        }
        let pointer = crate::unique::local_pointer(r).filter(|p| !p.is_empty())?;
        let t = root.pointer(&pointer)?;
        let own_resource = RESOURCE_KEYS.iter().any(|k| t.get(*k).is_some());
        (t.is_object() && !own_resource).then_some(t)
    };
    let copies: Vec<(usize, &Value)> = branches
        .iter()
        .enumerate()
        .filter_map(|(i, b)| Some((i, target(b)?)))
        .collect();
    // All or none: one branch left a `$ref` keeps the engine from the proof.
    if copies.is_empty() || !copies.iter().all(|(_, t)| budget.take(t, 1)) {
        return;
    }
    for (i, t) in copies {
        branches[i] = t.clone();
    }
}

/// Keys of a branch that constrains objects only (with annotations).
const OBJECT_KEYWORDS: [&str; 4] = ["properties", "required", "additionalProperties", "type"];

/// A `oneOf` whose branches constrain objects only and are told apart,
/// pair by pair, by a required property's `const`/`enum` values, as an
/// `anyOf` of the same branches, each of which asks for an object (see
/// the module's notes). Left alone otherwise.
pub(super) fn one_of_discriminated(s: &mut Map<String, Value>) {
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
    add_to_all_of(s, json!({ "anyOf": Value::Array(branches) }));
}

#[cfg(test)]
mod tests {
    use super::super::for_engine;
    use serde_json::{json, Value};

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
    fn a_one_of_of_local_refs_is_read_through_them() {
        let rule = |name: &str| json!({"type": "object", "properties": {name: {"type": "string"}}, "required": [name], "additionalProperties": false});
        let schema = json!({
            "definitions": {"recording": rule("record"), "alerting": rule("alert"), "own": {"$id": "x", "type": "string"}},
            "properties": {
                "rule": {"oneOf": [{"$ref": "#/definitions/recording", "description": "r"}, {"$ref": "#/definitions/alerting"}]},
                "left": {"oneOf": [{"$ref": "#/definitions/own"}, {"$ref": "#/definitions/recording", "type": "object"}, {"$ref": "#"}, {"$ref": "other.json#/x"}]}
            }
        });
        let engine = for_engine(schema.clone());
        assert_eq!(
            engine["properties"]["rule"]["oneOf"],
            json!([rule("record"), rule("alert")])
        );
        // A resource of its own, a `$ref` beside a keyword, the root, and
        // another document: as they were.
        assert_eq!(engine["properties"]["left"], schema["properties"]["left"]);
        // Inside a resource of its own, `#/…` is that resource's: left.
        let inner = json!({"$id": "urn:inner", "definitions": {"recording": {"type": "string"}},
            "oneOf": [{"$ref": "#/definitions/recording"}, {"type": "integer"}]});
        let engine = for_engine(json!({"definitions": {"recording": rule("record")},
            "properties": {"inner": inner.clone()}}));
        assert_eq!(engine["properties"]["inner"], inner);
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
}
