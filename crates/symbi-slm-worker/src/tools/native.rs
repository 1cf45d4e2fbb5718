//! The conversation for a chat template that renders tools itself (see
//! [`super::format`]), and the check that keeps a caller's text that such
//! a template writes from spelling the model's control tokens.

use serde_json::{json, Value};
use symbiont_slm_protocol::{ChatMessage, RequestError, Tools};

use super::{Dialect, Format};
use crate::template::Extras;

/// The conversation for a template that renders tools itself: the turns
/// as they are (`prompt` last as the user's, unless it is empty), and the
/// fields the template reads besides role and content (Hugging Face's
/// convention, which the templates of Qwen, Hermes, Mistral and Llama
/// follow): `tools` as `{"type": "function", "function": {name,
/// description, parameters}}`, an assistant's `tool_calls` as `{"id",
/// "type": "function", "function": {"name", "arguments": <object>}}`, a
/// `tool` message's `tool_call_id` and the `name` of the function it
/// answers.
///
/// In Mistral's format a call's id is 9 letters and digits (its template
/// refuses others): each id is written as 9 such characters made from it,
/// the same in the call and in its result.
pub fn native(
    history: &[ChatMessage],
    prompt: &str,
    tools: Option<&Tools>,
    format: Format,
) -> (Vec<(String, String)>, Extras) {
    let id = |id: &str| match format.dialect {
        Dialect::Mistral => nine(id),
        _ => id.to_string(),
    };
    let mut turns = Vec::with_capacity(history.len() + 1);
    let mut extras = Extras {
        tools: tools.map(|t| {
            let list: Vec<Value> = t
                .functions
                .iter()
                .map(|f| {
                    let params: Value = serde_json::from_str(&f.parameters).unwrap_or(Value::Null);
                    json!({"type": "function", "function": {
                        "name": f.name, "description": f.description, "parameters": params}})
                })
                .collect();
            Value::Array(list)
        }),
        fields: Vec::with_capacity(history.len() + 1),
    };
    let mut names: Vec<(&str, &str)> = Vec::new();
    for m in history {
        let mut fields = serde_json::Map::new();
        if !m.tool_calls.is_empty() {
            let calls: Vec<Value> = m
                .tool_calls
                .iter()
                .map(|c| {
                    names.push((c.id.as_str(), c.name.as_str()));
                    let args: Value = serde_json::from_str(&c.arguments)
                        .unwrap_or_else(|_| Value::String(c.arguments.clone()));
                    json!({"id": id(&c.id), "type": "function",
                           "function": {"name": c.name, "arguments": args}})
                })
                .collect();
            fields.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(call) = &m.tool_call_id {
            fields.insert("tool_call_id".into(), id(call).into());
            if let Some((_, name)) = names.iter().rev().find(|(i, _)| i == call) {
                fields.insert("name".into(), (*name).into());
            }
        }
        turns.push((m.role.clone(), m.content.clone()));
        extras.fields.push(fields);
    }
    if !prompt.is_empty() || turns.is_empty() {
        turns.push(("user".into(), prompt.to_string()));
        extras.fields.push(serde_json::Map::new());
    }
    (turns, extras)
}

/// 9 letters and digits made from `id` (FNV-1a, in base 62).
pub(super) fn nine(id: &str) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..9)
        .map(|_| {
            let c = DIGITS[(h % 62) as usize] as char;
            h /= 62;
            c
        })
        .collect()
}

/// Refuses `extras` (text the template writes outside the messages'
/// contents, from the caller: tool names, descriptions, schemas, earlier
/// calls, their ids) when any string or key in them spells one of
/// `controls` (the texts of the model's control tokens): the template
/// would write it where the prompt's special tokens are read.
pub fn check_controls(extras: &Extras, controls: &[&str]) -> Result<(), RequestError> {
    fn find<'a>(v: &Value, controls: &[&'a str]) -> Option<&'a str> {
        let spells = |s: &str| controls.iter().find(|c| s.contains(**c)).copied();
        match v {
            Value::String(s) => spells(s),
            Value::Array(a) => a.iter().find_map(|v| find(v, controls)),
            Value::Object(m) => m
                .iter()
                .find_map(|(k, v)| spells(k).or_else(|| find(v, controls))),
            _ => None,
        }
    }
    let tools = extras.tools.iter().map(|t| ("the tools", t));
    let fields = extras
        .fields
        .iter()
        .flat_map(|f| f.values())
        .map(|v| ("an earlier tool call or result", v));
    for (what, v) in tools.chain(fields) {
        if let Some(c) = find(v, controls) {
            return Err(RequestError::BadRequest {
                detail: format!(
                    "{what} spell {c:?}, a control token of this model: its chat template would write it as one"
                ),
            });
        }
    }
    Ok(())
}
