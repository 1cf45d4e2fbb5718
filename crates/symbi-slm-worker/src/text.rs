//! Turning token bytes into text that is safe to stream: whole UTF-8
//! characters only, and never a piece of a stop sequence.

/// Buffers bytes until they form whole UTF-8 characters. Invalid bytes
/// become U+FFFD, as llama.cpp's own tools print them.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes and returns the text they complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // SAFETY-free: from_utf8 just told us this prefix is valid.
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match e.error_len() {
                        // Incomplete character at the end: wait for more.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(n) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left when generation ends (an unfinished character).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Holds back text that might be the start of a stop sequence.
#[derive(Debug)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What [`StopMatcher::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Matched {
    /// Text safe to emit now; generation goes on.
    Continue(String),
    /// A stop sequence matched: emit the text, then stop.
    Stop {
        /// Text before the stop sequence.
        text: String,
        /// The stop sequence.
        stop: String,
        /// Text after it (what the last piece held past the match).
        rest: String,
    },
}

impl StopMatcher {
    /// A matcher for these stop sequences (empty ones are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    /// Adds generated text.
    pub fn push(&mut self, text: &str) -> Matched {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return Matched::Continue(std::mem::take(&mut self.held));
        }
        // The earliest complete match wins.
        if let Some((pos, stop)) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|p| (p, s)))
            .min_by_key(|(p, _)| *p)
        {
            let text = self.held[..pos].to_string();
            let rest = self.held[pos + stop.len()..].to_string();
            let stop = stop.clone();
            self.held.clear();
            return Matched::Stop { text, stop, rest };
        }
        // Keep the longest suffix that is a proper prefix of a stop sequence.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let emit = self.held[..keep_from].to_string();
        self.held.drain(..keep_from);
        Matched::Continue(emit)
    }

    /// Text still held when generation ends without a match.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens() {
        let mut s = Utf8Stream::default();
        let bytes = "é€😀".as_bytes();
        let mut out = String::new();
        for b in bytes {
            out.push_str(&s.push(&[*b]));
        }
        assert_eq!(out, "é€😀");
        assert_eq!(s.push(&[0xff, b'a']), "\u{FFFD}a");
        assert_eq!(s.push(&[0xe2, 0x82]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_sequence_split_across_pieces() {
        let mut m = StopMatcher::new(&["END".into(), "\n\n".into()]);
        assert_eq!(m.push("hello E"), Matched::Continue("hello ".into()));
        assert_eq!(m.push("N"), Matched::Continue(String::new()));
        assert_eq!(
            m.push("D tail"),
            Matched::Stop {
                text: String::new(),
                stop: "END".into(),
                rest: " tail".into(),
            }
        );
        let mut m = StopMatcher::new(&["END".into()]);
        assert_eq!(m.push("EN"), Matched::Continue(String::new()));
        assert_eq!(m.push("x"), Matched::Continue("ENx".into()));
        assert_eq!(m.push("E"), Matched::Continue(String::new()));
        assert_eq!(m.finish(), "E");
    }
}
