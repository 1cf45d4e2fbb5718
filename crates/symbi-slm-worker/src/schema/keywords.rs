//! Keywords the engine does not implement, said with ones it does:
//! `if`/`then`/`else`, `propertyNames`, and `minProperties` beside
//! optional properties. Each rewrite either keeps the schema's meaning or
//! narrows it (every answer the rewritten schema allows, the caller's
//! allows too); none widens it.

use super::{add_to_all_of, Budget, ANNOTATIONS};
use serde_json::{json, Map, Value};

/// `if`/`then`/`else` as an `anyOf` (an `allOf` entry, so nothing else of
/// the schema changes). With I the condition, T and E the branches (a
/// missing one allows anything), an answer is valid exactly when it
/// satisfies I and T, or "not I" and E. The engine has no `not`:
///
/// - I is written as it is, unless it is itself `{"not": N}`;
/// - "not I" is known only where I is `{"not": N}` (then it is N) or a
///   boolean;
/// - where either is unknown, "T and E" takes its place: an answer that
///   satisfies both satisfies the condition whatever I says.
///
/// So the rewrite is exact where I is plain and there is no `then`
/// (I or E), or I is a negation and there is no `else` (N or T), and
/// narrower, never wider, elsewhere.
///
/// Before draft 7 these keywords meant nothing (`old_draft`): they are
/// taken out.
pub(super) fn conditional(
    s: &mut Map<String, Value>,
    old_draft: bool,
    exact_only: bool,
    budget: &mut Budget,
) {
    if !s.contains_key("if") && !s.contains_key("then") && !s.contains_key("else") {
        return;
    }
    if old_draft || !s.contains_key("if") {
        // Before draft 7, and `then`/`else` without `if`: ignored by the
        // specification.
        for k in ["if", "then", "else"] {
            s.remove(k);
        }
        return;
    }
    let cond = &s["if"];
    let not_cond = negation(cond);
    let plain = !is_negation(cond);
    let (has_then, has_else) = (s.contains_key("then"), s.contains_key("else"));
    let fallback = !plain || not_cond.is_none();
    // I and T adds nothing beside a fallback of T alone.
    let positive = plain && (!fallback || has_else);
    let exact = !fallback || (plain && !has_then) || (!plain && !has_else);
    if exact_only && !exact {
        return;
    }
    // `then` goes in the positive branch and the fallback, `else` in the
    // negative branch and the fallback: a second use is a copy.
    let then_copies = usize::from(positive) + usize::from(fallback);
    let else_copies = usize::from(not_cond.is_some()) + usize::from(fallback);
    let fits = |v: Option<&Value>, uses: usize, budget: &mut Budget| {
        v.is_none_or(|v| budget.take(v, uses.saturating_sub(1)))
    };
    if !fits(s.get("then"), then_copies, budget) || !fits(s.get("else"), else_copies, budget) {
        return;
    }
    let cond = s.remove("if");
    let then = s.remove("then");
    let other = s.remove("else");
    let mut any: Vec<Value> = Vec::new();
    let fallback = fallback.then(|| both(then.clone(), other.clone()));
    if positive {
        any.push(both(cond, then));
    }
    if let Some(n) = not_cond {
        any.push(both(Some(n), other));
    }
    any.extend(fallback);
    any.retain(|b| *b != Value::Bool(false));
    if any.iter().any(|b| *b == Value::Bool(true)) {
        return;
    }
    let entry = match any.len() {
        0 => Value::Bool(false),
        1 => any.remove(0),
        _ => json!({ "anyOf": any }),
    };
    add_to_all_of(s, entry);
}

/// A schema that holds where both do (a missing one holds everywhere).
fn both(a: Option<Value>, b: Option<Value>) -> Value {
    match (a, b) {
        (None | Some(Value::Bool(true)), None | Some(Value::Bool(true))) => Value::Bool(true),
        (Some(Value::Bool(false)), _) | (_, Some(Value::Bool(false))) => Value::Bool(false),
        (None | Some(Value::Bool(true)), Some(x)) | (Some(x), None | Some(Value::Bool(true))) => x,
        (Some(a), Some(b)) => json!({"allOf": [a, b]}),
    }
}

/// Whether `schema` is `{"not": N}` (with annotations).
fn is_negation(schema: &Value) -> bool {
    schema.as_object().is_some_and(|m| {
        m.contains_key("not")
            && m.keys()
                .all(|k| k == "not" || ANNOTATIONS.contains(&k.as_str()))
    })
}

/// The schema that holds exactly where `schema` does not, when it is
/// plain: a boolean, or `{"not": N}` (with annotations).
fn negation(schema: &Value) -> Option<Value> {
    match schema {
        Value::Bool(b) => Some(Value::Bool(!b)),
        _ if is_negation(schema) => schema.get("not").cloned(),
        _ => None,
    }
}

/// `propertyNames`, where it can be said otherwise:
///
/// - It allows every name (`true`, `{}`, `{"type": "string"}`: names are
///   strings): taken out.
/// - It lists the names (`enum`, `const`; strings): declared properties of
///   other names become `false` (not allowed), each listed name not
///   declared gets the schema of `additionalProperties`, and no other
///   property is allowed. Left alone beside `patternProperties`, or when a
///   required property is not listed.
/// - It is only a `pattern`, and the schema declares no properties: the
///   pattern becomes the one pattern property, with the schema of
///   `additionalProperties`, and no other property is allowed. Left alone
///   beside `patternProperties`.
///
/// Left alone otherwise (the engine then refuses it, naming it).
pub(super) fn property_names(s: &mut Map<String, Value>, budget: &mut Budget) {
    let Some(names) = s.get("propertyNames") else {
        return;
    };
    let keys = |m: &Map<String, Value>, allowed: &[&str]| {
        m.keys()
            .all(|k| allowed.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()))
    };
    let all_names = match names {
        Value::Bool(true) => true,
        Value::Object(m) => keys(m, &["type"]) && m.get("type").is_none_or(|t| t == "string"),
        _ => false,
    };
    if all_names {
        s.remove("propertyNames");
        return;
    }
    let Value::Object(names) = names else { return };
    if s.contains_key("patternProperties") {
        return;
    }
    let extra = s
        .get("additionalProperties")
        .cloned()
        .unwrap_or(Value::Bool(true));
    if keys(names, &["type", "enum", "const"]) && names.get("type").is_none_or(|t| t == "string") {
        let listed: Vec<String> = match (names.get("const"), names.get("enum")) {
            (Some(Value::String(c)), None) => vec![c.clone()],
            (None, Some(Value::Array(e))) => e
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => return,
        };
        let undeclared = listed
            .iter()
            .filter(|n| {
                s.get("properties")
                    .is_none_or(|p| p.get(n.as_str()).is_none())
            })
            .count();
        if !budget.take(&extra, undeclared) {
            return;
        }
        let required_listed = s.get("required").and_then(Value::as_array).is_none_or(|r| {
            r.iter()
                .all(|n| n.as_str().is_some_and(|n| listed.iter().any(|l| l == n)))
        });
        if !required_listed {
            return;
        }
        let mut properties = match s.remove("properties") {
            Some(Value::Object(p)) => p,
            _ => Map::new(),
        };
        for (name, schema) in properties.iter_mut() {
            if !listed.contains(name) {
                *schema = Value::Bool(false);
            }
        }
        for name in listed {
            properties.entry(name).or_insert_with(|| extra.clone());
        }
        s.insert("properties".into(), Value::Object(properties));
    } else if keys(names, &["type", "pattern"])
        && names.get("type").is_none_or(|t| t == "string")
        && !s.contains_key("properties")
    {
        let Some(Value::String(pattern)) = names.get("pattern") else {
            return;
        };
        let mut patterns = Map::new();
        patterns.insert(pattern.clone(), extra);
        s.insert("patternProperties".into(), Value::Object(patterns));
    } else {
        return;
    }
    s.insert("additionalProperties".into(), Value::Bool(false));
    s.remove("propertyNames");
}

/// `minProperties: n` beside optional properties, which the engine
/// implements only as "one of these, no other" (`n` of 1, no other
/// property allowed). With `k` more properties needed than `required`
/// names:
///
/// - `k` is 1: one of the declared optional properties is required (an
///   `anyOf` of each).
/// - `k` is more: the first `k` declared optional properties are
///   required.
///
/// Narrower than the keyword (a property not declared would count too),
/// never wider. Left alone when fewer optional properties are declared
/// than are needed, and where the engine implements it.
pub(super) fn min_properties(s: &mut Map<String, Value>) {
    let Some(n) = s.get("minProperties").and_then(Value::as_u64) else {
        return;
    };
    let mut required: Vec<&str> = s
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    required.sort_unstable();
    required.dedup();
    let optional: Vec<String> = s
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter(|(name, schema)| {
                    !required.contains(&name.as_str()) && **schema != Value::Bool(false)
                })
                .map(|(name, _)| name.clone())
                .collect()
        })
        .unwrap_or_default();
    let needed = (n as usize).saturating_sub(required.len());
    let engine_does_it = needed == 1
        && s.get("additionalProperties") == Some(&Value::Bool(false))
        && !s.contains_key("patternProperties");
    if needed == 0 || engine_does_it || optional.len() < needed {
        return;
    }
    s.remove("minProperties");
    if needed == 1 {
        let each: Vec<Value> = optional.iter().map(|p| json!({"required": [p]})).collect();
        add_to_all_of(s, json!({"anyOf": each}));
    } else {
        let more: Vec<Value> = optional.into_iter().take(needed).map(Value::from).collect();
        add_to_all_of(s, json!({"required": more}));
    }
}

#[cfg(test)]
mod tests {
    use super::super::for_engine;
    use serde_json::{json, Value};

    fn rewritten(schema: Value) -> Value {
        let mut engine = for_engine(json!({"properties": {"p": schema}}));
        engine["properties"]["p"].take()
    }

    #[test]
    fn if_then_else_becomes_an_any_of_that_is_never_wider() {
        let (i, t, e) = (
            json!({"properties": {"v": {"const": 3}}}),
            json!({"required": ["a"]}),
            json!({"required": ["b"]}),
        );
        assert_eq!(
            rewritten(json!({"type": "object", "if": i, "then": t, "else": e})),
            json!({"type": "object", "allOf": [{"anyOf": [{"allOf": [i, t]}, {"allOf": [t, e]}]}]})
        );
        assert_eq!(
            rewritten(json!({"if": i, "else": e})),
            json!({"allOf": [{"anyOf": [i, e]}]})
        );
        assert_eq!(
            rewritten(json!({"if": i, "then": t})),
            json!({"allOf": [t]})
        );
        // A negated condition is read exactly.
        let w = json!({"properties": {"webpack": {"enum": [false]}}});
        assert_eq!(
            rewritten(json!({"if": {"not": w}, "then": t})),
            json!({"allOf": [{"anyOf": [w, t]}]})
        );
        assert_eq!(
            rewritten(json!({"if": {"not": w}, "then": t, "else": e})),
            json!({"allOf": [{"anyOf": [{"allOf": [w, e]}, {"allOf": [t, e]}]}]})
        );
        // Boolean conditions pick a branch.
        assert_eq!(
            rewritten(json!({"if": true, "then": t, "else": e})),
            json!({"allOf": [t]})
        );
        assert_eq!(
            rewritten(json!({"if": false, "then": t, "else": e})),
            json!({"allOf": [e]})
        );
        assert_eq!(rewritten(json!({"if": false, "then": t})), json!({}));
        // `if` alone, `then` without `if`: nothing to hold.
        assert_eq!(rewritten(json!({"if": i})), json!({}));
        assert_eq!(rewritten(json!({"then": t})), json!({}));
        // Conditions inside a branch are rewritten too.
        let nested = rewritten(json!({"if": i, "then": {"if": i, "else": e}}));
        assert_eq!(nested, json!({"allOf": [{"allOf": [{"anyOf": [i, e]}]}]}));
    }

    #[test]
    fn if_then_else_means_nothing_in_draft_6() {
        let engine = for_engine(json!({
            "$schema": "http://json-schema.org/draft-06/schema#",
            "if": {"required": ["a"]}, "then": {"required": ["b"]}
        }));
        assert!(
            engine.get("allOf").is_none() && engine.get("if").is_none(),
            "{engine}"
        );
    }

    #[test]
    fn property_names_said_with_properties_or_patterns() {
        // Every name allowed.
        assert_eq!(
            rewritten(json!({"type": "object", "propertyNames": {"type": "string"}})),
            json!({"type": "object"})
        );
        // Listed names.
        assert_eq!(
            rewritten(json!({
                "properties": {"a": {"type": "integer"}, "z": {"type": "string"}},
                "additionalProperties": {"type": "boolean"},
                "propertyNames": {"enum": ["a", "b"]}
            })),
            json!({
                "properties": {"a": {"type": "integer"}, "z": false, "b": {"type": "boolean"}},
                "additionalProperties": false
            })
        );
        // A pattern, where no property is declared.
        assert_eq!(
            rewritten(
                json!({"additionalProperties": {"type": "integer"}, "propertyNames": {"pattern": "^x-"}})
            ),
            json!({"patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": false})
        );
        // Left alone: a required name not listed, a pattern beside declared
        // properties or pattern properties, a length.
        for left in [
            json!({"required": ["z"], "propertyNames": {"enum": ["a"]}}),
            json!({"properties": {"a": {}}, "propertyNames": {"pattern": "^x-"}}),
            json!({"patternProperties": {"^y": {}}, "propertyNames": {"pattern": "^x-"}}),
            json!({"propertyNames": {"maxLength": 3}}),
        ] {
            assert_eq!(rewritten(left.clone()), left);
        }
    }

    #[test]
    fn min_properties_requires_declared_properties() {
        let props = json!({"a": {}, "b": {}, "c": false, "d": {}});
        assert_eq!(
            rewritten(json!({"properties": props, "minProperties": 1})),
            json!({"properties": props, "allOf": [{"anyOf": [{"required": ["a"]}, {"required": ["b"]}, {"required": ["d"]}]}]})
        );
        assert_eq!(
            rewritten(json!({"properties": props, "required": ["b"], "minProperties": 3})),
            json!({"properties": props, "required": ["b"], "allOf": [{"required": ["a", "d"]}]})
        );
        // Left alone: enough required, too few declared, or the engine's
        // own case.
        for left in [
            json!({"properties": props, "required": ["a"], "minProperties": 1}),
            json!({"properties": props, "minProperties": 4}),
            json!({"properties": props, "additionalProperties": false, "minProperties": 1}),
        ] {
            assert_eq!(rewritten(left.clone()), left);
        }
    }

    /// Nesting that would copy a branch at every level (2^30 copies from a
    /// schema of a kilobyte) stops at the copy budget: what is left is
    /// left for the engine to refuse by name, and the work is bounded.
    #[test]
    fn nested_copies_stop_at_the_budget() {
        let mut conditional = json!({"type": "string"});
        for _ in 0..30 {
            conditional = json!({"if": {}, "else": {}, "then": conditional});
        }
        let started = std::time::Instant::now();
        let out = for_engine(conditional.clone()).to_string();
        assert!(out.len() < 600 * 1024, "{} bytes", out.len());
        assert!(
            out.contains("\"if\""),
            "the deepest conditions are left as they were"
        );
        let mut names = json!({"type": "integer"});
        for _ in 0..5 {
            let listed: Vec<String> = (0..100).map(|i| format!("n{i}")).collect();
            names = json!({"propertyNames": {"enum": listed}, "additionalProperties": names});
        }
        let out = for_engine(names).to_string();
        assert!(out.len() < 600 * 1024, "{} bytes", out.len());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// Below a `oneOf` the engine is left to prove, a rewrite that narrows
    /// is not made (a narrower branch could be proved disjoint from one
    /// it is not: `{"z":1}` matches both branches here, so it is invalid);
    /// an exact one is.
    #[test]
    fn below_a_one_of_only_exact_rewrites() {
        let narrowing = json!({"type": "object", "properties": {"y": {"const": 2}},
            "if": {"required": ["x"]}, "then": {"required": ["y"]}, "else": {"required": ["z"]}});
        let exact =
            json!({"type": "object", "if": {"required": ["x"]}, "else": {"required": ["z"]}});
        let schema = json!({"oneOf": [{"type": "object", "properties": {"y": {"const": 1}}}, narrowing, exact]});
        let out = for_engine(schema.clone());
        assert_eq!(out["oneOf"][1], schema["oneOf"][1]);
        assert!(out["oneOf"][2].get("if").is_none(), "{out}");
        // Nor a narrowing format, nor `minProperties`.
        let out = for_engine(json!({"oneOf": [
            {"format": "uri-reference"},
            {"type": "object", "properties": {"a": {}}, "minProperties": 1}]}));
        assert_eq!(out["oneOf"][0]["format"], "uri-reference");
        assert_eq!(out["oneOf"][1]["minProperties"], 1);
        // Branches of disjoint types (GitHub's funding: a string or a
        // list of them) cannot be fooled: narrowing there is made.
        let out = for_engine(json!({"oneOf": [
            {"type": "string", "format": "uri-reference"},
            {"type": "array", "items": {"type": "string", "format": "uri-reference"}}]}));
        assert!(out["oneOf"][0].get("format").is_none(), "{out}");
        assert!(out["oneOf"][1]["items"].get("format").is_none(), "{out}");
        // `integer` within `number`: not disjoint.
        let out = for_engine(json!({"oneOf": [
            {"type": "number"}, {"type": "integer", "minProperties": 1, "format": "uri-reference"}]}));
        assert_eq!(out["oneOf"][1]["format"], "uri-reference");
    }
}
