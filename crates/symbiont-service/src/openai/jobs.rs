//! From an OpenAI request to the runner's job: every field checked, the
//! ones this service cannot honour refused by name.

use super::*;

fn include_usage(o: Option<StreamOptions>) -> bool {
    o.and_then(|o| o.include_usage).unwrap_or(false)
}

fn only_zero(param: &str, v: Option<f32>) -> Result<(), ApiError> {
    match v {
        Some(x) if x != 0.0 => Err(ApiError::bad_request(
            "unsupported_parameter",
            Some(param),
            format!("{param}: only 0 is supported"),
        )),
        _ => Ok(()),
    }
}

fn only_one(param: &str, n: Option<u32>) -> Result<(), ApiError> {
    match n {
        Some(n) if n != 1 => Err(ApiError::bad_request(
            "unsupported_parameter",
            Some(param),
            format!("{param}: only one choice per request is supported, got {n}"),
        )),
        _ => Ok(()),
    }
}

fn text_of(i: usize, c: Content) -> Result<String, ApiError> {
    match c {
        Content::Text(s) => Ok(s),
        Content::Parts(parts) => {
            let mut out = String::new();
            for (j, p) in parts.into_iter().enumerate() {
                match (p.kind.as_str(), p.text) {
                    ("text", Some(t)) => out.push_str(&t),
                    _ => {
                        return Err(ApiError::bad_request(
                            "unsupported_content",
                            Some(&format!("messages[{i}].content[{j}]")),
                            format!(
                                "messages[{i}].content[{j}]: only parts of type `text` with a `text` field are supported"
                            ),
                        ))
                    }
                }
            }
            Ok(out)
        }
    }
}

fn stream_options_need_stream(
    stream: Option<bool>,
    o: &Option<StreamOptions>,
) -> Result<(), ApiError> {
    if o.is_some() && stream != Some(true) {
        return Err(ApiError::bad_request(
            "invalid_value",
            Some("stream_options"),
            "stream_options: only allowed with stream: true",
        ));
    }
    Ok(())
}

impl ChatCompletionRequest {
    /// The job, and how to answer it.
    pub(crate) fn into_job(self, max_prompt_bytes: u64) -> Result<(Job, OpenAi), ApiError> {
        only_one("n", self.n)?;
        stream_options_need_stream(self.stream, &self.stream_options)?;
        if self.logprobs == Some(true) {
            return Err(ApiError::bad_request(
                "unsupported_parameter",
                Some("logprobs"),
                "logprobs: log probabilities are not returned; only false is supported",
            ));
        }
        let response_format = response_format(self.response_format)?;
        only_zero("frequency_penalty", self.frequency_penalty)?;
        only_zero("presence_penalty", self.presence_penalty)?;
        let mut turns = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            turns.push(message(i, m)?);
        }
        let (tools, tool_choice) = tools(self.tools, self.tool_choice)?;
        let (prompt, history) = conversation(turns, max_prompt_bytes, "messages", "the messages")?;
        let dialect = OpenAi {
            shape: Shape::Chat,
            include_usage: include_usage(self.stream_options),
        };
        let job = Job {
            model: self.model,
            prompt,
            options: ExecutionOptions {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                max_tokens: self.max_completion_tokens.or(self.max_tokens),
                seed: self.seed,
                stop: self.stop.map(Stop::into_vec).unwrap_or_default(),
                prompt_mode: PromptMode::Chat,
                history,
                response_format,
                tools,
                tool_choice,
                parallel_tool_calls: self.parallel_tool_calls,
                ..Default::default()
            },
            stream: self.stream.unwrap_or(false),
        };
        Ok((job, dialect))
    }
}

/// One message: its role, text, and tool calls or the call it answers.
fn message(i: usize, m: Message) -> Result<ChatMessage, ApiError> {
    let field = format!("messages[{i}]");
    let bad = |m: String| ApiError::bad_request("invalid_value", Some(&field), m);
    let role = match m.role {
        Role::System | Role::Developer => ChatRole::System,
        Role::User => ChatRole::User,
        Role::Assistant => ChatRole::Assistant,
        Role::Tool => ChatRole::Tool,
    };
    let calls = m.tool_calls.unwrap_or_default();
    if !calls.is_empty() && role != ChatRole::Assistant {
        return Err(bad(format!(
            "{field}: only an assistant's message has tool_calls"
        )));
    }
    if (role == ChatRole::Tool) != m.tool_call_id.is_some() {
        return Err(bad(format!(
            "{field}: a tool message, and only one, has tool_call_id"
        )));
    }
    if m.refusal.is_some() {
        return Err(bad(format!("{field}: refusal is not supported")));
    }
    let content = match m.content {
        Some(c) => text_of(i, c)?,
        None if !calls.is_empty() => String::new(),
        None => return Err(bad(format!("{field}: content is missing"))),
    };
    let mut turn = ChatMessage::new(role, content);
    turn.tool_call_id = m.tool_call_id;
    for (j, c) in calls.into_iter().enumerate() {
        if c.kind != "function" {
            return Err(bad(format!(
                "{field}.tool_calls[{j}]: only calls of type `function` are supported"
            )));
        }
        turn.tool_calls.push(ToolCall {
            id: c.id,
            name: c.function.name,
            arguments: c.function.arguments,
        });
    }
    Ok(turn)
}

/// OpenAI's `tools` and `tool_choice`.
fn tools(
    tools: Option<Vec<Tool>>,
    choice: Option<serde_json::Value>,
) -> Result<(Vec<ToolDefinition>, Option<ToolChoice>), ApiError> {
    if tools.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::bad_request(
            "invalid_value",
            Some("tools"),
            "tools: an empty list; leave tools out, or give at least one",
        ));
    }
    let mut out = Vec::new();
    for (i, t) in tools.unwrap_or_default().into_iter().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::bad_request(
                "invalid_value",
                Some(&format!("tools[{i}].type")),
                format!("tools[{i}].type: only `function` is supported"),
            ));
        }
        let f = t.function;
        out.push(ToolDefinition {
            name: f.name,
            description: f.description.unwrap_or_default(),
            parameters: f
                .parameters
                .unwrap_or_else(|| serde_json::json!({"type": "object"})),
        });
    }
    let bad = || {
        ApiError::bad_request(
            "invalid_value",
            Some("tool_choice"),
            "tool_choice: `none`, `auto`, `required` or {\"type\": \"function\", \"function\": {\"name\": …}} is expected",
        )
    };
    let choice = match choice {
        None => None,
        Some(serde_json::Value::String(s)) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            _ => return Err(bad()),
        }),
        Some(v) => match (
            v.get("type").and_then(|t| t.as_str()),
            v.pointer("/function/name").and_then(|n| n.as_str()),
        ) {
            (Some("function"), Some(name)) => Some(ToolChoice::Function(name.to_string())),
            _ => return Err(bad()),
        },
    };
    Ok((out, choice))
}

/// OpenAI's `response_format`: `text` (no constraint), `json_object`
/// (any JSON object), `json_schema` (`json_schema.schema`; without one,
/// any JSON value). llama.cpp's server form, `json_object` with a
/// `schema`, is taken as a schema too.
fn response_format(v: Option<serde_json::Value>) -> Result<Option<ResponseFormat>, ApiError> {
    let bad = |m: String| {
        ApiError::bad_request(
            "invalid_value",
            Some("response_format"),
            format!("response_format: {m}"),
        )
    };
    let Some(v) = v else { return Ok(None) };
    let Some(kind) = v.get("type").and_then(|t| t.as_str()) else {
        return Err(bad("an object with a string `type` is expected".into()));
    };
    let schema_of = |s: Option<&serde_json::Value>| match s {
        None => Ok(serde_json::json!({})),
        Some(s) if s.is_object() || s.is_boolean() => Ok(s.clone()),
        Some(_) => Err(bad("the schema must be an object or a boolean".into())),
    };
    match kind {
        "text" => Ok(None),
        "json_object" => match v.get("schema") {
            None => Ok(Some(ResponseFormat::JsonObject)),
            s => Ok(Some(ResponseFormat::JsonSchema {
                schema: schema_of(s)?,
            })),
        },
        "json_schema" => {
            let Some(spec) = v.get("json_schema").filter(|s| s.is_object()) else {
                return Err(bad("`json_schema` (an object with `name` and `schema`) is required with type json_schema".into()));
            };
            Ok(Some(ResponseFormat::JsonSchema {
                schema: schema_of(spec.get("schema"))?,
            }))
        }
        other => Err(bad(format!(
            "type {other:?} is not one of text, json_object, json_schema"
        ))),
    }
}

impl CompletionRequest {
    /// The job, and how to answer it.
    pub(crate) fn into_job(self, max_prompt_bytes: u64) -> Result<(Job, OpenAi), ApiError> {
        only_one("n", self.n)?;
        stream_options_need_stream(self.stream, &self.stream_options)?;
        only_zero("frequency_penalty", self.frequency_penalty)?;
        only_zero("presence_penalty", self.presence_penalty)?;
        if self.echo == Some(true) {
            return Err(ApiError::bad_request(
                "unsupported_parameter",
                Some("echo"),
                "echo: only false is supported",
            ));
        }
        let prompt = match self.prompt {
            Stop::One(s) => s,
            Stop::Many(mut v) if v.len() == 1 => v.remove(0),
            Stop::Many(v) => {
                return Err(ApiError::bad_request(
                    "unsupported_parameter",
                    Some("prompt"),
                    format!(
                        "prompt: one prompt per request is supported, got {}",
                        v.len()
                    ),
                ))
            }
        };
        if prompt.len() as u64 > max_prompt_bytes {
            return Err(ApiError::prompt_too_large(
                "prompt",
                "the prompt",
                prompt.len() as u64,
                max_prompt_bytes,
            ));
        }
        let dialect = OpenAi {
            shape: Shape::Text,
            include_usage: include_usage(self.stream_options),
        };
        let job = Job {
            model: self.model,
            prompt,
            options: ExecutionOptions {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                // None: the model's default, else 16 (`completions`).
                max_tokens: self.max_tokens,
                seed: self.seed,
                stop: self.stop.map(Stop::into_vec).unwrap_or_default(),
                prompt_mode: PromptMode::Raw,
                ..Default::default()
            },
            stream: self.stream.unwrap_or(false),
        };
        Ok((job, dialect))
    }
}
