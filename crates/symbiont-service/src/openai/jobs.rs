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
            let role = match m.role {
                Role::System | Role::Developer => ChatRole::System,
                Role::User => ChatRole::User,
                Role::Assistant => ChatRole::Assistant,
            };
            turns.push(ChatMessage::new(role, text_of(i, m.content)?));
        }
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
                ..Default::default()
            },
            stream: self.stream.unwrap_or(false),
        };
        Ok((job, dialect))
    }
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
