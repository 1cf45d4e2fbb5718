//! The two wire formats a remote model speaks: OpenAI's Chat Completions
//! (also every OpenAI-compatible server) and Anthropic's Messages, both
//! streamed as server-sent events.

use serde_json::{json, Value};

use crate::models::{
    ChatRole, ExecutionOptions, FinishReason, ResponseFormat, SlmRunnerError, ToolCallDelta,
    ToolChoice,
};

/// Which API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// OpenAI's own service: `max_completion_tokens`, no extensions.
    OpenAi,
    /// An OpenAI-compatible server: `max_tokens`, and `top_k`, `min_p`,
    /// `repeat_penalty` passed on when asked for.
    Compatible,
    /// Anthropic's Messages API.
    Anthropic,
}

/// Tokens asked of Anthropic when the caller sets no `max_tokens` (the API
/// requires one).
pub(crate) const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 1024;
/// A call piece's index when the provider sent none (some
/// OpenAI-compatible servers): a piece naming a function begins a call,
/// another continues the last one.
pub(crate) const NO_INDEX: u32 = u32::MAX;

/// The `anthropic-version` header sent.
pub(crate) const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The request body for `prompt` after `options.history`.
pub(crate) fn body(
    api: Api,
    model: &str,
    prompt: &str,
    o: &ExecutionOptions,
) -> Result<Value, SlmRunnerError> {
    let unsupported = |field: &'static str| SlmRunnerError::InvalidInput {
        field,
        reason: format!("{field} is not an option of OpenAI's API; leave it unset for this model"),
    };
    let role = |r: ChatRole| match r {
        ChatRole::System => "system",
        ChatRole::User => "user",
        ChatRole::Assistant => "assistant",
        ChatRole::Tool => "tool",
    };
    match api {
        Api::OpenAi | Api::Compatible => {
            if api == Api::OpenAi {
                if o.top_k.is_some() {
                    return Err(unsupported("top_k"));
                }
                if o.min_p.is_some() {
                    return Err(unsupported("min_p"));
                }
                if o.repeat_penalty.is_some() {
                    return Err(unsupported("repeat_penalty"));
                }
            }
            let mut messages: Vec<Value> = o
                .history
                .iter()
                .map(|m| {
                    let mut v = json!({"role": role(m.role), "content": m.content});
                    if !m.tool_calls.is_empty() {
                        let calls: Vec<Value> = m
                            .tool_calls
                            .iter()
                            .map(|c| {
                                json!({"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": c.arguments}})
                            })
                            .collect();
                        v["tool_calls"] = Value::Array(calls);
                        if m.content.is_empty() {
                            v["content"] = Value::Null;
                        }
                    }
                    if let Some(id) = &m.tool_call_id {
                        v["tool_call_id"] = json!(id);
                    }
                    v
                })
                .collect();
            // A conversation that ends with tool results is answered as it
            // is: no empty user turn after them.
            if !(prompt.is_empty() && o.history.last().is_some_and(|m| m.role == ChatRole::Tool)) {
                messages.push(json!({"role": "user", "content": prompt}));
            }
            let mut b = json!({
                "model": model,
                "messages": messages,
                "stream": true,
                "stream_options": {"include_usage": true},
            });
            let m = b.as_object_mut().expect("an object");
            if let Some(n) = o.max_tokens {
                let key = if api == Api::OpenAi {
                    "max_completion_tokens"
                } else {
                    "max_tokens"
                };
                m.insert(key.into(), json!(n));
            }
            put(m, "temperature", o.temperature.map(f64::from));
            put(m, "top_p", o.top_p.map(f64::from));
            put(m, "seed", o.seed);
            if !o.stop.is_empty() {
                m.insert("stop".into(), json!(o.stop));
            }
            put(m, "top_k", o.top_k);
            put(m, "min_p", o.min_p.map(f64::from));
            put(m, "repeat_penalty", o.repeat_penalty.map(f64::from));
            if !o.tools.is_empty() {
                let tools: Vec<Value> = o
                    .tools
                    .iter()
                    .map(|t| {
                        json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters}})
                    })
                    .collect();
                m.insert("tools".into(), Value::Array(tools));
                let choice = match &o.tool_choice {
                    None | Some(ToolChoice::Auto) => json!("auto"),
                    Some(ToolChoice::None) => json!("none"),
                    Some(ToolChoice::Required) => json!("required"),
                    Some(ToolChoice::Function(name)) => {
                        json!({"type": "function", "function": {"name": name}})
                    }
                };
                m.insert("tool_choice".into(), choice);
                put(m, "parallel_tool_calls", o.parallel_tool_calls);
            }
            match &o.response_format {
                None => {}
                Some(ResponseFormat::JsonObject) => {
                    m.insert("response_format".into(), json!({"type": "json_object"}));
                }
                Some(ResponseFormat::JsonSchema { schema }) => {
                    m.insert(
                        "response_format".into(),
                        // Not `strict`: OpenAI's strict mode refuses schemas
                        // with optional properties or open objects.
                        json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}),
                    );
                }
                Some(_) => {
                    return Err(SlmRunnerError::InvalidInput {
                        field: "response_format",
                        reason: "a regular expression or a grammar is not an option of OpenAI's API; a JSON Schema is".into(),
                    })
                }
            }
            Ok(b)
        }
        Api::Anthropic => {
            if o.response_format.is_some() {
                return Err(SlmRunnerError::InvalidInput {
                    field: "response_format",
                    reason: "this runtime does not pass a response format to Anthropic's API yet; leave it unset for this model".into(),
                });
            }
            if o.min_p.is_some() || o.repeat_penalty.is_some() || o.seed.is_some() {
                return Err(SlmRunnerError::InvalidInput {
                    field: "options",
                    reason: "min_p, repeat_penalty and seed are not options of Anthropic's API"
                        .into(),
                });
            }
            let system: Vec<&str> = o
                .history
                .iter()
                .filter(|m| m.role == ChatRole::System)
                .map(|m| m.content.as_str())
                .collect();
            let messages = anthropic_messages(o, prompt);
            let mut b = json!({
                "model": model,
                "messages": messages,
                "max_tokens": o.max_tokens.unwrap_or(ANTHROPIC_DEFAULT_MAX_TOKENS),
                "stream": true,
            });
            let m = b.as_object_mut().expect("an object");
            if !system.is_empty() {
                m.insert("system".into(), json!(system.join("\n\n")));
            }
            put(m, "temperature", o.temperature.map(f64::from));
            put(m, "top_p", o.top_p.map(f64::from));
            put(m, "top_k", o.top_k);
            if !o.stop.is_empty() {
                m.insert("stop_sequences".into(), json!(o.stop));
            }
            if !o.tools.is_empty() {
                let tools: Vec<Value> = o
                    .tools
                    .iter()
                    .map(|t| {
                        json!({"name": t.name, "description": t.description,
                        "input_schema": t.parameters})
                    })
                    .collect();
                m.insert("tools".into(), Value::Array(tools));
                let mut choice = match &o.tool_choice {
                    None | Some(ToolChoice::Auto) => json!({"type": "auto"}),
                    Some(ToolChoice::None) => json!({"type": "none"}),
                    Some(ToolChoice::Required) => json!({"type": "any"}),
                    Some(ToolChoice::Function(name)) => json!({"type": "tool", "name": name}),
                };
                if o.parallel_tool_calls == Some(false) && o.tool_choice != Some(ToolChoice::None) {
                    choice["disable_parallel_tool_use"] = json!(true);
                }
                m.insert("tool_choice".into(), choice);
            }
            Ok(b)
        }
    }
}

/// The conversation in Anthropic's Messages: the system turns apart (in
/// `system`), an assistant's calls as `tool_use` blocks after its text,
/// tool results as `tool_result` blocks of one user turn (with `prompt`
/// after them, when there is one).
fn anthropic_messages(o: &ExecutionOptions, prompt: &str) -> Vec<Value> {
    let mut messages: Vec<Value> = Vec::new();
    for m in o.history.iter().filter(|m| m.role != ChatRole::System) {
        match m.role {
            ChatRole::Tool => {
                let block = json!({"type": "tool_result",
                    "tool_use_id": m.tool_call_id.clone().unwrap_or_default(),
                    "content": m.content});
                match messages.last_mut() {
                    Some(last) if last["role"] == "user" && last["content"].is_array() => {
                        if let Some(a) = last["content"].as_array_mut() {
                            a.push(block);
                        }
                    }
                    _ => messages.push(json!({"role": "user", "content": [block]})),
                }
            }
            ChatRole::Assistant if !m.tool_calls.is_empty() => {
                let mut blocks = Vec::new();
                if !m.content.is_empty() {
                    blocks.push(json!({"type": "text", "text": m.content}));
                }
                for c in &m.tool_calls {
                    let input: Value =
                        serde_json::from_str(&c.arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}));
                }
                messages.push(json!({"role": "assistant", "content": blocks}));
            }
            r => messages.push(json!({"role": if r == ChatRole::Assistant { "assistant" } else { "user" }, "content": m.content})),
        }
    }
    match messages.last_mut() {
        Some(last) if last["role"] == "user" && last["content"].is_array() => {
            if !prompt.is_empty() {
                if let Some(a) = last["content"].as_array_mut() {
                    a.push(json!({"type": "text", "text": prompt}));
                }
            }
        }
        _ => messages.push(json!({"role": "user", "content": prompt})),
    }
    messages
}

fn put<T: serde::Serialize>(m: &mut serde_json::Map<String, Value>, k: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(k.into(), json!(v));
    }
}

/// What one event of a stream says.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Delta {
    /// Text generated.
    pub text: Option<String>,
    /// Prompt tokens (all of them, cached included).
    pub input_tokens: Option<u32>,
    /// Prompt tokens read from the provider's cache.
    pub cached_tokens: Option<u32>,
    /// Tokens generated, so far or in all.
    pub output_tokens: Option<u32>,
    /// How it ended.
    pub finish: Option<FinishReason>,
    /// The stop sequence that ended it (Anthropic).
    pub stop_sequence: Option<String>,
    /// Pieces of tool calls.
    pub calls: Vec<ToolCallDelta>,
    /// The stream is over.
    pub done: bool,
}

/// Reads one `data:` payload (with its `event:` name, if any).
pub(crate) fn delta(api: Api, event: Option<&str>, data: &str) -> Result<Delta, String> {
    if data.trim() == "[DONE]" {
        return Ok(Delta {
            done: true,
            ..Delta::default()
        });
    }
    let v: Value = serde_json::from_str(data).map_err(|e| format!("an event is not JSON: {e}"))?;
    if let Some(e) = v.get("error") {
        return Err(format!(
            "the endpoint reported an error in the stream: {}",
            error_text(e)
        ));
    }
    let u32_at = |v: &Value, path: &[&str]| -> Option<u32> {
        let mut cur = v;
        for p in path {
            cur = cur.get(*p)?;
        }
        cur.as_u64().map(|n| n.min(u64::from(u32::MAX)) as u32)
    };
    let mut d = Delta::default();
    match api {
        Api::OpenAi | Api::Compatible => {
            if let Some(c) = v.get("choices").and_then(|c| c.get(0)) {
                d.text = c
                    .get("delta")
                    .and_then(|x| x.get("content"))
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                d.finish = match c.get("finish_reason").and_then(Value::as_str) {
                    Some("length") => Some(FinishReason::Length),
                    Some("tool_calls") => Some(FinishReason::ToolCalls),
                    Some(_) => Some(FinishReason::Stop),
                    None => None,
                };
                if let Some(calls) = c
                    .get("delta")
                    .and_then(|x| x.get("tool_calls"))
                    .and_then(Value::as_array)
                {
                    for call in calls {
                        let f = call.get("function");
                        let text = |k: &str| {
                            f.and_then(|f| f.get(k))
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        };
                        d.calls.push(ToolCallDelta {
                            // Missing: [`NO_INDEX`], read by the reader.
                            index: u32_at(call, &["index"]).unwrap_or(NO_INDEX),
                            id: call.get("id").and_then(Value::as_str).map(str::to_string),
                            name: text("name"),
                            arguments: text("arguments").unwrap_or_default(),
                        });
                    }
                }
            }
            if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                d.input_tokens = u32_at(u, &["prompt_tokens"]);
                d.output_tokens = u32_at(u, &["completion_tokens"]);
                d.cached_tokens = u32_at(u, &["prompt_tokens_details", "cached_tokens"]);
            }
        }
        Api::Anthropic => {
            let kind = v
                .get("type")
                .and_then(Value::as_str)
                .or(event)
                .unwrap_or("");
            match kind {
                "message_start" => {
                    let u = &v["message"]["usage"];
                    let fresh = u32_at(u, &["input_tokens"]);
                    let cached = u32_at(u, &["cache_read_input_tokens"]).unwrap_or(0);
                    let created = u32_at(u, &["cache_creation_input_tokens"]).unwrap_or(0);
                    d.input_tokens =
                        fresh.map(|f| f.saturating_add(cached).saturating_add(created));
                    d.cached_tokens = Some(cached);
                }
                // A `tool_use` block is a call; its index is the block's
                // (counted among the calls by the reader).
                "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                    let b = &v["content_block"];
                    d.calls.push(ToolCallDelta {
                        index: u32_at(&v, &["index"]).unwrap_or(0),
                        id: b["id"].as_str().map(str::to_string),
                        name: b["name"].as_str().map(str::to_string),
                        arguments: String::new(),
                    });
                }
                "content_block_delta" => {
                    d.text = v["delta"]["text"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(str::to_string);
                    if let Some(part) = v["delta"]["partial_json"].as_str() {
                        d.calls.push(ToolCallDelta {
                            index: u32_at(&v, &["index"]).unwrap_or(0),
                            id: None,
                            name: None,
                            arguments: part.to_string(),
                        });
                    }
                }
                "message_delta" => {
                    d.finish = match v["delta"]["stop_reason"].as_str() {
                        Some("max_tokens") => Some(FinishReason::Length),
                        Some("tool_use") => Some(FinishReason::ToolCalls),
                        Some(_) => Some(FinishReason::Stop),
                        None => None,
                    };
                    d.stop_sequence = v["delta"]["stop_sequence"].as_str().map(str::to_string);
                    let u = &v["usage"];
                    d.output_tokens = u32_at(u, &["output_tokens"]);
                    // Cumulative totals, when the server sends them.
                    if let Some(fresh) = u32_at(u, &["input_tokens"]) {
                        let cached = u32_at(u, &["cache_read_input_tokens"]).unwrap_or(0);
                        let created = u32_at(u, &["cache_creation_input_tokens"]).unwrap_or(0);
                        d.input_tokens = Some(fresh.saturating_add(cached).saturating_add(created));
                        d.cached_tokens = Some(cached);
                    }
                }
                "message_stop" => d.done = true,
                _ => {}
            }
        }
    }
    Ok(d)
}

/// The message of an error object (OpenAI's or Anthropic's), shortened.
pub(crate) fn error_text(e: &Value) -> String {
    let msg = e
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| e.to_string());
    let kind = e.get("type").and_then(Value::as_str).unwrap_or("");
    let mut s = if kind.is_empty() {
        msg
    } else {
        format!("{kind}: {msg}")
    };
    if s.len() > 300 {
        let mut end = 300;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

/// Splits a byte stream into server-sent events: `(event name, data)`.
/// Public for the fuzz target: a remote endpoint's bytes are untrusted.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no line end.
    scanned: usize,
    event: Option<String>,
    data: String,
}

/// The longest line an event may have.
pub const MAX_SSE_LINE: usize = 1024 * 1024;

impl SseParser {
    /// Feeds bytes; returns the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<(Option<String>, String)>, String> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        // Each byte is looked at once: a line trickled in small reads does
        // not make the parse quadratic.
        while let Some(i) = self.buf[self.scanned.max(start)..]
            .iter()
            .position(|&b| b == b'\n')
        {
            let end = self.scanned.max(start) + i;
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            start = end + 1;
            self.scanned = start;
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push((self.event.take(), std::mem::take(&mut self.data)));
                }
                self.event = None;
            } else if let Some(d) = line.strip_prefix("data:") {
                if !self.data.is_empty() {
                    self.data.push('\n');
                }
                self.data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if let Some(e) = line.strip_prefix("event:") {
                self.event = Some(e.trim().to_string());
            }
            // Comments (`:`), `id:` and `retry:` lines are ignored.
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_SSE_LINE || self.data.len() > MAX_SSE_LINE {
            return Err(format!("an event is longer than {MAX_SSE_LINE} bytes"));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_format_passes_to_openai_apis_and_is_refused_where_it_cannot() {
        let schema = json!({"type": "object", "properties": {"b": {}, "a": {}}});
        let with = |f: ResponseFormat| ExecutionOptions {
            response_format: Some(f),
            ..Default::default()
        };
        for api in [Api::OpenAi, Api::Compatible] {
            let b = body(
                api,
                "m",
                "hi",
                &with(ResponseFormat::JsonSchema {
                    schema: schema.clone(),
                }),
            )
            .unwrap();
            assert_eq!(b["response_format"]["type"], "json_schema");
            assert_eq!(b["response_format"]["json_schema"]["schema"], schema);
            // The schema's property order is kept.
            assert!(
                b.to_string().contains(r#""properties":{"b":{},"a":{}}"#),
                "{b}"
            );
            let b = body(api, "m", "hi", &with(ResponseFormat::JsonObject)).unwrap();
            assert_eq!(b["response_format"], json!({"type": "json_object"}));
            let e = body(
                api,
                "m",
                "hi",
                &with(ResponseFormat::Regex {
                    pattern: "a+".into(),
                }),
            )
            .unwrap_err();
            assert!(
                matches!(
                    e,
                    SlmRunnerError::InvalidInput {
                        field: "response_format",
                        ..
                    }
                ),
                "{e:?}"
            );
        }
        let e = body(Api::Anthropic, "m", "hi", &with(ResponseFormat::JsonObject)).unwrap_err();
        assert!(
            matches!(
                e,
                SlmRunnerError::InvalidInput {
                    field: "response_format",
                    ..
                }
            ),
            "{e:?}"
        );
        // Without one, nothing is sent.
        let b = body(Api::Compatible, "m", "hi", &ExecutionOptions::default()).unwrap();
        assert!(b.get("response_format").is_none());
    }

    #[test]
    fn a_line_trickled_byte_by_byte_is_one_event() {
        let mut p = SseParser::default();
        let msg = b"data: {\"x\": \"abcdefghij\"}\n";
        for b in msg.iter() {
            assert!(p.feed(&[*b]).unwrap().is_empty());
        }
        assert_eq!(
            p.feed(b"\n").unwrap(),
            vec![(None, "{\"x\": \"abcdefghij\"}".into())]
        );
    }

    #[test]
    fn events_split_across_reads() {
        let mut p = SseParser::default();
        assert!(p.feed(b"event: message_start\nda").unwrap().is_empty());
        let got = p
            .feed(b"ta: {\"a\":1}\r\n\r\n: ping\n\ndata: [DONE]\n\n")
            .unwrap();
        assert_eq!(
            got,
            vec![
                (Some("message_start".into()), "{\"a\":1}".into()),
                (None, "[DONE]".into())
            ]
        );
    }

    #[test]
    fn openai_and_anthropic_deltas() {
        let d = delta(
            Api::Compatible,
            None,
            r#"{"choices":[{"delta":{"content":"Hi"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(d.text.as_deref(), Some("Hi"));
        let d = delta(
            Api::OpenAi,
            None,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":4}}}"#,
        )
        .unwrap();
        assert_eq!(
            (d.input_tokens, d.output_tokens, d.cached_tokens),
            (Some(9), Some(3), Some(4))
        );
        let d = delta(
            Api::Anthropic,
            Some("message_start"),
            r#"{"type":"message_start","message":{"usage":{"input_tokens":5,"cache_read_input_tokens":7}}}"#,
        )
        .unwrap();
        assert_eq!((d.input_tokens, d.cached_tokens), (Some(12), Some(7)));
        let d = delta(
            Api::Anthropic,
            None,
            r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(
            (d.finish, d.output_tokens),
            (Some(FinishReason::Length), Some(4))
        );
        assert!(delta(
            Api::Anthropic,
            Some("error"),
            r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#
        )
        .unwrap_err()
        .contains("overloaded_error: busy"));
    }

    fn tooled() -> ExecutionOptions {
        use crate::models::{ChatMessage, ToolCall, ToolDefinition};
        let mut call = ChatMessage::new(ChatRole::Assistant, "");
        call.tool_calls = vec![ToolCall {
            id: "call_1".into(),
            name: "add".into(),
            arguments: r#"{"a":1,"b":2}"#.into(),
        }];
        let mut result = ChatMessage::new(ChatRole::Tool, "3");
        result.tool_call_id = Some("call_1".into());
        ExecutionOptions {
            history: vec![
                ChatMessage::new(ChatRole::System, "Be brief."),
                ChatMessage::new(ChatRole::User, "1+2?"),
                call,
                result,
            ],
            tools: vec![ToolDefinition {
                name: "add".into(),
                description: "a + b".into(),
                parameters: json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
            }],
            tool_choice: Some(ToolChoice::Function("add".into())),
            parallel_tool_calls: Some(false),
            ..ExecutionOptions::default()
        }
    }

    #[test]
    fn tools_calls_and_results_pass_in_each_api_s_own_shape() {
        let o = tooled();
        let b = body(Api::Compatible, "m", "", &o).unwrap();
        assert_eq!(b["tools"][0]["function"]["name"], "add");
        assert_eq!(
            b["tools"][0]["function"]["parameters"],
            o.tools[0].parameters
        );
        assert_eq!(
            b["tool_choice"],
            json!({"type": "function", "function": {"name": "add"}})
        );
        assert_eq!(b["parallel_tool_calls"], false);
        let msgs = b["messages"].as_array().unwrap();
        // The conversation ends with the result: no empty user turn.
        assert_eq!(msgs.len(), 4, "{b}");
        assert_eq!(
            msgs[2]["tool_calls"][0]["function"]["arguments"],
            r#"{"a":1,"b":2}"#
        );
        assert_eq!(msgs[2]["content"], Value::Null);
        assert_eq!(
            msgs[3],
            json!({"role": "tool", "content": "3", "tool_call_id": "call_1"})
        );

        let b = body(Api::Anthropic, "m", "And 2+2?", &o).unwrap();
        assert_eq!(b["system"], "Be brief.");
        assert_eq!(b["tools"][0]["input_schema"], o.tools[0].parameters);
        assert_eq!(
            b["tool_choice"],
            json!({"type": "tool", "name": "add", "disable_parallel_tool_use": true})
        );
        let msgs = b["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "{b}");
        assert_eq!(
            msgs[1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "add", "input": {"a": 1, "b": 2}})
        );
        // The result and the new question share the user turn.
        assert_eq!(
            msgs[2]["content"],
            json!([{"type": "tool_result", "tool_use_id": "call_1", "content": "3"},
                   {"type": "text", "text": "And 2+2?"}])
        );
        let mut any = o.clone();
        any.tool_choice = Some(ToolChoice::Required);
        any.parallel_tool_calls = None;
        let b = body(Api::Anthropic, "m", "x", &any).unwrap();
        assert_eq!(b["tool_choice"], json!({"type": "any"}));
    }

    #[test]
    fn streamed_calls_are_read_from_either_api() {
        let d = delta(
            Api::Compatible,
            None,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_9","type":"function","function":{"name":"add","arguments":""}}]},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(
            d.calls,
            [ToolCallDelta {
                index: 0,
                id: Some("call_9".into()),
                name: Some("add".into()),
                arguments: String::new()
            }]
        );
        let d = delta(
            Api::Compatible,
            None,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\":"}}]},"finish_reason":"tool_calls"}]}"#,
        )
        .unwrap();
        assert_eq!(d.calls[0].arguments, "{\"a\":");
        assert_eq!(d.finish, Some(FinishReason::ToolCalls));
        let d = delta(
            Api::Anthropic,
            None,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"add","input":{}}}"#,
        )
        .unwrap();
        assert_eq!(
            (d.calls[0].index, d.calls[0].name.as_deref()),
            (1, Some("add"))
        );
        let d = delta(
            Api::Anthropic,
            None,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}"#,
        )
        .unwrap();
        assert_eq!(
            (d.calls[0].index, d.calls[0].arguments.as_str()),
            (1, "{\"a\":1}")
        );
        assert_eq!(d.text, None);
        let d = delta(
            Api::Anthropic,
            None,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}"#,
        )
        .unwrap();
        assert_eq!(d.finish, Some(FinishReason::ToolCalls));
    }
}
