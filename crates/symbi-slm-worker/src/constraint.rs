//! Output constraints: JSON Schema, any JSON object, a regular expression
//! or a Lark grammar, compiled by llguidance into a matcher that says,
//! before each token, which tokens of the vocabulary may come next.
//!
//! Compiled in the worker (a hostile schema costs only the sandboxed
//! worker) when the request arrives, before it waits or starts, so an
//! error reaches the caller before any token is spent. The compile is
//! bounded by llguidance's fuel and size limits ([`limits`]); each mask
//! is bounded by its per-step fuel. JSON is compact: no whitespace
//! outside strings (the separators are `,` and `:`).
//!
//! **Closing within the budget.** A small model wanders inside long
//! strings and arrays until `max_tokens` cuts its JSON. Near the end of
//! its budget a constrained answer is steered to close: [`Compiler::
//! closing_cost`] counts the tokens a fixed closing policy (close what is
//! open, the fewest and longest tokens first: [`Compiler::closing_pick`])
//! needs from the matcher's state to an accepting one; once that is as many
//! as remain, the policy chooses every token left, so the text ends as a
//! whole value. When even the policy needs more than remain (required
//! fields still missing), the answer is cut and says `length`.
//!
//! Independent of llama.cpp: the engine hands in its vocabulary as a
//! [`TokEnv`]; the fuzz target hands in a byte-level one.

use std::sync::Arc;

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};
use serde_json::{json, Value};
use symbiont_slm_protocol::{Constraint, RequestError};
use toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId};

use crate::unique::{Unique, Verdict};

/// llguidance's limits for one request's grammar: its defaults for time
/// (fuel: a compile within tens of milliseconds, a mask within ~15), fewer
/// lexer states (each takes 1–2 kB and they grow as a text is read: at most
/// ~20 MB a request, where the default allows 250–500 MB in a worker other
/// agents share), and no parser state in error messages. Hostile schemas
/// against them: `tests/constraints.rs`.
pub fn limits() -> ParserLimits {
    ParserLimits {
        max_lexer_states: 10_000,
        verbose_errors: false,
        ..ParserLimits::default()
    }
}

/// Compiles constraints against one vocabulary.
pub struct Compiler {
    factory: ParserFactory,
    /// Per token, how well it closes what is open outside a JSON string
    /// and inside one ([`Compiler::closing_pick`]).
    rank_out: Vec<Rank>,
    rank_in: Vec<Rank>,
    eos: TokenId,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler").finish_non_exhaustive()
    }
}

impl Compiler {
    /// A compiler for the vocabulary of `env`.
    pub fn new(env: &TokEnv) -> Result<Self, String> {
        let mut factory = ParserFactory::new_simple(env).map_err(|e| e.to_string())?;
        factory.quiet();
        *factory.limits_mut() = limits();
        let trie = env.tok_trie();
        let (rank_out, rank_in) = (0..trie.vocab_size() as u32)
            .map(|t| closing_ranks(trie.token(t), trie.is_special_token(t)))
            .unzip();
        Ok(Self {
            factory,
            rank_out,
            rank_in,
            eos: trie.eos_token(),
        })
    }

    /// A compiler over single bytes (256 tokens and an end token): for
    /// the fuzz target and tests without a model.
    pub fn bytes() -> Self {
        let words: Vec<Vec<u8>> = (0..=255u8)
            .map(|b| vec![b])
            .chain(std::iter::once(b"\xFF</s>".to_vec()))
            .collect();
        let info = TokRxInfo::new(words.len() as u32, 256);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(TokTrie::from(&info, &words)));
        Self::new(&env).expect("a byte vocabulary compiles")
    }

    /// The matcher of `constraint`, or why it cannot be compiled (naming
    /// the keyword, and where in a schema it is when that can be found).
    pub fn compile(&self, constraint: &Constraint) -> Result<Matcher, RequestError> {
        let (grammar, schema) = match constraint {
            Constraint::JsonObject => {
                let schema = crate::schema::for_engine(json!({"type": "object"}));
                (TopLevelGrammar::from_json_schema(schema), None)
            }
            Constraint::JsonSchema { schema } => {
                let value: Value =
                    serde_json::from_str(schema).map_err(|e| RequestError::Constraint {
                        detail: format!("the schema is not JSON: {e}"),
                        at: None,
                    })?;
                if !(value.is_object() || value.is_boolean()) {
                    return Err(RequestError::Constraint {
                        detail: "a JSON Schema is an object or a boolean".into(),
                        at: Some(String::new()),
                    });
                }
                let engine = crate::schema::for_engine(value.clone());
                (TopLevelGrammar::from_json_schema(engine), Some(value))
            }
            Constraint::Regex { pattern } => (TopLevelGrammar::from_regex(pattern), None),
            Constraint::Lark { grammar } => (TopLevelGrammar::from_lark(grammar.clone()), None),
        };
        let parser = self.factory.create_parser(grammar);
        let mut matcher = Matcher::new(parser);
        // The first mask too: a grammar too wide for the per-token limits
        // fails here, as the caller's error, rather than after its prompt
        // was read.
        let _ = matcher.compute_mask();
        let error = matcher.get_error();
        if let Some(e) = error {
            let at = schema.as_ref().and_then(|s| locate(s, &e));
            return Err(RequestError::Constraint {
                detail: clean(&e),
                at,
            });
        }
        Ok(matcher)
    }
}

impl Compiler {
    /// The token the closing policy takes where `mask` allows these, in
    /// JSON whose text so far leaves it in the lexical state `at`: the end
    /// token once the text is whole; in a string, a token that closes it
    /// (`"`, then closers only: `"]}`), the most closers first; outside one,
    /// a token of closers only (`}`, `]`), the most first, else `,` (on to a
    /// required field); else the longest allowed token (a forced key or a
    /// string's minimum length goes fastest; a digit before a minus sign).
    /// `None` when the mask allows nothing.
    pub fn closing_pick(&self, mask: &SimpleVob, accepting: bool, at: JsonLex) -> Option<TokenId> {
        if accepting && mask.is_allowed(self.eos) {
            return Some(self.eos);
        }
        let table = if at.in_string && !at.escaped {
            &self.rank_in
        } else {
            &self.rank_out
        };
        let mut best: Option<(TokenId, Rank)> = None;
        mask.iter_set_entries(|t| {
            let Some(&r) = table.get(t) else { return };
            if r.0 == 0 {
                return;
            }
            if best.is_none_or(|(_, b)| r > b) {
                best = Some((t as TokenId, r));
            }
        });
        best.map(|(t, _)| t)
    }

    /// How many tokens the closing policy needs from `m`'s state (its JSON
    /// text so far in the lexical state `at`) to a whole text (an accepting
    /// state), if at most `cap`: the policy played on a copy of the
    /// matcher.
    pub fn closing_cost(&self, m: &Matcher, mut at: JsonLex, cap: usize) -> Option<usize> {
        let mut m = m.deep_clone();
        let trie = self.factory.tok_env().tok_trie();
        for steps in 0..=cap {
            if m.is_accepting().ok()? {
                return Some(steps);
            }
            let mask = m.compute_mask().ok()?;
            let t = self.closing_pick(&mask, false, at)?;
            m.consume_token(t).ok()?;
            at = at.after(trie.token(t));
        }
        None
    }

    /// The bytes of token `t`.
    pub fn token_bytes(&self, t: TokenId) -> &[u8] {
        self.factory.tok_env().tok_trie().token(t)
    }

    /// The end token of this vocabulary.
    pub fn eos(&self) -> TokenId {
        self.eos
    }
}

/// Where a JSON text stands lexically: inside a string (just after a
/// backslash), or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonLex {
    in_string: bool,
    escaped: bool,
}

impl JsonLex {
    /// The state after `bytes`.
    pub fn after(mut self, bytes: &[u8]) -> Self {
        for &b in bytes {
            if !self.in_string {
                self.in_string = b == b'"';
            } else if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
        }
        self
    }
}

/// A token's closing rank (class, then plain, then not a minus sign, then
/// bytes; higher is better; [`Compiler::closing_pick`]).
type Rank = (u8, bool, bool, u16);

/// A token's closing rank outside a string and inside one: 0 never
/// (special tokens, empty ones); outside, 3 closers only (`}`, `]`), 2 a
/// comma; inside, 3 a quote then closers only; 1 anything else: plain
/// before the rest (outside a string, a token that opens something after
/// its first byte, as `><` would open the next tool call after closing
/// one, or that is only whitespace, which nothing needs, is not plain),
/// then a digit before a minus sign (which needs one more), then the
/// longer the better.
fn closing_ranks(bytes: &[u8], special: bool) -> (Rank, Rank) {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    if special || bytes.is_empty() {
        return ((0, false, false, 0), (0, false, false, 0));
    }
    let not_minus = !bytes.starts_with(b"-");
    let opens = bytes[1..].iter().any(|c| matches!(c, b'<' | b'{' | b'['));
    let blank = bytes.iter().all(u8::is_ascii_whitespace);
    let closers = |b: &[u8]| !b.is_empty() && b.iter().all(|c| matches!(c, b'}' | b']'));
    let outside = if closers(bytes) {
        (3, true, true, len)
    } else if bytes == b"," {
        (2, true, true, 1)
    } else {
        (1, !opens && !blank, not_minus, len)
    };
    let inside = match bytes.split_first() {
        Some((b'"', rest)) if rest.is_empty() || closers(rest) => (3, true, true, len),
        _ => (1, true, not_minus, len),
    };
    (outside, inside)
}

/// Tokens before the end of its budget from which an answer's closing cost
/// is watched, token by token, at least.
pub const CLOSING_WINDOW: u32 = 64;

/// The widest the watch grows (each token in it replays the closing
/// policy: the window bounds that work).
pub const MAX_WINDOW: u32 = 2 * CLOSING_WINDOW;

/// Before the watch, the closing cost is probed every [`PROBE_EVERY`]
/// tokens of the last [`PROBE_FROM`]: a schema whose closing needs more
/// than the window (many required fields still to write, each with a
/// format) then has its watch start earlier, at its cost and half a window
/// more, up to [`MAX_WINDOW`]. A probe that finds the policy cannot close
/// within that (it may never close: a pattern the longest tokens cannot
/// end) changes nothing.
pub const PROBE_FROM: u32 = MAX_WINDOW + PROBE_EVERY;
/// See [`PROBE_FROM`].
pub const PROBE_EVERY: u32 = 32;

/// A request's matcher and where its answer stands against its budget.
#[allow(missing_debug_implementations)] // llguidance's Matcher has no Debug
pub struct Guided {
    /// The constraint's matcher: it has consumed every token sampled.
    pub matcher: Matcher,
    closing: bool,
    steered: u32,
    /// The JSON text's lexical state; `None` for a regex or a grammar
    /// (not steered: the policy knows JSON).
    json: Option<JsonLex>,
    /// The schema's unique arrays, when it has any (`uniqueItems`).
    unique: Option<Unique>,
    /// Tokens before the end of the budget from which the closing cost is
    /// watched token by token: [`CLOSING_WINDOW`], or more after a probe.
    window: u32,
    /// The budget left at the last probe (a step may vet more than one
    /// token: one probe a step).
    probed: u32,
}

impl Guided {
    /// A fresh answer under `matcher`, whose output is JSON (steered to
    /// close near the end of its budget) or not.
    pub fn new(matcher: Matcher, json: bool) -> Self {
        Self {
            matcher,
            closing: false,
            steered: 0,
            json: json.then(JsonLex::default),
            unique: None,
            window: CLOSING_WINDOW,
            probed: u32::MAX,
        }
    }

    /// The same, keeping the items of `schema`'s unique arrays unique
    /// (when it has any: see [`crate::unique`]).
    pub fn with_unique_items(mut self, constraint: Option<&Constraint>) -> Self {
        if let Some(Constraint::JsonSchema { schema }) = constraint {
            if let Ok(value) = serde_json::from_str::<Value>(schema) {
                if crate::schema::has_unique_items(&value) {
                    self.unique = Some(Unique::new(value));
                }
            }
        }
        self
    }

    /// Notes the bytes of a token the matcher consumed.
    pub fn consumed(&mut self, bytes: &[u8]) {
        if let Some(at) = self.json.as_mut() {
            *at = at.after(bytes);
        }
        if let Some(u) = self.unique.as_mut() {
            u.push(bytes);
        }
    }

    /// Whether `token` would complete an item equal to an earlier one of
    /// an array the schema holds unique, or leave an item that can end
    /// only as one ([`Unique::check`]).
    pub fn dead_end(&self, c: &Compiler, token: TokenId) -> bool {
        self.unique
            .as_ref()
            .is_some_and(|u| u.check(c.token_bytes(token)) == Verdict::Duplicate)
    }

    /// The token the closing policy takes now, once the answer is
    /// closing (see [`Self::vet`]); `mask` is what the matcher allows now.
    pub fn steer(&mut self, c: &Compiler, mask: &SimpleVob) -> Option<TokenId> {
        let at = self.json?;
        if !self.closing {
            return None;
        }
        let accepting = self.matcher.is_accepting().unwrap_or(false);
        let pick = c.closing_pick(mask, accepting, at)?;
        if pick != c.eos() {
            self.steered += 1;
        }
        Some(pick)
    }

    /// Within the last tokens of the budget (the watch window), whether
    /// the model's `token` still leaves room to close: the closing policy,
    /// played on a copy of the matcher after it, must reach a whole value
    /// within the `remaining - 1` tokens left then. If not, the answer
    /// starts closing now and the policy's token replaces the model's.
    /// Before the window, a probe now and then may widen it
    /// ([`PROBE_FROM`]).
    pub fn vet(
        &mut self,
        c: &Compiler,
        mask: &SimpleVob,
        token: TokenId,
        remaining: u32,
    ) -> Option<TokenId> {
        let at = self.json?;
        if token == c.eos() {
            return None;
        }
        let probe = remaining > self.window
            && remaining <= PROBE_FROM
            && remaining % PROBE_EVERY == 0
            && self.probed != remaining;
        if remaining > self.window && !probe {
            return None;
        }
        let mut after = self.matcher.deep_clone();
        after.consume_token(token).ok()?;
        let cap = match probe {
            true => MAX_WINDOW,
            false => remaining - 1,
        };
        let cost = if after.is_stopped() {
            Some(0)
        } else {
            c.closing_cost(&after, at.after(c.token_bytes(token)), cap as usize)
        };
        if probe {
            self.probed = remaining;
            // Watch from the cost and half a window more.
            if let Some(n) = cost {
                let from = (n as u32).saturating_add(CLOSING_WINDOW / 2);
                self.window = self.window.max(from.min(MAX_WINDOW));
            }
            return None;
        }
        if cost.is_some() {
            return None;
        }
        self.closing = true;
        self.steer(c, mask)
    }

    /// Tokens the closing policy chose.
    pub fn steered(&self) -> u32 {
        self.steered
    }

    /// Whether the closing policy chose any token.
    pub fn was_steered(&self) -> bool {
        self.steered > 0
    }
}

/// llguidance's message without its framing ("Unimplemented keys" and
/// the like are kept).
pub(crate) fn clean(e: &str) -> String {
    // Never a backtrace (llguidance turns its panics into errors with one).
    let e = e.split("<backtrace>").next().unwrap_or(e);
    let e = e.split("stack backtrace").next().unwrap_or(e);
    let e = e.trim();
    let e = e.strip_prefix("parser error: ").unwrap_or(e);
    let e = e.trim_end_matches("<non-verbose/>").trim();
    let mut out: String = e.chars().take(400).collect();
    if out.len() < e.len() {
        out.push('…');
    }
    out
}

/// Where in `schema` the keyword an error names is: the JSON pointer of
/// the first (depth-first) object holding an unimplemented key or the
/// unknown format the message names.
fn locate(schema: &Value, error: &str) -> Option<String> {
    let wanted: Vec<(String, Option<String>)> =
        if let Some(rest) = error.split("Unimplemented keys: ").nth(1) {
            let list = rest.split(']').next().unwrap_or("");
            list.split(',')
                .map(|k| {
                    k.trim()
                        .trim_start_matches('[')
                        .trim_matches('"')
                        .to_string()
                })
                .filter(|k| !k.is_empty())
                .map(|k| (k, None))
                .collect()
        } else if let Some(rest) = error.split("Unknown format: ").nth(1) {
            let format = rest.split_whitespace().next().unwrap_or("").to_string();
            vec![("format".to_string(), Some(format))]
        } else {
            return None;
        };
    /// Keywords whose object's keys are names (of properties, of
    /// definitions), not keywords.
    const NAME_MAPS: [&str; 6] = [
        "properties",
        "patternProperties",
        "$defs",
        "definitions",
        "dependentSchemas",
        "dependencies",
    ];
    /// Keywords whose values are data, not schemas (and `x-` extensions).
    const DATA: [&str; 7] = [
        "enum",
        "const",
        "default",
        "examples",
        "required",
        "dependentRequired",
        "discriminator",
    ];
    /// `names`: `v` is a name map, whose values are schemas.
    fn walk(
        v: &Value,
        names: bool,
        path: &mut Vec<String>,
        wanted: &[(String, Option<String>)],
    ) -> Option<String> {
        let mut children: Vec<(String, &Value, bool)> = Vec::new();
        match v {
            Value::Object(map) if names => {
                children.extend(map.iter().map(|(k, c)| (k.clone(), c, false)));
            }
            Value::Object(map) => {
                for (key, value) in wanted {
                    let hit = match (map.get(key), value) {
                        (Some(_), None) => true,
                        (Some(Value::String(s)), Some(v)) => s == v,
                        _ => false,
                    };
                    if hit {
                        return Some(pointer(path, key));
                    }
                }
                children.extend(
                    map.iter()
                        .filter(|(k, _)| !DATA.contains(&k.as_str()) && !k.starts_with("x-"))
                        .map(|(k, c)| (k.clone(), c, NAME_MAPS.contains(&k.as_str()))),
                );
            }
            Value::Array(items) => {
                children.extend(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (i.to_string(), c, false)),
                );
            }
            _ => {}
        }
        for (k, child, names) in children {
            path.push(k);
            let found = walk(child, names, path, wanted);
            path.pop();
            if found.is_some() {
                return found;
            }
        }
        None
    }
    walk(schema, false, &mut Vec::new(), &wanted)
}

/// The JSON pointer (RFC 6901) of `key` under `path`.
fn pointer(path: &[String], key: &str) -> String {
    path.iter()
        .map(String::as_str)
        .chain(std::iter::once(key))
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(m: &mut Matcher, text: &str) -> Result<(), String> {
        for b in text.bytes() {
            let mask = m.compute_mask().map_err(|e| e.to_string())?;
            if !mask.is_allowed(u32::from(b)) {
                return Err(format!("byte {:?} refused", b as char));
            }
            m.consume_token(u32::from(b)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn refused(c: &Compiler, constraint: &Constraint) -> RequestError {
        match c.compile(constraint) {
            Ok(_) => panic!("compiled: {constraint:?}"),
            Err(e) => e,
        }
    }

    fn schema(s: Value) -> Constraint {
        Constraint::JsonSchema {
            schema: s.to_string(),
        }
    }

    #[test]
    fn a_schema_allows_its_values_compact_and_refuses_others() {
        let c = Compiler::bytes();
        let s = schema(json!({
            "type": "object",
            "properties": {"n": {"type": "integer"}, "s": {"enum": ["a", "b"]}},
            "required": ["n", "s"],
            "additionalProperties": false
        }));
        let mut m = c.compile(&s).unwrap();
        text_of(&mut m, r#"{"n":12,"s":"b"}"#).unwrap();
        assert!(m.is_accepting().unwrap());
        // Whitespace outside strings is not free.
        let mut m = c.compile(&s).unwrap();
        assert!(text_of(&mut m, r#"{ "n":1"#).is_err());
        // A value the schema refuses.
        let mut m = c.compile(&s).unwrap();
        assert!(text_of(&mut m, r#"{"n":1,"s":"c""#).is_err());
    }

    /// A `$schema` naming a dialect the engine does not know is read as
    /// draft 7 (it is never fetched); a known one is kept, and its keywords
    /// still hold.
    #[test]
    fn an_unknown_dialect_is_read_as_draft_7() {
        let c = Compiler::bytes();
        for dialect in [
            "http://json-schema.org/schema#",
            "http://iglucentral.com/schemas/com.snowplowanalytics.self-desc/schema/jsonschema/1-0-0#",
            "http://json-schema.org/draft-04/schema#",
        ] {
            let s = schema(json!({
                "$schema": dialect,
                "type": "object",
                "properties": {"n": {"type": "integer", "maximum": 9}},
                "required": ["n"],
                "additionalProperties": false
            }));
            let mut m = c.compile(&s).unwrap_or_else(|e| panic!("{dialect}: {e:?}"));
            text_of(&mut m, r#"{"n":7}"#).unwrap();
            assert!(m.is_accepting().unwrap());
            let mut m = c.compile(&s).unwrap();
            assert!(text_of(&mut m, r#"{"n":12}"#).is_err(), "{dialect}");
        }
    }

    /// A schema with `uniqueItems` compiles (the engine does not see the
    /// keyword) and its matcher's answer is tracked: a repeated item of
    /// the unique array is caught, another is not.
    #[test]
    fn unique_items_compile_and_are_tracked() {
        let c = Compiler::bytes();
        let s = schema(json!({
            "type": "object",
            "properties": {"tags": {"type": "array", "items": {"enum": ["cat", "dog"]}, "uniqueItems": true}},
            "required": ["tags"]
        }));
        let m = c.compile(&s).unwrap();
        let mut g = Guided::new(m, true).with_unique_items(Some(&s));
        let feed = |g: &mut Guided, text: &[u8]| {
            for &b in text {
                assert!(g.matcher.compute_mask().unwrap().is_allowed(u32::from(b)));
                g.matcher.consume_token(u32::from(b)).unwrap();
                g.consumed(&[b]);
            }
        };
        feed(&mut g, br#"{"tags":["cat","#);
        // The bytes compiler's tokens are bytes: `"` leaves `cat` or `dog`
        // open; `"c` can only become the repeat `cat`.
        assert!(!g.dead_end(&c, u32::from(b'"')));
        feed(&mut g, b"\"");
        assert!(g.dead_end(&c, u32::from(b'c')), "leads only to a repeat");
        assert!(!g.dead_end(&c, u32::from(b'd')));
        // Without the tracker (the same answer, no `uniqueItems` kept),
        // nothing is refused.
        let mut plain = Guided::new(c.compile(&s).unwrap(), true);
        feed(&mut plain, br#"{"tags":["cat",""#);
        assert!(!plain.dead_end(&c, u32::from(b'c')));
    }

    /// Whether the engine allows the whole of `text` under `schema`.
    fn allows(c: &Compiler, schema_: &Value, text: &str) -> bool {
        let mut m = c.compile(&schema(schema_.clone())).expect("compiles");
        text_of(&mut m, text).is_ok() && m.is_accepting().unwrap()
    }

    #[test]
    fn keywords_the_engine_lacks_are_rewritten_and_hold() {
        let c = Compiler::bytes();
        let rule = |name: &str| json!({"type": "object", "properties": {name: {"type": "string"}}, "required": [name], "additionalProperties": false});
        let cases = [
            // Helm's chart: `if` without `then`.
            (
                json!({"type": "object", "properties": {"v": {"type": "string"}, "d": {"type": "integer"}},
                       "if": {"properties": {"v": {"const": "v3"}}}, "else": {"properties": {"d": false}}}),
                [r#"{"v":"v3","d":1}"#, r#"{"v":"v2"}"#],
                [r#"{"v":"v2","d":1}"#, r#"{"d":1,"v":"v1"}"#],
            ),
            // size-limit: a negated condition.
            (
                json!({"type": "object", "properties": {"webpack": {"type": "boolean"}, "config": {"type": "string"}},
                       "if": {"not": {"properties": {"webpack": {"enum": [false]}}}},
                       "then": {"properties": {"config": {"pattern": "^/"}}}}),
                [
                    r#"{"webpack":false,"config":"x"}"#,
                    r#"{"webpack":true,"config":"/a"}"#,
                ],
                [
                    r#"{"webpack":true,"config":"x"}"#,
                    r#"{"config":"y","webpack":true}"#,
                ],
            ),
            (
                json!({"type": "object", "additionalProperties": {"type": "integer"}, "propertyNames": {"enum": ["a", "b"]}}),
                [r#"{"a":1}"#, r#"{"a":1,"b":2}"#],
                [r#"{"c":1}"#, r#"{"a":"x"}"#],
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "minProperties": 1}),
                [r#"{"b":2}"#, r#"{"a":1,"b":2}"#],
                ["{}", r#"{"a":"x"}"#],
            ),
            // Prometheus' rules: a `oneOf` of `$ref`s.
            (
                json!({"definitions": {"rec": rule("record"), "alert": rule("alert")},
                       "oneOf": [{"$ref": "#/definitions/rec"}, {"$ref": "#/definitions/alert"}]}),
                [r#"{"record":"x"}"#, r#"{"alert":"y"}"#],
                [r#"{"record":"x","alert":"y"}"#, "{}"],
            ),
            (
                json!({"type": "string", "format": "uri-reference"}),
                [r#""../a?b#c""#, r#""https://example.com/""#],
                [r#""a b""#, r#""1a:b""#],
            ),
            (
                json!({"type": "integer", "format": "int32"}),
                ["2147483647", "-2147483648"],
                ["2147483648", "-2147483649"],
            ),
            (
                json!({"type": "integer", "format": "int64"}),
                ["9007199254740991", "-9007199254740991"],
                ["9007199254740992", "9223372036854775808"],
            ),
        ];
        for (s, good, bad) in cases {
            for text in good {
                assert!(allows(&c, &s, text), "{s} allows {text}");
            }
            for text in bad {
                assert!(!allows(&c, &s, text), "{s} refuses {text}");
            }
        }
    }

    #[test]
    fn json_mode_regex_and_lark_constrain() {
        let c = Compiler::bytes();
        let mut m = c.compile(&Constraint::JsonObject).unwrap();
        assert!(text_of(&mut m, "[1]").is_err());
        let mut m = c.compile(&Constraint::JsonObject).unwrap();
        text_of(&mut m, r#"{"a":[1,{"b":null}]}"#).unwrap();
        let rx = Constraint::Regex {
            pattern: r"\d{3}-[a-z]+".into(),
        };
        let mut m = c.compile(&rx).unwrap();
        text_of(&mut m, "123-ab").unwrap();
        let mut m = c.compile(&rx).unwrap();
        assert!(text_of(&mut m, "12a").is_err());
        let lark = Constraint::Lark {
            grammar: "start: \"yes\" | \"no\"".into(),
        };
        let mut m = c.compile(&lark).unwrap();
        text_of(&mut m, "no").unwrap();
        assert!(m.is_accepting().unwrap());
        let mut m = c.compile(&lark).unwrap();
        assert!(text_of(&mut m, "maybe").is_err());
    }

    #[test]
    fn errors_name_the_keyword_and_where_it_is() {
        let c = Compiler::bytes();
        let e = refused(
            &c,
            &schema(json!({
                "type": "object",
                "properties": {
                    "if": {"enum": [{"if": 1}]},
                    "a": {"type": "object", "properties": {"b": {"type": "string", "contentEncoding": "base64", "not": {"const": "if"}}}}
                }
            })),
        );
        let RequestError::Constraint { detail, at } = e else {
            panic!("{e:?}")
        };
        assert!(detail.contains("\"not\""), "{detail}");
        assert_eq!(at.as_deref(), Some("/properties/a/properties/b/not"));
        let e = refused(
            &c,
            &schema(json!({"type": "string", "format": "no-such-format"})),
        );
        let RequestError::Constraint { detail, at } = e else {
            panic!("{e:?}")
        };
        assert!(detail.contains("no-such-format"), "{detail}");
        assert_eq!(at.as_deref(), Some("/format"));
        for (bad, says) in [(r#"{"type": "#, "not JSON"), ("[1]", "object or a boolean")] {
            let e = refused(&c, &Constraint::JsonSchema { schema: bad.into() });
            assert!(e.to_string().contains(says), "{e}");
        }
        let e = refused(
            &c,
            &Constraint::Lark {
                grammar: "start: undefined_rule".into(),
            },
        );
        assert!(e.to_string().contains("undefined_rule"), "{e}");
        // The allowed case: the same shapes compile without the bad parts.
        c.compile(&schema(json!({"type": "string", "format": "date-time"})))
            .unwrap();
    }

    /// Feeds `text` and then lets the closing policy finish; the whole.
    fn closed(c: &Compiler, constraint: &Constraint, text: &str) -> (String, usize) {
        let mut m = c.compile(constraint).unwrap();
        text_of(&mut m, text).unwrap();
        let mut at = JsonLex::default().after(text.as_bytes());
        let cost = c.closing_cost(&m, at, 100).expect("closes");
        let mut out = text.to_string();
        loop {
            let accepting = m.is_accepting().unwrap();
            let mask = m.compute_mask_or_eos().unwrap();
            let t = c.closing_pick(&mask, accepting, at).unwrap();
            if t == c.eos() {
                break;
            }
            out.push(t as u8 as char);
            m.consume_token(t).unwrap();
            at = at.after(&[t as u8]);
        }
        assert_eq!(out.len() - text.len(), cost, "{out}");
        (out, cost)
    }

    #[test]
    fn the_closing_policy_closes_what_is_open_in_as_few_tokens_as_it_counts() {
        let c = Compiler::bytes();
        let s = schema(json!({
            "type": "object",
            "properties": {
                "a": {"type": "array", "items": {"type": "string"}},
                "n": {"type": "integer"},
                "b": {"type": "string", "minLength": 3}
            },
            "required": ["a", "n"]
        }));
        // In a string in an array: close the string, the array, then the
        // required integer's key and a digit, then the object.
        let (out, cost) = closed(&c, &s, r#"{"a":["once upon a ti"#);
        let v: Value = serde_json::from_str(&out).expect(&out);
        assert_eq!(v["a"][0], "once upon a ti");
        assert!(v["n"].is_i64(), "{out}");
        assert_eq!(cost, out.len() - r#"{"a":["once upon a ti"#.len());
        // A string with a minimum length is filled to it first.
        let (out, _) = closed(&c, &s, r#"{"a":[],"n":7,"b":"x"#);
        let v: Value = serde_json::from_str(&out).expect(&out);
        assert_eq!(v["b"].as_str().unwrap().len(), 3, "{out}");
        // Already whole: nothing to add.
        let (_, cost) = closed(&c, &s, r#"{"a":[],"n":1}"#);
        assert_eq!(cost, 0);
        // A cap below the cost says it cannot close in time.
        let mut m = c.compile(&s).unwrap();
        text_of(&mut m, r#"{"a":["x"#).unwrap();
        let at = JsonLex::default().after(br#"{"a":["x"#);
        assert!(c.closing_cost(&m, at, 3).is_none());
        // In a string, brackets are text: a quote closes it.
        let (out, _) = closed(&c, &s, r#"{"a":["]]\""#);
        let v: Value = serde_json::from_str(&out).expect(&out);
        assert_eq!(v["a"][0], "]]\"", "{out}");
    }

    #[test]
    fn the_callers_engine_options_are_replaced() {
        let c = Compiler::bytes();
        // A schema asking for free whitespace gets compact JSON anyway.
        let mut m = c
            .compile(&schema(json!({"type": "array", "x-guidance": {"whitespace_flexible": true, "lenient": true}})))
            .unwrap();
        assert!(text_of(&mut m, "[ 1").is_err());
    }
}
