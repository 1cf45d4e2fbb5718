//! Chat-template rendering with a hostile template (the model file's) and
//! hostile messages (the prompt): it renders or fails, within its fuel,
//! never panics and never runs away, with tools and tool calls given to it
//! too (its `tojson` is ours). Oracle for the cut rendering (where
//! contents stay text): its parts name each content once, untouched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use symbi_slm_worker::template::{render_chat, render_chat_parts, render_chat_with, Extras, Part};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // template \0 role \0 content \0 role \0 content ...
    let mut parts = text.split('\0');
    let template = parts.next().unwrap_or_default();
    let rest: Vec<&str> = parts.collect();
    let messages: Vec<(&str, &str)> = rest
        .chunks(2)
        .map(|c| (c[0], c.get(1).copied().unwrap_or_default()))
        .collect();
    let _ = render_chat(template, &messages, "<s>", "</s>");
    // The first content, if it is JSON, as `tools`; each message gets a
    // call whose arguments are its content.
    let extras = Extras {
        tools: messages
            .first()
            .and_then(|(_, c)| serde_json::from_str(c).ok()),
        fields: messages
            .iter()
            .map(|(_, c)| {
                let call = serde_json::json!({"id": "call_1", "type": "function",
                    "function": {"name": "f", "arguments": c}});
                let mut m = serde_json::Map::new();
                m.insert("tool_calls".into(), serde_json::Value::Array(vec![call]));
                m
            })
            .collect(),
    };
    let _ = render_chat_with(template, &messages, &extras, "<s>", "</s>");
    if let Ok(Some(parts)) =
        render_chat_parts(template, &messages, &Extras::default(), "<s>", "</s>", 0x5eed)
    {
        let contents = parts
            .iter()
            .filter(|p| matches!(p, Part::Content(_)))
            .count();
        let written = messages.iter().filter(|(_, c)| !c.is_empty()).count();
        assert_eq!(contents, written, "each content exactly once");
    }
});
