//! Where a request's generated text goes: pieces of text (held back where
//! a stop sequence or a call's opening marker may begin), or, once the
//! answer is in its tool calls, the calls' pieces ([`crate::tools`]).

use llguidance::Matcher;
use symbiont_slm_protocol::{FromWorker, ToolChoice, Tools};

use crate::engine::Sink;
use crate::text::{Matched, StopMatcher, Utf8Stream};
use crate::tools::{CallStream, Format};

/// A request's output router.
#[allow(missing_debug_implementations)] // llguidance's Matcher has no Debug
pub struct Output {
    id: u64,
    utf8: Utf8Stream,
    stops: StopMatcher,
    /// With `auto` tools: the call grammar, armed at the opening marker.
    pending: Option<Matcher>,
    /// Once in the calls: how their text is cut.
    calls: Option<CallStream>,
    /// How the model writes calls.
    format: Format,
    /// Text other than whitespace was sent.
    began: bool,
}

/// What a token's text did.
#[allow(missing_debug_implementations, clippy::large_enum_variant)] // one at a time; Matcher has no Debug
pub enum Pushed {
    /// Generation goes on.
    Go,
    /// A stop sequence matched: the answer ends.
    Stop(String),
    /// The opening marker of a call: the call grammar applies from here,
    /// and it must first take `rest`, the token's text after the marker.
    Armed {
        /// The call grammar.
        matcher: Matcher,
        /// Text after the marker.
        rest: String,
    },
}

impl Output {
    /// The router of request `id`: `stops`, and its tools if any, called
    /// in `format`. With tools the matcher `grammar` is the calls'
    /// grammar: with `auto` it waits for the marker (taken here); forced,
    /// the answer starts in the call (the prompt ended with the marker, or
    /// the marker is the call's first text) and it stays the caller's to
    /// apply from the first token.
    pub fn new(
        id: u64,
        stops: &[String],
        tools: Option<&Tools>,
        format: Format,
        grammar: &mut Option<Matcher>,
    ) -> Self {
        let mut out = Self {
            id,
            utf8: Utf8Stream::default(),
            stops: StopMatcher::new(stops),
            pending: None,
            calls: None,
            format,
            began: false,
        };
        match tools.map(|t| &t.choice) {
            None => {}
            Some(ToolChoice::Auto) => {
                out.pending = grammar.take();
                out.stops = StopMatcher::new(&[format.open.to_string()]);
            }
            Some(_) => out.calls = Some(CallStream::new(format)),
        }
        out
    }

    /// Takes a sampled token's bytes, sends the text or call pieces they
    /// complete.
    pub fn push(&mut self, bytes: &[u8], out: &mut impl Sink) -> Pushed {
        let text = self.utf8.push(bytes);
        self.route(text, out)
    }

    fn route(&mut self, text: String, out: &mut impl Sink) -> Pushed {
        if let Some(calls) = self.calls.as_mut() {
            for p in calls.push(&text) {
                out.send(&FromWorker::ToolCall {
                    id: self.id,
                    index: p.index,
                    name: p.name,
                    arguments: p.arguments,
                });
            }
            return Pushed::Go;
        }
        match self.stops.push(&text) {
            Matched::Continue(t) => {
                self.text(t, out);
                Pushed::Go
            }
            // Where the marker is the call's own first text (Llama 3's
            // `{"name"`), only the answer's start is a call: later, it is
            // text (a JSON example), and nothing more is watched.
            Matched::Stop { text, stop, rest }
                if self.pending.is_some()
                    && self.format.open_in_call
                    && (self.began || !text.trim().is_empty()) =>
            {
                self.pending = None;
                self.stops = StopMatcher::new(&[]);
                self.text(format!("{text}{stop}{rest}"), out);
                Pushed::Go
            }
            Matched::Stop { text, stop, rest } => {
                self.text(text, out);
                match self.pending.take() {
                    Some(matcher) => {
                        self.calls = Some(CallStream::new(self.format));
                        let call = match self.format.open_in_call {
                            true => format!("{stop}{rest}"),
                            false => rest.clone(),
                        };
                        let _ = self.route(call, out);
                        Pushed::Armed { matcher, rest }
                    }
                    None => Pushed::Stop(stop),
                }
            }
        }
    }

    fn text(&mut self, text: String, out: &mut impl Sink) {
        self.began |= !text.trim().is_empty();
        if !text.is_empty() {
            out.send(&FromWorker::Token { id: self.id, text });
        }
    }

    /// At the end: sends what was held back; the stop sequence it
    /// completes, if any.
    pub fn finish(&mut self, out: &mut impl Sink) -> Option<String> {
        let tail = self.utf8.finish();
        if self.calls.is_some() {
            let _ = self.route(tail, out);
            return None;
        }
        match self.stops.push(&tail) {
            Matched::Continue(mut t) => {
                t.push_str(&self.stops.finish());
                self.text(t, out);
                None
            }
            // A marker at the very end opens no call: it is text (the
            // grammar never ran).
            Matched::Stop { text, stop, rest } if self.pending.is_some() => {
                self.text(format!("{text}{stop}{rest}"), out);
                None
            }
            Matched::Stop { text, stop, .. } => {
                self.text(text, out);
                Some(stop)
            }
        }
    }

    /// Whether the answer ended in whole tool calls.
    pub fn calls_whole(&self) -> bool {
        self.calls.as_ref().is_some_and(CallStream::whole)
    }

    /// Whether the answer is in its tool calls.
    pub fn in_calls(&self) -> bool {
        self.calls.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraint::Compiler;
    use crate::tools::{arm, grammar};
    use symbiont_slm_protocol::{Constraint, Function};

    fn tools(choice: ToolChoice) -> Tools {
        Tools {
            functions: vec![Function {
                name: "add".into(),
                description: String::new(),
                parameters: r#"{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"],"additionalProperties":false}"#.into(),
            }],
            choice,
            parallel: false,
        }
    }

    fn matcher(t: &Tools, format: Format) -> Option<Matcher> {
        let g = grammar(t, format).unwrap();
        Some(
            Compiler::bytes()
                .compile(&Constraint::Lark { grammar: g })
                .unwrap(),
        )
    }

    /// Feeds `pieces` (a token's bytes each) to an `auto` router: what it
    /// sent, and what the pieces did.
    fn auto(pieces: &[&str]) -> (Vec<FromWorker>, Vec<&'static str>, Option<String>) {
        auto_in(Format::GENERIC, pieces)
    }

    fn auto_in(
        format: Format,
        pieces: &[&str],
    ) -> (Vec<FromWorker>, Vec<&'static str>, Option<String>) {
        let t = tools(ToolChoice::Auto);
        let mut grammar = matcher(&t, format);
        let mut sent = Vec::new();
        let mut sink = |m: &FromWorker| sent.push(m.clone());
        let mut out = Output::new(1, &[], Some(&t), format, &mut grammar);
        assert!(
            grammar.is_none(),
            "auto waits for the marker with the grammar"
        );
        let mut did = Vec::new();
        let mut rest_seen = None;
        for p in pieces {
            did.push(match out.push(p.as_bytes(), &mut sink) {
                Pushed::Go => "go",
                Pushed::Stop(_) => "stop",
                Pushed::Armed { matcher, rest } => {
                    arm(matcher, format, &rest).unwrap_or_else(|e| panic!("{e}"));
                    rest_seen = Some(rest);
                    "armed"
                }
            });
        }
        let _ = out.finish(&mut sink);
        (sent, did, rest_seen)
    }

    #[test]
    fn a_marker_split_over_tokens_arms_the_grammar_with_the_text_after_it() {
        let (sent, did, rest) = auto(&[
            "Sure. <to",
            "ol_ca",
            "ll>{\"na",
            "me\":\"add\",\"arguments\":{\"a\":1}}</tool_call>",
        ]);
        assert_eq!(did, ["go", "go", "armed", "go"]);
        assert_eq!(rest.as_deref(), Some("{\"na"));
        // The text before the marker, then the call's pieces only.
        assert_eq!(
            sent[0],
            FromWorker::Token {
                id: 1,
                text: "Sure. ".into()
            }
        );
        let pieces: Vec<_> = sent[1..]
            .iter()
            .map(|m| match m {
                FromWorker::ToolCall {
                    index,
                    name,
                    arguments,
                    ..
                } => (*index, name.clone(), arguments.clone()),
                other => panic!("{other:?} after the marker"),
            })
            .collect();
        assert_eq!(pieces[0], (0, Some("add".into()), String::new()));
        let args: String = pieces[1..].iter().map(|p| p.2.as_str()).collect();
        assert_eq!(args, "{\"a\":1}");
    }

    #[test]
    fn without_a_marker_the_text_is_text_even_a_marker_cut_at_the_end() {
        let (sent, did, _) = auto(&["Hello <b>", "world</b> <tool_"]);
        assert_eq!(did, ["go", "go"]);
        let text: String = sent
            .iter()
            .map(|m| match m {
                FromWorker::Token { text, .. } => text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(text, "Hello <b>world</b> <tool_");
    }

    #[test]
    fn a_call_begun_off_its_format_is_refused_when_armed() {
        let t = tools(ToolChoice::Auto);
        let m = matcher(&t, Format::GENERIC).unwrap();
        assert!(arm(m, Format::GENERIC, "[not a call").is_err());
        let m = matcher(&t, Format::GENERIC).unwrap();
        assert!(arm(m, Format::GENERIC, "\n{\"name\":\"add\"").is_ok());
    }

    #[test]
    fn a_forced_call_routes_every_piece_to_the_calls() {
        let t = tools(ToolChoice::Required);
        let mut grammar = matcher(&t, Format::GENERIC);
        let mut sent = Vec::new();
        let mut sink = |m: &FromWorker| sent.push(m.clone());
        let mut out = Output::new(2, &[], Some(&t), Format::GENERIC, &mut grammar);
        assert!(
            grammar.is_some(),
            "forced: the grammar applies from the first token"
        );
        for p in [
            "{\"name\":\"add\",",
            "\"arguments\":{\"a\":",
            "2}}</tool_call>",
        ] {
            assert!(matches!(out.push(p.as_bytes(), &mut sink), Pushed::Go));
        }
        assert_eq!(out.finish(&mut sink), None);
        assert!(out.calls_whole());
        assert!(
            sent.iter()
                .all(|m| matches!(m, FromWorker::ToolCall { .. })),
            "{sent:?}"
        );
    }

    /// Where the marker is the call's own first text (Llama 3's
    /// `{"name"`), the grammar reads it again and so does the stream; in
    /// Mistral's format the calls are a list after `[TOOL_CALLS]`.
    #[test]
    fn each_format_arms_at_its_marker() {
        let calls = |sent: &[FromWorker]| -> Vec<(Option<String>, String)> {
            sent.iter()
                .filter_map(|m| match m {
                    FromWorker::ToolCall {
                        name, arguments, ..
                    } => Some((name.clone(), arguments.clone())),
                    _ => None,
                })
                .collect()
        };
        let (sent, did, _) = auto_in(
            Format::LLAMA3,
            &["{\"na", "me\": \"add\", \"parameters\": {\"a\":", "1}}"],
        );
        assert_eq!(did, ["go", "armed", "go"]);
        let got = calls(&sent);
        assert_eq!(got[0], (Some("add".into()), String::new()));
        assert_eq!(
            got[1..].iter().map(|c| c.1.as_str()).collect::<String>(),
            "{\"a\":1}"
        );
        // Later in a plain answer, Llama 3's marker is text.
        let (sent, did, _) = auto_in(Format::LLAMA3, &["Example: ", "{\"name\": \"x\"}", " done"]);
        assert_eq!(did, ["go", "go", "go"]);
        let text: String = sent
            .iter()
            .map(|m| match m {
                FromWorker::Token { text, .. } => text.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(text, "Example: {\"name\": \"x\"} done");
        let (sent, did, _) = auto_in(
            Format::MISTRAL,
            &[
                "[TOOL_",
                "CALLS][{\"name\":\"add\",\"arguments\":{\"a\":2}}]",
            ],
        );
        assert_eq!(did, ["go", "armed"]);
        assert_eq!(calls(&sent)[0], (Some("add".into()), String::new()));
    }
}
