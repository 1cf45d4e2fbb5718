//! How a model writes tool calls: the format its chat template teaches
//! (read from the template's text when the model is loaded), or the
//! generic one for templates that know no tools.
//!
//! | format | a call | several | the template gets |
//! |---|---|---|---|
//! | generic | `<tool_call>{"name":…,"arguments":{…}}</tool_call>` | blocks one after another | the tools as system text (see [`super::fold`]) |
//! | Hermes (Qwen 2.5/3, Hermes 2/3, SmolLM3) | the same, with newlines around the JSON | the same | `tools`, `tool_calls`, `tool` messages |
//! | Mistral | `[TOOL_CALLS][{"name":…,"arguments":{…}}]` | items of the one list | the same |
//! | Llama 3.x | `{"name":…,"parameters":{…}}`, the whole answer | one call only | the same |
//!
//! A call's JSON is constrained from its opening marker on ([`super::
//! grammar`]): whitespace is allowed between its keys as the templates'
//! own examples write it, the arguments are compact JSON under the
//! function's schema.

/// Which of the formats above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Ours, for templates without tools.
    Generic,
    /// `<tool_call>` blocks (Hermes 2 Pro introduced it; Qwen 2.5 and 3
    /// took it).
    Hermes,
    /// Mistral's `[TOOL_CALLS]` list.
    Mistral,
    /// Llama 3.1–3.3's JSON answer.
    Llama3,
}

/// A tool-call format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    /// Which one.
    pub dialect: Dialect,
    /// What opens the calls: the model writes it (`auto`), or the prompt
    /// ends with it (a forced call).
    pub open: &'static str,
    /// Whether [`Self::open`] is the call's own first text (Llama 3's
    /// `{"name"`): then it is never added to the prompt, and the call
    /// grammar reads it again.
    pub open_in_call: bool,
    /// What closes each call (and what opens the next is [`Self::open`]
    /// again), unless [`Self::list`].
    pub close: &'static str,
    /// The calls are the items of one JSON list after [`Self::open`].
    pub list: bool,
    /// The key of a call's arguments.
    pub arguments: &'static str,
    /// The template renders the tools and the calls itself.
    pub native: bool,
    /// Several calls in one answer can be written.
    pub parallel: bool,
}

impl Format {
    /// Ours.
    pub const GENERIC: Format = Format {
        dialect: Dialect::Generic,
        open: "<tool_call>",
        open_in_call: false,
        close: "</tool_call>",
        list: false,
        arguments: "arguments",
        native: false,
        parallel: true,
    };
    /// `<tool_call>` blocks written by the template.
    pub const HERMES: Format = Format {
        dialect: Dialect::Hermes,
        native: true,
        ..Self::GENERIC
    };
    /// `[TOOL_CALLS]` and a list.
    pub const MISTRAL: Format = Format {
        dialect: Dialect::Mistral,
        open: "[TOOL_CALLS]",
        open_in_call: false,
        close: "",
        list: true,
        arguments: "arguments",
        native: true,
        parallel: true,
    };
    /// A JSON answer.
    pub const LLAMA3: Format = Format {
        dialect: Dialect::Llama3,
        open: "{\"name\"",
        open_in_call: true,
        close: "",
        list: false,
        arguments: "parameters",
        native: true,
        parallel: false,
    };

    /// The format `template` (a chat template's Jinja text) teaches: one
    /// that renders `tools` and names a format's markers, else the
    /// generic one.
    pub fn of_template(template: &str) -> Format {
        if !template.contains("tools") {
            return Self::GENERIC;
        }
        // Formats of the same markers whose calls are not this JSON
        // (Mistral's `[TOOL_CALLS]name[ARGS]{…}`, Qwen3-Coder's
        // `<function=…>`, GLM's `<arg_key>`) are not read: ours then.
        if template.contains("[TOOL_CALLS]") && !template.contains("[ARGS]") {
            Self::MISTRAL
        } else if template.contains("<tool_call>")
            && !template.contains("<function=")
            && !template.contains("<arg_key>")
        {
            Self::HERMES
        } else if template.contains("<|start_header_id|>")
            && (template.contains("\"parameters\"") || template.contains("ipython"))
        {
            Self::LLAMA3
        } else {
            Self::GENERIC
        }
    }

    /// The text (whitespace left out) that follows a call's JSON when
    /// another call comes next, if one can.
    pub(crate) fn between(&self) -> Option<String> {
        if self.list {
            Some(",".into())
        } else if self.close.is_empty() {
            None
        } else {
            Some(format!("{}{}", self.close, self.open))
        }
    }

    /// The text (whitespace left out) that follows the last call's JSON.
    pub(crate) fn end(&self) -> &'static str {
        if self.list {
            "]"
        } else {
            self.close
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_read_from_templates() {
        let hermes = "{% if tools %}<tools>{{ tools | tojson }}</tools> … <tool_call>\n{\"name\": …}\n</tool_call>{% endif %}";
        assert_eq!(Format::of_template(hermes), Format::HERMES);
        let mistral =
            "{% if tools %}[AVAILABLE_TOOLS]{{ tools|tojson }}{% endif %}{{ '[TOOL_CALLS]' }}";
        assert_eq!(Format::of_template(mistral), Format::MISTRAL);
        let llama = "<|start_header_id|>{% if tools %}Respond in the format {\"name\": function name, \"parameters\": …}{% endif %}";
        assert_eq!(Format::of_template(llama), Format::LLAMA3);
        // No tools in the template (the default model's): ours.
        let smol = "{% for message in messages %}<|im_start|>{{ message['content'] }}{% endfor %}";
        assert_eq!(Format::of_template(smol), Format::GENERIC);
        // A marker without `tools`: still ours; so are other formats of
        // the same markers.
        assert_eq!(Format::of_template("<tool_call>"), Format::GENERIC);
        let coder = "{% if tools %}<tool_call>\n<function=name>{% endif %}";
        assert_eq!(Format::of_template(coder), Format::GENERIC);
        let v11 = "{% if tools %}[TOOL_CALLS]{{ name }}[ARGS]{% endif %}";
        assert_eq!(Format::of_template(v11), Format::GENERIC);
    }
}
