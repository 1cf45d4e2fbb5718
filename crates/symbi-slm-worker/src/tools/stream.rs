//! Cuts the text of tool calls, as it is generated, into the pieces
//! streamed: a call's first piece names it, the next ones carry its
//! arguments.

use super::format::Format;

/// Where [`CallStream`] stands in the text after an opening marker.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Reading `{"name":"…","arguments":` (its text so far; a list's `[`
    /// and whitespace between the keys allowed).
    Head(String),
    /// In the arguments: whether begun (whitespace before them is not
    /// theirs), their depth of brackets, and whether in a string (and
    /// after a backslash there).
    Args {
        begun: bool,
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
    /// After a call's arguments: its closing text (and what opens the
    /// next call), whitespace left out.
    Tail(String),
}

/// One piece of a call, as streamed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// The call's place, from 0.
    pub index: u32,
    /// The function, in the first piece of a call.
    pub name: Option<String>,
    /// More of its arguments' JSON text.
    pub arguments: String,
}

/// Cuts the text after an opening marker (as the call grammar makes it:
/// `name` first, then the arguments, compact JSON) into calls: a call's
/// first piece names it, the next ones carry its arguments as they come.
/// The grammar guarantees the shape; text that does not have it ends the
/// calls ([`Self::broken`]).
#[derive(Debug, Clone)]
pub struct CallStream {
    format: Format,
    phase: Phase,
    /// Calls begun.
    calls: u32,
    broken: bool,
}

impl Default for CallStream {
    /// In the generic format.
    fn default() -> Self {
        Self::new(Format::GENERIC)
    }
}

impl CallStream {
    /// Calls in `format`.
    pub fn new(format: Format) -> Self {
        Self {
            format,
            phase: Phase::Head(String::new()),
            calls: 0,
            broken: false,
        }
    }

    /// Adds text; the pieces it completes.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() && !self.broken {
            match &mut self.phase {
                Phase::Head(head) => {
                    head.push_str(rest);
                    rest = "";
                    let (name, after) = match self::head(head, self.format) {
                        Head::Whole(name, after) => (name, after),
                        Head::Partial => continue,
                        Head::Broken => {
                            self.broken = true;
                            continue;
                        }
                    };
                    // What followed the head is more text to read.
                    let tail = head[after..].to_string();
                    out.push(Piece {
                        index: self.calls,
                        name: Some(name),
                        arguments: String::new(),
                    });
                    self.calls += 1;
                    self.phase = Phase::Args {
                        begun: false,
                        depth: 0,
                        in_string: false,
                        escaped: false,
                    };
                    let pieces = self.push(&tail);
                    out.extend(pieces);
                }
                Phase::Args {
                    begun,
                    depth,
                    in_string,
                    escaped,
                } => {
                    if !*begun {
                        rest = rest.trim_start();
                        if rest.is_empty() {
                            break;
                        }
                        *begun = true;
                    }
                    let mut end = None;
                    for (i, b) in rest.bytes().enumerate() {
                        if *in_string {
                            if *escaped {
                                *escaped = false;
                            } else if b == b'\\' {
                                *escaped = true;
                            } else if b == b'"' {
                                *in_string = false;
                            }
                        } else {
                            match b {
                                b'"' => *in_string = true,
                                b'{' | b'[' => *depth += 1,
                                b'}' | b']' => {
                                    *depth = depth.saturating_sub(1);
                                    if *depth == 0 {
                                        end = Some(i + 1);
                                        break;
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                    let cut = end.unwrap_or(rest.len());
                    if cut > 0 {
                        out.push(Piece {
                            index: self.calls - 1,
                            name: None,
                            arguments: rest[..cut].to_string(),
                        });
                    }
                    rest = &rest[cut..];
                    if end.is_some() {
                        self.phase = Phase::Tail(String::new());
                    }
                }
                Phase::Tail(tail) => {
                    tail.extend(rest.chars().filter(|c| !c.is_whitespace()));
                    rest = "";
                    let next = self.format.between().map(|b| format!("}}{b}"));
                    let end = format!("}}{}", self.format.end());
                    if let Some(next) = next.filter(|n| tail.starts_with(n.as_str())) {
                        let more = tail[next.len()..].to_string();
                        self.phase = Phase::Head(String::new());
                        let pieces = self.push(&more);
                        out.extend(pieces);
                    } else if !end.starts_with(tail.as_str())
                        && !self
                            .format
                            .between()
                            .is_some_and(|b| format!("}}{b}").starts_with(tail.as_str()))
                    {
                        self.broken = true;
                    }
                }
            }
        }
        out
    }

    /// Calls begun so far.
    pub fn calls(&self) -> u32 {
        self.calls
    }

    /// Whether the last call is whole (its arguments and its closing
    /// text read).
    pub fn whole(&self) -> bool {
        self.calls > 0
            && !self.broken
            && matches!(&self.phase, Phase::Tail(t) if t.starts_with(&format!("}}{}", self.format.end())))
    }

    /// Whether the text left the shape a call has.
    pub fn broken(&self) -> bool {
        self.broken
    }
}

/// `head` without whitespace outside its strings.
fn compact(head: &str) -> String {
    let mut out = String::with_capacity(head.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in head.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c.is_whitespace() {
            continue;
        }
        out.push(c);
    }
    out
}

/// What a call's head (`{"name":"…","<arguments>":`, a list's `[`
/// before it, whitespace between its parts) is so far.
enum Head {
    /// Not whole, and can still become one.
    Partial,
    /// Whole: the function's name, and where in the text the arguments
    /// begin.
    Whole(String, usize),
    /// Not a head.
    Broken,
}

fn head(text: &str, format: Format) -> Head {
    const START: &str = "{\"name\":\"";
    // A head ends at its second colon outside strings.
    let (mut in_string, mut escaped, mut colons) = (false, false, 0);
    let mut end = None;
    for (i, c) in text.char_indices() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ':' {
            colons += 1;
            if colons == 2 {
                end = Some(i + 1);
                break;
            }
        }
    }
    let short = compact(&text[..end.unwrap_or(text.len())]);
    let short = match format.list {
        true => short.strip_prefix('[').unwrap_or(&short),
        false => short.as_str(),
    };
    let Some(end) = end else {
        let fits = match short.len() <= START.len() {
            true => START.starts_with(short),
            false => short.starts_with(START),
        };
        return if fits { Head::Partial } else { Head::Broken };
    };
    let key = format!(",\"{}\":", format.arguments);
    let name = short
        .strip_prefix("{\"name\":")
        .and_then(|s| s.strip_suffix(key.as_str()))
        .and_then(|s| serde_json::from_str::<String>(s).ok());
    match name {
        Some(name) => Head::Whole(name, end),
        None => Head::Broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_cut_into_a_named_first_piece_and_argument_pieces() {
        let text = "{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Pa}ris \\\"x\\\"\"}}</tool_call><tool_call>{\"name\":\"add\",\"arguments\":{\"a\":[1,{\"b\":2}]}}</tool_call>";
        // Every way of cutting the text gives the same calls.
        for step in [1, 2, 3, 7, text.len()] {
            let mut s = CallStream::default();
            let mut pieces = Vec::new();
            let bytes: Vec<char> = text.chars().collect();
            for chunk in bytes.chunks(step) {
                pieces.extend(s.push(&chunk.iter().collect::<String>()));
            }
            assert!(!s.broken());
            assert!(s.whole(), "step {step}");
            assert_eq!(s.calls(), 2);
            let mut calls: Vec<(String, String)> = Vec::new();
            for p in pieces {
                if let Some(n) = p.name {
                    assert_eq!(p.index as usize, calls.len());
                    calls.push((n, p.arguments));
                } else {
                    calls[p.index as usize].1.push_str(&p.arguments);
                }
            }
            assert_eq!(
                calls,
                [
                    (
                        "get_weather".to_string(),
                        "{\"city\":\"Pa}ris \\\"x\\\"\"}".to_string()
                    ),
                    ("add".to_string(), "{\"a\":[1,{\"b\":2}]}".to_string()),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_call_cut_short_is_not_whole_and_other_text_is_broken() {
        let mut s = CallStream::default();
        s.push("{\"name\":\"add\",\"arguments\":{\"a\":1");
        assert!(!s.whole() && !s.broken());
        let mut s = CallStream::default();
        s.push("\n{\"name\":\"add\",\"arguments\":{}}</tool");
        assert!(!s.whole() && !s.broken());
        s.push("_call>");
        assert!(s.whole());
        let mut s = CallStream::default();
        s.push("{\"name\":\"add\",\"arguments\":{}} and more");
        assert!(s.broken());
    }

    /// Every format's calls, cut anywhere, give the same calls.
    #[test]
    fn calls_in_each_format_are_cut_alike() {
        let cases = [
            (
                Format::HERMES,
                "\n{\"name\": \"get_weather\", \"arguments\":{\"city\":\"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\":\"add\",\"arguments\":{\"a\":1}}\n</tool_call>",
                2,
            ),
            (
                Format::MISTRAL,
                "[{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}, {\"name\":\"add\",\"arguments\":{\"a\":1}}]",
                2,
            ),
            (
                Format::LLAMA3,
                "{\"name\": \"get_weather\", \"parameters\": {\"city\":\"Paris\"}}",
                1,
            ),
        ];
        for (format, text, n) in cases {
            for step in [1, 2, 5, text.len()] {
                let mut s = CallStream::new(format);
                let mut calls: Vec<(String, String)> = Vec::new();
                let chars: Vec<char> = text.chars().collect();
                for chunk in chars.chunks(step) {
                    for p in s.push(&chunk.iter().collect::<String>()) {
                        match p.name {
                            Some(name) => calls.push((name, p.arguments)),
                            None => calls[p.index as usize].1.push_str(&p.arguments),
                        }
                    }
                }
                assert!(s.whole() && !s.broken(), "{format:?} step {step}");
                assert_eq!(calls.len(), n);
                assert_eq!(
                    calls[0],
                    ("get_weather".into(), "{\"city\":\"Paris\"}".into())
                );
                if n == 2 {
                    assert_eq!(calls[1], ("add".into(), "{\"a\":1}".into()));
                }
            }
        }
        // Off the format: broken.
        for (format, text) in [
            (Format::MISTRAL, "[{\"name\":\"add\",\"arguments\":{}};"),
            (Format::LLAMA3, "{\"name\":\"add\",\"arguments\":{}}"),
            (Format::HERMES, "{\"title\":"),
        ] {
            let mut s = CallStream::new(format);
            s.push(text);
            assert!(s.broken(), "{format:?} {text}");
        }
    }
}
