//! `uniqueItems`, which the engine (llguidance) does not implement and a
//! grammar cannot express: enforced here, as the answer is sampled.
//!
//! The schema goes to the engine without the keyword
//! ([`crate::schema::for_engine`]); this
//! tracker follows the answer's JSON byte by byte, knows which arrays a
//! `uniqueItems: true` applies to (walking the schema along the answer's
//! keys and indices: `properties`, `patternProperties`,
//! `additionalProperties`, `items`, `prefixItems`, local `$ref`s and every
//! branch of `allOf`/`anyOf`/`oneOf` and `if`/`then`/`else`/`not`, so that an array any branch holds
//! unique is kept unique), and refuses a token that would complete an item
//! equal (as JSON: `1` equals `1.0`, key order does not count) to an
//! earlier item of such an array, or, where the item's schemas list its
//! values (`enum`, `const`), a token after which only used values remain
//! (`"kub` when `"kubernetes.io/hostname"` is taken; a separator when
//! every listed value is taken). The sampler then
//! takes the next best token, so the item goes on differently (a longer
//! string, another value). Where no other token is allowed (more items
//! required than distinct values exist, a pattern or a length that admits
//! only the repeat), the repeat stands: the answer ends then, never
//! stalls. The closing policy's tokens (the last tokens of a budget) are
//! not checked.

use serde_json::{Map, Value};

/// Most schema nodes one position of the answer is checked against (the
/// branches of nested `anyOf`s multiply); past it, the rest are not.
const MAX_NODES: usize = 64;

/// A container of the answer being written.
#[derive(Clone, Debug)]
struct Frame {
    array: bool,
    /// JSON pointers (into the root schema) of the schemas that apply here.
    schemas: Vec<String>,
    /// An array whose items must be unique.
    unique: bool,
    /// An array's items so far (when `unique`).
    items: Vec<Value>,
    /// An array's index of the item being written.
    index: usize,
    /// An object's key of the value being written.
    key: String,
    /// An object: the next string is a key.
    expect_key: bool,
    /// An array: an item is begun and not yet whole.
    open: bool,
    /// An array: the values its item being written may take, as the
    /// engine writes them, when its schemas list them all (a string or a
    /// scalar item under `enum`/`const`).
    choices: Option<Vec<(Vec<u8>, Value)>>,
}

/// Where the answer's JSON stands, and the items of its unique arrays.
#[derive(Clone, Debug)]
pub struct Unique {
    root: std::sync::Arc<Value>,
    /// `prefixItems` holds (Draft 2020-12, the engine's default), not a
    /// tuple `items` (earlier drafts, and an unknown one: draft 7).
    modern: bool,
    stack: Vec<Frame>,
    /// The answer so far.
    text: Vec<u8>,
    in_string: bool,
    escaped: bool,
    /// Where the value being written began (a scalar, a string, a
    /// container), per depth: the top one is the innermost.
    starts: Vec<usize>,
    /// Where the key string being written began.
    key_start: Option<usize>,
    /// A number or a literal is being written.
    scalar: bool,
}

/// What a token does to the answer's unique arrays.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Fine,
    /// It completes an item equal to an earlier one of a unique array.
    Duplicate,
}

impl Unique {
    /// A tracker for answers to `schema` (the caller's, `uniqueItems` and
    /// all).
    pub fn new(schema: Value) -> Self {
        let modern = match schema.get("$schema").and_then(Value::as_str) {
            None => true,
            Some(d) => d.trim_end_matches('#') == "https://json-schema.org/draft/2020-12/schema",
        };
        Self {
            modern,
            root: std::sync::Arc::new(schema),
            stack: Vec::new(),
            text: Vec::new(),
            in_string: false,
            escaped: false,
            starts: Vec::new(),
            key_start: None,
            scalar: false,
        }
    }

    /// What `bytes` would do, the tracker unchanged: a repeat when they
    /// complete an item equal to an earlier one, or leave an item whose
    /// listed values all start otherwise or are used.
    pub fn check(&self, bytes: &[u8]) -> Verdict {
        let mut probe = self.clone();
        if probe.push(bytes) == Verdict::Duplicate {
            return Verdict::Duplicate;
        }
        probe.only_repeats_left()
    }

    /// Whether the item being written (a listed value's first bytes) can
    /// now end only as a value already used.
    fn only_repeats_left(&self) -> Verdict {
        let Some(f) = self.stack.last() else {
            return Verdict::Fine;
        };
        // Just after a separator: another item must follow; when its
        // listed values are all used, the separator leads only to a repeat
        // (the array should close instead).
        if f.array && f.unique && !f.open && self.text.last() == Some(&b',') {
            let spent = self.listed_values().is_some_and(|values| {
                values
                    .iter()
                    .all(|(_, v)| f.items.iter().any(|x| json_eq(x, v)))
            });
            return if spent {
                Verdict::Duplicate
            } else {
                Verdict::Fine
            };
        }
        let Some(&start) = self.starts.last() else {
            return Verdict::Fine;
        };
        let Some(choices) = f.choices.as_ref().filter(|_| f.unique && f.open) else {
            return Verdict::Fine;
        };
        let written = &self.text[start..];
        let (mut used, mut unused) = (false, false);
        for (_, value) in choices.iter().filter(|(t, _)| t.starts_with(written)) {
            if f.items.iter().any(|x| json_eq(x, value)) {
                used = true;
            } else {
                unused = true;
            }
        }
        if used && !unused {
            Verdict::Duplicate
        } else {
            Verdict::Fine
        }
    }

    /// Takes `bytes` of the answer.
    pub fn push(&mut self, bytes: &[u8]) -> Verdict {
        let mut verdict = Verdict::Fine;
        for &b in bytes {
            if self.byte(b) == Verdict::Duplicate {
                verdict = Verdict::Duplicate;
            }
        }
        verdict
    }

    fn byte(&mut self, b: u8) -> Verdict {
        let at = self.text.len();
        self.text.push(b);
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if let Some(from) = self.key_start.take() {
                    let key = serde_json::from_slice::<String>(&self.text[from..=at]);
                    if let Some(f) = self.stack.last_mut() {
                        f.key = key.unwrap_or_default();
                    }
                    return Verdict::Fine;
                }
                return self.value_done(at);
            }
            return Verdict::Fine;
        }
        let mut verdict = Verdict::Fine;
        if self.scalar && matches!(b, b',' | b']' | b'}' | b' ' | b'\n' | b'\t' | b'\r') {
            self.scalar = false;
            verdict = self.value_done(at.saturating_sub(1));
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.stack.last().is_some_and(|f| !f.array && f.expect_key) {
                    self.key_start = Some(at);
                    if let Some(f) = self.stack.last_mut() {
                        f.expect_key = false;
                    }
                } else {
                    self.begin(at, true);
                }
            }
            b'{' | b'[' => {
                self.begin(at, false);
                let schemas = self.child_schemas();
                let array = b == b'[';
                let unique = array && self.any_unique(&schemas);
                self.stack.push(Frame {
                    array,
                    schemas,
                    unique,
                    items: Vec::new(),
                    index: 0,
                    key: String::new(),
                    expect_key: !array,
                    open: false,
                    choices: None,
                });
            }
            b'}' | b']' => {
                self.stack.pop();
                if verdict == Verdict::Fine {
                    verdict = self.value_done(at);
                } else {
                    self.value_done(at);
                }
            }
            b',' => {
                if let Some(f) = self.stack.last_mut() {
                    if f.array {
                        f.index += 1;
                    } else {
                        f.expect_key = true;
                    }
                }
            }
            b':' | b' ' | b'\n' | b'\t' | b'\r' => {}
            _ => {
                if !self.scalar {
                    self.scalar = true;
                    self.begin(at, true);
                }
                // A literal is whole at its last letter: nothing may
                // follow it but a separator.
                let from = self.starts.last().copied().unwrap_or(at);
                if matches!(&self.text[from..=at], b"true" | b"false" | b"null") {
                    self.scalar = false;
                    return self.value_done(at);
                }
            }
        }
        verdict
    }

    /// Whether an item of a unique array is begun and not yet whole (at
    /// any depth): a token may then lead only to repeats.
    pub fn pending(&self) -> bool {
        self.stack.iter().any(|f| f.unique && f.open)
    }

    /// A value begins at `at` (a string or a scalar: `leaf`).
    fn begin(&mut self, at: usize, leaf: bool) {
        self.starts.push(at);
        let choices = match self.stack.last() {
            Some(f) if f.array && f.unique && leaf => self.listed_values(),
            _ => None,
        };
        if let Some(f) = self.stack.last_mut() {
            f.open = true;
            f.choices = choices;
        }
    }

    /// The values the item about to be written may take, when its schemas
    /// list them: every schema of it either lists values (`enum`,
    /// `const`) or only combines others (`$ref`, `allOf`, `anyOf`,
    /// `oneOf`, annotations), so their union holds every value it may
    /// take (more, under `allOf`: never fewer).
    fn listed_values(&self) -> Option<Vec<(Vec<u8>, Value)>> {
        let mut out = Vec::new();
        for p in self.child_schemas() {
            let Some(Value::Object(s)) = self.root.pointer(&p) else {
                continue;
            };
            if let Some(c) = s.get("const") {
                out.push(c.clone());
            } else if let Some(Value::Array(e)) = s.get("enum") {
                out.extend(e.iter().cloned());
            } else if !s.keys().all(|k| COMBINING.contains(&k.as_str())) {
                return None;
            }
        }
        if out.is_empty() {
            return None;
        }
        let written = out
            .into_iter()
            .filter_map(|v| serde_json::to_vec(&v).ok().map(|t| (t, v)))
            .collect();
        Some(written)
    }

    /// A value that began at the top of `starts` ended at `end`: an item
    /// of a unique array is compared with the earlier ones.
    fn value_done(&mut self, end: usize) -> Verdict {
        let Some(start) = self.starts.pop() else {
            return Verdict::Fine;
        };
        let Some(f) = self.stack.last_mut() else {
            return Verdict::Fine;
        };
        f.open = false;
        if !f.array || !f.unique {
            return Verdict::Fine;
        }
        let Ok(item) = serde_json::from_slice::<Value>(&self.text[start..=end]) else {
            return Verdict::Fine;
        };
        if f.items.iter().any(|x| json_eq(x, &item)) {
            return Verdict::Duplicate;
        }
        f.items.push(item);
        Verdict::Fine
    }

    /// The schemas of the value about to be written (at the top level,
    /// the root; in an object, its key's; in an array, its index's).
    fn child_schemas(&self) -> Vec<String> {
        let Some(f) = self.stack.last() else {
            return self.expand(&[String::new()]);
        };
        let mut out = Vec::new();
        for p in &f.schemas {
            let Some(Value::Object(s)) = self.root.pointer(p) else {
                continue;
            };
            if f.array {
                children_at_index(s, p, f.index, self.modern, &mut out);
            } else {
                children_at_key(s, p, &f.key, &mut out);
            }
        }
        self.expand(&out)
    }

    /// The schemas `pointers` stand for, with their `$ref`s followed and
    /// their `allOf`/`anyOf`/`oneOf` branches and `if`/`then`/`else`/`not` added (at most
    /// [`MAX_NODES`]).
    fn expand(&self, pointers: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut todo: Vec<String> = pointers.to_vec();
        while let Some(p) = todo.pop() {
            if out.len() >= MAX_NODES || out.contains(&p) {
                continue;
            }
            let Some(Value::Object(s)) = self.root.pointer(&p) else {
                continue;
            };
            if let Some(Value::String(r)) = s.get("$ref") {
                if let Some(target) = local_pointer(r) {
                    todo.push(target);
                }
            }
            for k in ["allOf", "anyOf", "oneOf"] {
                if let Some(Value::Array(a)) = s.get(k) {
                    todo.extend((0..a.len()).map(|i| format!("{p}/{k}/{i}")));
                }
            }
            // Either may apply (the engine gets them as branches), and a
            // condition (or what it negates) is held positively in one.
            for k in ["if", "then", "else", "not"] {
                if s.get(k).is_some_and(Value::is_object) {
                    todo.push(format!("{p}/{k}"));
                }
            }
            out.push(p);
        }
        out
    }

    fn any_unique(&self, schemas: &[String]) -> bool {
        schemas.iter().any(|p| {
            self.root
                .pointer(p)
                .and_then(|s| s.get("uniqueItems"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
    }
}

/// The schemas of key `key` under object schema `s` (at pointer `p`):
/// its property's, every pattern property's (a pattern is not matched
/// here: an array under any of them is kept unique if it says so), else
/// `additionalProperties`.
fn children_at_key(s: &Map<String, Value>, p: &str, key: &str, out: &mut Vec<String>) {
    let named = s
        .get("properties")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key(key));
    if named {
        out.push(format!("{p}/properties/{}", escape(key)));
    }
    if let Some(Value::Object(m)) = s.get("patternProperties") {
        out.extend(
            m.keys()
                .map(|k| format!("{p}/patternProperties/{}", escape(k))),
        );
    }
    if !named && s.get("additionalProperties").is_some_and(Value::is_object) {
        out.push(format!("{p}/additionalProperties"));
    }
}

/// Keys of a schema that only combines others, or annotates.
const COMBINING: [&str; 11] = [
    "$ref",
    "allOf",
    "anyOf",
    "oneOf",
    "title",
    "description",
    "$comment",
    "examples",
    "default",
    "$id",
    "$schema",
];

/// The schemas of item `i` under array schema `s` (at pointer `p`): in
/// Draft 2020-12 (`modern`) `prefixItems` then `items`; before it, a tuple
/// `items` then `additionalItems`, or `items` for all.
fn children_at_index(
    s: &Map<String, Value>,
    p: &str,
    i: usize,
    modern: bool,
    out: &mut Vec<String>,
) {
    let tuple = if modern { "prefixItems" } else { "items" };
    let rest = if modern { "items" } else { "additionalItems" };
    if let Some(Value::Array(a)) = s.get(tuple) {
        if i < a.len() {
            out.push(format!("{p}/{tuple}/{i}"));
        } else if s.get(rest).is_some_and(Value::is_object) {
            out.push(format!("{p}/{rest}"));
        }
        return;
    }
    if s.get("items").is_some_and(Value::is_object) {
        out.push(format!("{p}/items"));
    }
}

/// The JSON pointer of a local `$ref` (`#`, `#/…`), percent-decoding
/// aside; `None` for another document's.
pub(crate) fn local_pointer(r: &str) -> Option<String> {
    let rest = r.strip_prefix('#')?;
    (rest.is_empty() || rest.starts_with('/')).then(|| rest.to_string())
}

/// A key as one JSON pointer token.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// JSON Schema's equality: numbers by value, objects whatever their key
/// order.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Feeds `text` one byte at a time; the index of the first byte that
    /// completes a duplicate, if any.
    fn first_duplicate(schema: Value, text: &str) -> Option<usize> {
        let mut u = Unique::new(schema);
        text.bytes()
            .position(|b| u.push(&[b]) == Verdict::Duplicate)
    }

    #[test]
    fn a_repeated_item_of_a_unique_array_is_caught_where_it_completes() {
        let s = json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true});
        assert_eq!(first_duplicate(s.clone(), r#"["a","b","c"]"#), None);
        // At the closing quote of the second "a".
        assert_eq!(first_duplicate(s.clone(), r#"["a","b","a"]"#), Some(11));
        // A longer string that starts alike is another item.
        assert_eq!(first_duplicate(s, r#"["a","ab"]"#), None);
        // Numbers at the separator after them (they may go on), by value;
        // literals at their last letter; objects whatever their key order.
        let any = json!({"uniqueItems": true});
        assert_eq!(first_duplicate(any.clone(), "[1,12,1.0]"), Some(9));
        assert_eq!(first_duplicate(any.clone(), "[1,12]"), None);
        assert_eq!(first_duplicate(any.clone(), "[true,false,true]"), Some(15));
        assert_eq!(
            first_duplicate(any.clone(), r#"[{"a":1,"b":[2]},{"b":[2],"a":1}]"#),
            Some(31)
        );
        assert_eq!(first_duplicate(any, r#"[{"a":1},{"a":2}]"#), None);
    }

    #[test]
    fn only_the_arrays_the_schema_holds_unique_are_checked() {
        let s = json!({
            "type": "object",
            "properties": {
                "tags": {"$ref": "#/$defs/tags"},
                "free": {"type": "array"},
                "nested": {"type": "array", "items": {"anyOf": [{"type": "null"}, {"$ref": "#/$defs/tags"}]}},
                "a/b": {"type": "array", "uniqueItems": true}
            },
            "additionalProperties": {"type": "array", "uniqueItems": true},
            "$defs": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": true}}
        });
        assert_eq!(first_duplicate(s.clone(), r#"{"free":["x","x"]}"#), None);
        assert!(first_duplicate(s.clone(), r#"{"free":[],"tags":["x","x"]}"#).is_some());
        assert!(first_duplicate(s.clone(), r#"{"nested":[null,["y","y"]]}"#).is_some());
        assert_eq!(
            first_duplicate(s.clone(), r#"{"nested":[null,null]}"#),
            None
        );
        assert!(first_duplicate(s.clone(), r#"{"a/b":[1,1]}"#).is_some());
        assert!(first_duplicate(s.clone(), r#"{"other":[1,1]}"#).is_some());
        // An escaped quote inside a string does not end it; a key that
        // spells a property is a key.
        assert_eq!(first_duplicate(s, r#"{"tags":["\"x","x","tags"]}"#), None);
        let tuple = json!({"prefixItems": [{"uniqueItems": true}], "items": {"type": "array"}});
        assert!(first_duplicate(tuple.clone(), "[[1,1]]").is_some());
        assert_eq!(first_duplicate(tuple, "[[1],[2,2]]"), None);
    }

    #[test]
    fn an_item_is_pending_from_its_first_byte_to_its_last() {
        let mut u = Unique::new(json!({"properties": {"t": {"uniqueItems": true}}}));
        u.push(br#"{"t":["#);
        assert!(!u.pending());
        u.push(br#""ca"#);
        assert!(u.pending());
        u.push(br#"t","#);
        assert!(!u.pending());
        u.push(b"{\"a\":[1");
        assert!(u.pending(), "inside an object item");
        u.push(b"]}]");
        assert!(!u.pending());
    }

    #[test]
    fn a_listed_value_already_used_is_refused_at_its_first_bytes() {
        let s = json!({
            "type": "array",
            "items": {"type": "string", "enum": ["kubernetes.io/hostname", "kubernetes.io/zone", "rack"]},
            "uniqueItems": true
        });
        let mut u = Unique::new(s);
        u.push(br#"["kubernetes.io/hostname","#);
        assert_eq!(
            u.check(b"\""),
            Verdict::Fine,
            "the quote may open any value"
        );
        assert_eq!(u.check(br#""kub"#), Verdict::Fine, "the zone is left");
        u.push(br#""kubernetes.io/zone","#);
        assert_eq!(
            u.check(br#""kub"#),
            Verdict::Duplicate,
            "only used values start so"
        );
        assert_eq!(u.check(br#""ra"#), Verdict::Fine);
        // Every value used: no separator (nothing but a repeat could
        // follow it); the array closes.
        u.push(br#""rack""#);
        assert_eq!(u.check(b","), Verdict::Duplicate);
        assert_eq!(u.check(b"]"), Verdict::Fine);
        // A free string is never refused before it ends.
        let mut free = Unique::new(json!({"items": {"type": "string"}, "uniqueItems": true}));
        free.push(br#"["kub","#);
        assert_eq!(free.check(br#""ku"#), Verdict::Fine);
        // Values listed beside a schema that allows others: not a list.
        let mut mixed = Unique::new(json!({
            "items": {"anyOf": [{"enum": ["a"]}, {"type": "string"}]},
            "uniqueItems": true
        }));
        mixed.push(br#"["a","#);
        assert_eq!(mixed.check(br#""a"#), Verdict::Fine);
    }

    #[test]
    fn a_tuple_follows_the_dialect() {
        // Draft 7: a tuple `items`; `prefixItems` means nothing there.
        let old = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "items": [{"uniqueItems": true}],
            "prefixItems": [{"type": "array"}]
        });
        assert_eq!(first_duplicate(old, "[[1,1]]"), Some(5));
        let new = json!({"prefixItems": [{"uniqueItems": true}], "items": [{"type": "array"}]});
        assert_eq!(first_duplicate(new, "[[1,1]]"), Some(5));
    }

    #[test]
    fn check_leaves_the_tracker_as_it_was() {
        let mut u = Unique::new(json!({"uniqueItems": true}));
        assert_eq!(u.push(br#"["a","#), Verdict::Fine);
        assert_eq!(u.check(br#""a""#), Verdict::Duplicate);
        assert_eq!(u.check(br#""b"]"#), Verdict::Fine);
        assert_eq!(u.push(br#""b"]"#), Verdict::Fine);
    }
}
