//! Constrained decoding with the real worker and the default model: a
//! schema, JSON mode, a regular expression and a grammar hold every time;
//! a constraint the engine cannot compile is refused before any token,
//! naming what and where; hostile constraints are refused or bounded and
//! cost the other requests nothing but their compile.

// Each test holds the SERIAL guard for its whole body on purpose.
#![allow(clippy::await_holding_lock)]

mod common;

use common::{model_path, profile, serial, worker};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use symbiont_runtime::config::ModelResourceRequirements;
use symbiont_runtime::models::{
    ExecutionOptions, FinishReason, LocalGgufRunner, ResponseFormat, SlmRunnerError,
};

async fn runner() -> LocalGgufRunner {
    LocalGgufRunner::builder(
        model_path(),
        profile(),
        ModelResourceRequirements::default(),
    )
    .worker_path(worker())
    .slots(2)
    .build()
    .await
    .expect("runner")
}

fn greedy(max_tokens: u32, format: Option<ResponseFormat>) -> ExecutionOptions {
    ExecutionOptions {
        temperature: Some(0.0),
        max_tokens: Some(max_tokens),
        response_format: format,
        ..Default::default()
    }
}

fn schema(s: Value) -> Option<ResponseFormat> {
    Some(ResponseFormat::JsonSchema { schema: s })
}

/// A person's record: nested object, enum, integer bounds, array bounds,
/// a pattern, a `$ref`.
fn person() -> Value {
    json!({
        "$defs": {"name": {"type": "string", "minLength": 1, "maxLength": 20}},
        "type": "object",
        "properties": {
            "name": {"$ref": "#/$defs/name"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "role": {"enum": ["engineer", "doctor", "artist"]},
            "phone": {"type": "string", "pattern": "^[0-9]{3}-[0-9]{4}$"},
            "skills": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3}
        },
        "required": ["name", "age", "role", "phone", "skills"],
        "additionalProperties": false
    })
}

/// The checks a validator makes of `person()` (the Python tests use the
/// `jsonschema` package; here the shape is checked by hand).
fn check_person(v: &Value) {
    let o = v.as_object().expect("an object");
    let keys: Vec<&str> = o.keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "age", "role", "phone", "skills"], "{v}");
    let name = o["name"].as_str().unwrap();
    assert!((1..=20).contains(&name.chars().count()), "{v}");
    assert!((0..=120).contains(&o["age"].as_i64().unwrap()), "{v}");
    assert!(["engineer", "doctor", "artist"].contains(&o["role"].as_str().unwrap()));
    let phone = o["phone"].as_str().unwrap();
    assert!(
        phone.len() == 8
            && phone.as_bytes()[3] == b'-'
            && phone
                .bytes()
                .enumerate()
                .all(|(i, b)| i == 3 || b.is_ascii_digit()),
        "{v}"
    );
    let skills = o["skills"].as_array().unwrap();
    assert!((1..=3).contains(&skills.len()), "{v}");
}

#[tokio::test]
async fn a_schema_holds_greedy_and_sampled_and_the_json_is_compact() {
    let _serial = serial();
    let r = runner().await;
    let prompt = "Describe a person called Ada as JSON.";
    // The allowed case that shows the constraint is what makes it JSON:
    // unconstrained, the model writes prose.
    let free = r.execute(prompt, Some(greedy(48, None))).await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&free.response).is_err(),
        "{}",
        free.response
    );
    let mut first_token_ms = Vec::new();
    for (temperature, seed) in [(0.0, 1), (0.8, 7), (1.2, 99)] {
        let o = ExecutionOptions {
            temperature: Some(temperature),
            seed: Some(seed),
            ..greedy(200, schema(person()))
        };
        let out = r.execute(prompt, Some(o)).await.unwrap();
        assert_eq!(
            out.metadata.finish_reason,
            Some(FinishReason::Stop),
            "{}",
            out.response
        );
        let v: Value = serde_json::from_str(&out.response).expect(&out.response);
        check_person(&v);
        // Compact: the text is what serde_json writes for the value.
        assert_eq!(out.response, v.to_string());
        first_token_ms.push(out.metadata.time_to_first_token_ms.unwrap_or(0.0));
    }
    // The first constrained request of a worker pays for the vocabulary's
    // token trie; the others only for their compile.
    eprintln!("first token (ms) of three constrained requests: {first_token_ms:.1?}");
}

#[tokio::test]
async fn json_mode_a_regex_and_a_grammar_hold() {
    let _serial = serial();
    let r = runner().await;
    let out = r
        .execute(
            "List three fruits.",
            Some(greedy(120, Some(ResponseFormat::JsonObject))),
        )
        .await
        .unwrap();
    if out.metadata.finish_reason == Some(FinishReason::Stop) {
        let v: Value = serde_json::from_str(&out.response).expect(&out.response);
        assert!(v.is_object(), "{v}");
    } else {
        assert!(out.response.starts_with('{'), "{}", out.response);
    }
    let out = r
        .execute(
            "What is the date of the moon landing?",
            Some(greedy(
                40,
                Some(ResponseFormat::Regex {
                    pattern: r"[0-9]{4}-[0-9]{2}-[0-9]{2}".into(),
                }),
            )),
        )
        .await
        .unwrap();
    assert_eq!(out.metadata.finish_reason, Some(FinishReason::Stop));
    let b = out.response.as_bytes();
    assert!(
        b.len() == 10
            && b[4] == b'-'
            && b[7] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit()),
        "{}",
        out.response
    );
    let out = r
        .execute(
            "Is water wet? Answer yes or no.",
            Some(greedy(
                10,
                Some(ResponseFormat::Lark {
                    grammar: "start: (\"yes\" | \"no\") \".\"".into(),
                }),
            )),
        )
        .await
        .unwrap();
    assert!(
        ["yes.", "no."].contains(&out.response.as_str()),
        "{}",
        out.response
    );
}

#[tokio::test]
async fn a_schema_the_engine_cannot_compile_is_refused_before_any_token() {
    let _serial = serial();
    let r = runner().await;
    let bad = json!({
        "type": "object",
        "properties": {"a": {"type": "string", "not": {"minLength": 2}}}
    });
    let e = r
        .execute("Hello.", Some(greedy(20, schema(bad))))
        .await
        .unwrap_err();
    let SlmRunnerError::InvalidInput { field, reason } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*field, "response_format");
    assert!(reason.contains("\"not\""), "{reason}");
    assert!(reason.contains("/properties/a/not"), "{reason}");
    // Nothing ran: no prompt read, no token generated; the worker is fine.
    let m = r.metrics();
    assert_eq!((m.input_tokens, m.output_tokens), (0, 0), "{m:?}");
    let ok = r.execute("Hello.", Some(greedy(4, None))).await.unwrap();
    assert!(!ok.response.is_empty());
}

/// Hostile constraints: each is refused or compiles within a bound, and a
/// request running beside them goes on.
#[tokio::test]
async fn hostile_constraints_are_refused_or_bounded() {
    let _serial = serial();
    let r = runner().await;
    r.preload().await.unwrap();
    let mut deep = json!({"type": "integer"});
    for _ in 0..100 {
        deep = json!({"type": "array", "items": deep});
    }
    let huge_enum = json!({"enum": (0..10_000).map(|i| format!("value-{i}")).collect::<Vec<_>>()});
    let mut props = serde_json::Map::new();
    for i in 0..2_000 {
        props.insert(
            format!("p{i}"),
            json!({"type": "string", "pattern": "^(a|aa)+$"}),
        );
    }
    let wide = json!({"type": "object", "properties": props, "required": ["p0", "p1"]});
    let cases: Vec<(&str, ResponseFormat)> = vec![
        (
            "100 nested arrays",
            ResponseFormat::JsonSchema { schema: deep },
        ),
        (
            "an enum of 10,000 strings",
            ResponseFormat::JsonSchema { schema: huge_enum },
        ),
        (
            "2,000 properties with ambiguous patterns",
            ResponseFormat::JsonSchema { schema: wide },
        ),
        (
            "a catastrophic regex",
            ResponseFormat::Regex {
                pattern: "(a+)+(b+)+(c+)+$".into(),
            },
        ),
        (
            "a huge counted repetition",
            ResponseFormat::Regex {
                pattern: "(x{1000}){1000}".into(),
            },
        ),
    ];
    // A long answer runs beside them all.
    let beside = {
        let r = r.clone();
        tokio::spawn(async move {
            r.execute("Tell me a long story about a cat.", Some(greedy(160, None)))
                .await
        })
    };
    let mut refused = 0;
    for (what, format) in cases {
        let started = Instant::now();
        let got = r.execute("Go.", Some(greedy(16, Some(format)))).await;
        let took = started.elapsed();
        eprintln!(
            "{what}: {} in {:.0} ms",
            match &got {
                Ok(out) => format!(
                    "ran ({:?}, {} tokens)",
                    out.metadata.finish_reason,
                    out.metadata.output_tokens.unwrap_or(0)
                ),
                Err(e) => format!("refused ({e})"),
            },
            took.as_secs_f64() * 1e3
        );
        if let Err(e) = &got {
            refused += 1;
            assert!(
                matches!(
                    e,
                    SlmRunnerError::InvalidInput {
                        field: "response_format",
                        ..
                    }
                ),
                "{what}: {e:?}"
            );
        }
        assert!(took < Duration::from_secs(10), "{what} took {took:?}");
    }
    eprintln!("{refused} of them refused");
    let long = beside.await.unwrap().unwrap();
    assert_eq!(long.metadata.output_tokens, Some(160));
}

/// Near the end of its budget a constrained answer is steered to close: a
/// story that would run on ends as whole JSON within `max_tokens`, says
/// `Stop` and how many tokens were chosen for it; one whose closing needs
/// more than the budget is cut and says `Length`.
#[tokio::test]
async fn an_answer_is_closed_within_its_budget_or_says_it_was_cut() {
    let _serial = serial();
    let r = runner().await;
    let story = json!({
        "type": "object",
        "properties": {
            "story": {"type": "string"},
            "characters": {"type": "array", "items": {"type": "string"}},
            "year": {"type": "number"}
        },
        "required": ["story", "characters", "year"],
        "additionalProperties": false
    });
    let prompt = "Tell the whole story of Cinderella in great detail, as JSON: the story text, the characters and the year.";
    let mut steered_any = 0;
    for max_tokens in [32, 48, 64] {
        let out = r
            .execute(prompt, Some(greedy(max_tokens, schema(story.clone()))))
            .await
            .unwrap();
        let m = &out.metadata;
        let steered = m.steered_tokens.unwrap();
        eprintln!(
            "max_tokens {max_tokens}: {steered} steered: {}",
            out.response
        );
        assert_eq!(
            m.finish_reason,
            Some(FinishReason::Stop),
            "{}",
            out.response
        );
        assert!(m.output_tokens.unwrap() <= max_tokens);
        let v: Value = serde_json::from_str(&out.response).expect(&out.response);
        for key in ["story", "characters", "year"] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        steered_any += steered;
    }
    // The model alone would have been cut: the policy chose tokens.
    assert!(steered_any > 0);
    // Three required fields cannot close in 3 tokens: cut, and it says so.
    let out = r
        .execute(prompt, Some(greedy(3, schema(story.clone()))))
        .await
        .unwrap();
    assert_eq!(out.metadata.finish_reason, Some(FinishReason::Length));
    assert!(serde_json::from_str::<Value>(&out.response).is_err());
    // Without a constraint nothing is steered.
    let out = r.execute(prompt, Some(greedy(8, None))).await.unwrap();
    assert_eq!(out.metadata.steered_tokens, None);
}

/// `uniqueItems`, which the engine does not implement, holds: asked to
/// repeat a word, the model writes three different items where the same
/// schema without the keyword (the allowed twin, proving the probe)
/// lets it repeat one.
#[tokio::test]
async fn unique_items_stay_unique_where_the_model_would_repeat() {
    let _serial = serial();
    let r = runner().await;
    let tags = |unique: bool| {
        json!({
            "type": "object",
            "properties": {
                "tags": {
                    "type": "array",
                    "items": {"enum": ["cat", "dog", "owl", "fox"]},
                    "minItems": 3,
                    "maxItems": 3,
                    "uniqueItems": unique
                }
            },
            "required": ["tags"],
            "additionalProperties": false
        })
    };
    let prompt = "Tag this with cat, cat and cat.";
    let items = |text: &str| -> Vec<Value> {
        let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        v["tags"].as_array().expect("tags").clone()
    };
    let free = r
        .execute(prompt, Some(greedy(60, schema(tags(false)))))
        .await
        .unwrap();
    let repeated = items(&free.response);
    assert!(
        repeated.iter().skip(1).any(|x| x == &repeated[0]),
        "the probe: without uniqueItems the model repeats ({})",
        free.response
    );
    let held = r
        .execute(prompt, Some(greedy(60, schema(tags(true)))))
        .await
        .unwrap();
    assert_eq!(
        held.metadata.finish_reason,
        Some(FinishReason::Stop),
        "{held:?}"
    );
    let unique = items(&held.response);
    assert_eq!(unique.len(), 3, "{}", held.response);
    for (i, x) in unique.iter().enumerate() {
        assert!(!unique[..i].contains(x), "repeated {x}: {}", held.response);
    }
}
