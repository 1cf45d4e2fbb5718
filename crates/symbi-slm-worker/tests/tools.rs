//! Tool calls with the real worker and the default model (whose template
//! has no tool format: the generic one): a forced call (a named function
//! or `required`) comes back whole every time, its arguments valid under
//! the function's parameters, streamed as a named first piece then
//! argument text; `auto` lets the model answer in text; a tool result
//! goes back in the history; bad tool lists are refused before any token.

// Each test holds the SERIAL guard for its whole body on purpose.
#![allow(clippy::await_holding_lock)]

mod common;

use common::{model_path, profile, serial, worker};

use futures::StreamExt;
use serde_json::{json, Value};
use symbiont_runtime::config::ModelResourceRequirements;
use symbiont_runtime::models::{
    ChatMessage, ChatRole, ExecutionOptions, FinishReason, LocalGgufRunner, SlmRunnerError,
    StreamEvent, ToolCall, ToolChoice, ToolDefinition,
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

fn weather() -> ToolDefinition {
    ToolDefinition {
        name: "get_weather".into(),
        description: "The current weather in a city.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 40},
                "unit": {"enum": ["celsius", "fahrenheit"]}
            },
            "required": ["city", "unit"],
            "additionalProperties": false
        }),
    }
}

fn add() -> ToolDefinition {
    ToolDefinition {
        name: "add".into(),
        description: "Adds two integers.".into(),
        parameters: json!({
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
            "additionalProperties": false
        }),
    }
}

fn options(choice: Option<ToolChoice>, temperature: f32, parallel: bool) -> ExecutionOptions {
    ExecutionOptions {
        temperature: Some(temperature),
        seed: Some(7),
        max_tokens: Some(96),
        tools: vec![weather(), add()],
        tool_choice: choice,
        parallel_tool_calls: Some(parallel),
        ..Default::default()
    }
}

/// The checks a validator makes of the two functions' arguments.
fn check_call(c: &ToolCall) {
    assert!(c.id.starts_with("call_") && c.id.len() == 29, "{c:?}");
    let args: Value = serde_json::from_str(&c.arguments).expect("arguments are JSON");
    let o = args.as_object().expect("an object");
    match c.name.as_str() {
        "get_weather" => {
            let keys: Vec<&str> = o.keys().map(String::as_str).collect();
            assert_eq!(keys, ["city", "unit"], "{args}");
            let city = o["city"].as_str().unwrap();
            assert!((1..=40).contains(&city.chars().count()), "{args}");
            assert!(["celsius", "fahrenheit"].contains(&o["unit"].as_str().unwrap()));
        }
        "add" => {
            let keys: Vec<&str> = o.keys().map(String::as_str).collect();
            assert_eq!(keys, ["a", "b"], "{args}");
            assert!(o["a"].is_i64() && o["b"].is_i64(), "{args}");
        }
        other => panic!("a call to {other}"),
    }
}

/// Forced calls, greedy and sampled: a named function is the one called;
/// `required` calls one of them; each call is whole and valid, the answer
/// ends `ToolCalls` with no text.
#[tokio::test]
async fn a_forced_call_is_whole_and_valid_every_time() {
    let _serial = serial();
    let r = runner().await;
    for temperature in [0.0, 0.9, 1.3] {
        for (choice, only) in [
            (
                ToolChoice::Function("get_weather".into()),
                Some("get_weather"),
            ),
            (ToolChoice::Function("add".into()), Some("add")),
            (ToolChoice::Required, None),
        ] {
            let o = options(Some(choice.clone()), temperature, false);
            let q = "What is the weather like in Paris today?";
            let res = r.execute(q, Some(o)).await.unwrap();
            let m = &res.metadata;
            assert_eq!(m.finish_reason, Some(FinishReason::ToolCalls), "{res:?}");
            assert_eq!(res.tool_calls.len(), 1, "{res:?}");
            assert_eq!(res.response, "", "{res:?}");
            check_call(&res.tool_calls[0]);
            if let Some(name) = only {
                assert_eq!(res.tool_calls[0].name, name);
            }
        }
    }
}

/// Streamed, a call comes as a first piece with its id and name, then
/// pieces of its arguments, whose concatenation is the result's call.
#[tokio::test]
async fn a_streamed_call_comes_in_pieces_that_make_the_call() {
    let _serial = serial();
    let r = runner().await;
    let o = options(Some(ToolChoice::Function("get_weather".into())), 0.0, false);
    let mut stream = Box::pin(r.execute_stream("Weather in Oslo, in celsius?", Some(o)));
    let (mut first, mut args, mut pieces) = (None, String::new(), 0);
    let result = loop {
        match stream.next().await.expect("an event").unwrap() {
            StreamEvent::ToolCall(d) => {
                assert_eq!(d.index, 0);
                if pieces == 0 {
                    assert!(d.id.is_some() && d.name.is_some(), "{d:?}");
                    first = Some((d.id.unwrap(), d.name.unwrap()));
                } else {
                    assert!(d.id.is_none() && d.name.is_none(), "{d:?}");
                }
                args.push_str(&d.arguments);
                pieces += 1;
            }
            StreamEvent::Token(t) => panic!("text {t:?} in a forced call"),
            StreamEvent::Done(r) => break *r,
            other => panic!("{other:?}"),
        }
    };
    assert!(pieces >= 3, "{pieces} pieces: not streamed");
    let (id, name) = first.unwrap();
    assert_eq!(result.tool_calls.len(), 1);
    assert_eq!(result.tool_calls[0].id, id);
    assert_eq!(result.tool_calls[0].name, name);
    assert_eq!(result.tool_calls[0].arguments, args);
    check_call(&result.tool_calls[0]);
}

/// `auto`: the model may answer in text (nothing is constrained before a
/// call's marker), and whatever it does, the result is either text ending
/// `Stop`/`Length` or whole calls ending `ToolCalls`. A tool result goes
/// back in the history and the answer after it is the model's.
#[tokio::test]
async fn auto_answers_in_text_or_whole_calls_and_takes_a_tool_result() {
    let _serial = serial();
    let r = runner().await;
    for q in [
        "Say hello in one word.",
        "What is the weather in Rome? Use the tool.",
        "Add 2 and 3 with the add tool.",
    ] {
        let res = r
            .execute(q, Some(options(Some(ToolChoice::Auto), 0.0, true)))
            .await
            .unwrap();
        match res.metadata.finish_reason {
            Some(FinishReason::ToolCalls) => {
                assert!(!res.tool_calls.is_empty());
                res.tool_calls.iter().for_each(check_call);
            }
            Some(FinishReason::Stop | FinishReason::Length) => {
                assert!(res.tool_calls.is_empty(), "{res:?}");
                assert!(!res.response.contains("<tool_call>"), "{res:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    // A round trip: the call, its result, the answer.
    let first = r
        .execute(
            "Weather in Lyon, celsius?",
            Some(options(
                Some(ToolChoice::Function("get_weather".into())),
                0.0,
                false,
            )),
        )
        .await
        .unwrap();
    let call = first.tool_calls[0].clone();
    let mut assistant = ChatMessage::new(ChatRole::Assistant, "");
    assistant.tool_calls = vec![call.clone()];
    let mut result = ChatMessage::new(ChatRole::Tool, r#"{"temperature": 21, "sky": "clear"}"#);
    result.tool_call_id = Some(call.id.clone());
    let o = ExecutionOptions {
        history: vec![
            ChatMessage::new(ChatRole::User, "Weather in Lyon, celsius?"),
            assistant,
            result,
        ],
        tool_choice: Some(ToolChoice::None),
        ..options(None, 0.0, false)
    };
    let answer = r
        .execute("Tell me in one sentence.", Some(o))
        .await
        .unwrap();
    assert!(answer.tool_calls.is_empty());
    assert!(!answer.response.trim().is_empty(), "{answer:?}");
    assert!(answer.metadata.input_tokens.unwrap() > 20);
}

/// Bad tool lists are refused before any token, naming the field.
#[tokio::test]
async fn bad_tool_lists_are_refused_naming_the_field() {
    let _serial = serial();
    let r = runner().await;
    let refused = |o: ExecutionOptions| {
        let r = r.clone();
        async move {
            match r.execute("Hi", Some(o)).await {
                Err(SlmRunnerError::InvalidInput { field, reason }) => (field, reason),
                other => panic!("{other:?}"),
            }
        }
    };
    let mut bad_name = options(None, 0.0, false);
    bad_name.tools[0].name = "get weather!".into();
    assert_eq!(refused(bad_name).await.0, "tools");
    let mut twice = options(None, 0.0, false);
    twice.tools.push(add());
    assert!(refused(twice).await.1.contains("twice"));
    let unknown = options(Some(ToolChoice::Function("nope".into())), 0.0, false);
    assert_eq!(refused(unknown).await.0, "tool_choice");
    let mut with_stop = options(None, 0.0, false);
    with_stop.stop = vec!["x".into()];
    assert_eq!(refused(with_stop).await.0, "stop");
    let mut not_object = options(None, 0.0, false);
    not_object.tools[1].parameters = json!([1, 2]);
    assert_eq!(refused(not_object).await.0, "tools");
    // A schema the engine cannot compile: before any token, named.
    let mut uncompilable = options(Some(ToolChoice::Required), 0.0, false);
    uncompilable.tools[1].parameters =
        json!({"type": "object", "properties": {"a": {"not": {"type": "string"}}}});
    let (field, reason) = refused(uncompilable).await;
    assert_eq!(field, "tools", "{reason}");
    assert!(reason.contains("not"), "{reason}");
}
