//! From an OpenAI request to the runner's job: every field checked, the
//! ones this service cannot honour refused by name.

use super::*;

/// What a generation endpoint runs.
pub(crate) struct Job {
    pub model: String,
    pub prompt: String,
    pub options: ExecutionOptions,
    pub stream: bool,
    pub include_usage: bool,
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
    pub(crate) fn into_job(self, max_prompt_bytes: u64) -> Result<Job, ApiError> {
        only_one("n", self.n)?;
        stream_options_need_stream(self.stream, &self.stream_options)?;
        if self.logprobs == Some(true) {
            return Err(ApiError::bad_request(
                "unsupported_parameter",
                Some("logprobs"),
                "logprobs: log probabilities are not returned; only false is supported",
            ));
        }
        if let Some(f) = &self.response_format {
            if f.get("type").and_then(|t| t.as_str()) != Some("text") {
                return Err(ApiError::bad_request(
                    "unsupported_parameter",
                    Some("response_format"),
                    "response_format: only {\"type\": \"text\"} is supported",
                ));
            }
        }
        only_zero("frequency_penalty", self.frequency_penalty)?;
        only_zero("presence_penalty", self.presence_penalty)?;
        let mut turns = Vec::with_capacity(self.messages.len());
        let mut bytes = 0u64;
        for (i, m) in self.messages.into_iter().enumerate() {
            let text = text_of(i, m.content)?;
            bytes += text.len() as u64;
            let role = match m.role {
                Role::System | Role::Developer => ChatRole::System,
                Role::User => ChatRole::User,
                Role::Assistant => ChatRole::Assistant,
            };
            turns.push(ChatMessage::new(role, text));
        }
        if bytes > max_prompt_bytes {
            return Err(ApiError::prompt_too_large(
                "messages",
                "the messages",
                bytes,
                max_prompt_bytes,
            ));
        }
        let last = match turns.pop() {
            Some(m) if m.role == ChatRole::User => m,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "invalid_messages",
                    Some("messages"),
                    "messages: the last message must be the user's",
                ))
            }
            None => {
                return Err(ApiError::bad_request(
                    "invalid_messages",
                    Some("messages"),
                    "messages: at least one (user) message is needed",
                ))
            }
        };
        Ok(Job {
            model: self.model,
            prompt: last.content,
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
                history: turns,
                ..Default::default()
            },
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}

impl CompletionRequest {
    pub(crate) fn into_job(self, max_prompt_bytes: u64) -> Result<Job, ApiError> {
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
        Ok(Job {
            model: self.model,
            prompt,
            options: ExecutionOptions {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                max_tokens: Some(self.max_tokens.unwrap_or(16)),
                seed: self.seed,
                stop: self.stop.map(Stop::into_vec).unwrap_or_default(),
                prompt_mode: PromptMode::Raw,
                ..Default::default()
            },
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        })
    }
}
