//! Tool calls: the functions a request offers, whether a call is forced,
//! and the calls an answer makes, whole or streamed in pieces; and the
//! checks an offer passes before it reaches a runner.

use serde::{Deserialize, Serialize};

use crate::models::{
    ChatRole, ExecutionOptions, PromptMode, SlmRunnerError, MAX_RESPONSE_FORMAT_BYTES,
};

/// A function the model may call.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolDefinition {
    /// Its name: 1 to 64 of `a-z A-Z 0-9 _ -`.
    pub name: String,
    /// What it does, for the model.
    #[serde(default)]
    pub description: String,
    /// The JSON Schema of its arguments (an object schema).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(default = "any_object")]
    pub parameters: serde_json::Value,
}

fn any_object() -> serde_json::Value {
    serde_json::json!({"type": "object"})
}

/// Whether the model must call a tool.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// A call or a text answer, as the model chooses.
    Auto,
    /// No call: the tools are not offered.
    None,
    /// At least one call.
    Required,
    /// A call to this function.
    Function(String),
}

/// A whole tool call the model made.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Its id (`call_…`), which the tool's result names.
    pub id: String,
    /// The function.
    pub name: String,
    /// Its arguments, JSON text: valid under the function's parameters
    /// from a local model (constrained decoding); from a remote one, as
    /// its provider sent them.
    pub arguments: String,
}

/// Most tools one request may offer.
pub const MAX_TOOLS: usize = 128;

/// A piece of a streamed tool call (OpenAI's `tool_calls` delta).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallDelta {
    /// The call's place in the answer, from 0.
    pub index: u32,
    /// Its id, in its first piece.
    pub id: Option<String>,
    /// The function, in its first piece.
    pub name: Option<String>,
    /// More of the arguments' JSON text.
    pub arguments: String,
}

impl ExecutionOptions {
    /// The tools as the request offers them: none with `ToolChoice::None`.
    pub fn offered_tools(&self) -> &[ToolDefinition] {
        match self.tool_choice {
            Some(ToolChoice::None) => &[],
            _ => &self.tools,
        }
    }

    pub(crate) fn validate_tools(&self) -> Result<(), SlmRunnerError> {
        let bad =
            |field: &'static str, reason: String| SlmRunnerError::InvalidInput { field, reason };
        if self.tools.len() > MAX_TOOLS {
            return Err(bad(
                "tools",
                format!("{} tools; at most {MAX_TOOLS}", self.tools.len()),
            ));
        }
        let mut size = 0;
        for (i, t) in self.tools.iter().enumerate() {
            let ok = (1..=64).contains(&t.name.len())
                && t.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(bad(
                    "tools",
                    format!(
                        "tools[{i}].name {:?} is not 1 to 64 of a-z, A-Z, 0-9, _ and -",
                        t.name
                    ),
                ));
            }
            if self.tools[..i].iter().any(|o| o.name == t.name) {
                return Err(bad(
                    "tools",
                    format!("tools[{i}].name {:?} is given twice", t.name),
                ));
            }
            if !(t.parameters.is_object() || t.parameters == serde_json::Value::Bool(true)) {
                return Err(bad(
                    "tools",
                    format!("tools[{i}].parameters is not a JSON Schema object"),
                ));
            }
            size += t.name.len() + t.description.len() + t.parameters.to_string().len();
        }
        if size > MAX_RESPONSE_FORMAT_BYTES {
            return Err(bad(
                "tools",
                format!("{size} bytes of definitions; at most {MAX_RESPONSE_FORMAT_BYTES}"),
            ));
        }
        match &self.tool_choice {
            Some(ToolChoice::Function(name)) if !self.tools.iter().any(|t| &t.name == name) => {
                return Err(bad(
                    "tool_choice",
                    format!("names {name:?}, which is not one of the tools"),
                ));
            }
            Some(ToolChoice::Required | ToolChoice::Function(_)) if self.tools.is_empty() => {
                return Err(bad(
                    "tool_choice",
                    "a call is asked for, but no tools are given".into(),
                ));
            }
            _ => {}
        }
        if !self.offered_tools().is_empty() {
            if self.response_format.is_some() {
                return Err(bad(
                    "tools",
                    "tools and response_format together: a call's arguments already follow its parameters".into(),
                ));
            }
            if !self.stop.is_empty() {
                return Err(bad(
                    "stop",
                    "a stop sequence could cut a tool call; leave stop unset with tools".into(),
                ));
            }
            if self.prompt_mode == PromptMode::Raw {
                return Err(bad("tools", "tools need chat mode".into()));
            }
        }
        for (i, m) in self.history.iter().enumerate() {
            if m.role == ChatRole::Tool && m.tool_call_id.is_none() {
                return Err(bad(
                    "history",
                    format!("history[{i}] is a tool result without tool_call_id"),
                ));
            }
            if !m.tool_calls.is_empty() && m.role != ChatRole::Assistant {
                return Err(bad(
                    "history",
                    format!("history[{i}] has tool calls but is not the assistant's"),
                ));
            }
        }
        Ok(())
    }
}
