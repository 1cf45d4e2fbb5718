//! Formats the engine does not know, said with keywords it does. The
//! engine knows `date-time`, `time`, `date`, `duration`, `email`,
//! `hostname`, `ipv4`, `ipv6`, `uuid` and `uri`, and refuses any other
//! name. Here:
//!
//! - `uri-reference` and `iri-reference` become a `pattern` of RFC 3986's
//!   URI-reference (an IP literal host aside: a `[…]` host is not
//!   written); `iri` becomes `uri`, `idn-email` becomes `email` (every
//!   URI is an IRI, every ASCII address an internationalised one);
//! - `json-pointer` and `relative-json-pointer` become a `pattern` of
//!   RFC 6901 and of its relative draft;
//! - OpenAPI's `int32` becomes the range of those integers, `int64` that
//!   of the integers a double holds exactly (±2^53 - 1, within int64: the
//!   engine reads bounds as doubles), and `float`, `double`, `binary` and `password`, which only annotate
//!   (any number, any string), are taken out; `byte` becomes a `pattern`
//!   of base64.
//!
//! Each keeps to the format or narrows it, never widens it. Any other
//! name is left for the engine to refuse, naming it.

use super::add_to_all_of;
use serde_json::{json, Map, Value};

/// A `pchar` of RFC 3986 (a path segment's character) with `{extra}`.
const PCHAR: &str = r"(?:[A-Za-z0-9._~!$&'()*+,;={extra}-]|%[0-9A-Fa-f]{2})";

/// RFC 3986's URI-reference: a URI, or a relative reference (whose first
/// segment holds no `:` when it has no scheme), then query and fragment.
fn uri_reference() -> String {
    let pchar = PCHAR.replace("{extra}", ":@");
    let pchar_nc = PCHAR.replace("{extra}", "@");
    let userinfo = PCHAR.replace("{extra}", ":");
    let reg_name = PCHAR.replace("{extra}", "");
    let authority = format!(r"(?:{userinfo}*@)?{reg_name}*(?::[0-9]*)?");
    let abempty = format!("(?:/{pchar}*)*");
    let absolute = format!("/(?:{pchar}+(?:/{pchar}*)*)?");
    let rootless = format!("{pchar}+(?:/{pchar}*)*");
    let noscheme = format!("{pchar_nc}+(?:/{pchar}*)*");
    let tail = format!(r"(?:\?(?:{pchar}|[/?])*)?(?:#(?:{pchar}|[/?])*)?");
    format!(
        "^(?:[A-Za-z][A-Za-z0-9+.-]*:(?://{authority}{abempty}|{absolute}|{rootless}|)\
         |(?://{authority}{abempty}|{absolute}|{noscheme}|)){tail}$"
    )
}

const JSON_POINTER: &str = "^(?:/(?:[^~/]|~[01])*)*$";
const RELATIVE_JSON_POINTER: &str = "^(?:0|[1-9][0-9]*)(?:#|(?:/(?:[^~/]|~[01])*)*)$";
const BASE64: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

/// The largest integer a double holds exactly (2^53 - 1).
const SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// What `format` becomes.
enum Said {
    Format(&'static str),
    Pattern(String),
    Range(i64, i64),
    Annotation,
}

fn said(format: &str) -> Option<Said> {
    Some(match format {
        "uri-reference" | "iri-reference" => Said::Pattern(uri_reference()),
        "iri" => Said::Format("uri"),
        "idn-email" => Said::Format("email"),
        "json-pointer" => Said::Pattern(JSON_POINTER.into()),
        "relative-json-pointer" => Said::Pattern(RELATIVE_JSON_POINTER.into()),
        "int32" => Said::Range(i32::MIN.into(), i32::MAX.into()),
        // The engine reads bounds as f64 (past 2^53 they round, and i64's
        // own overflow it): the integers every JSON parser keeps exactly,
        // which int64 holds.
        "int64" => Said::Range(-SAFE_INTEGER, SAFE_INTEGER),
        "byte" => Said::Pattern(BASE64.into()),
        "float" | "double" | "binary" | "password" => Said::Annotation,
        _ => return None,
    })
}

/// Whether what `format` becomes is the format exactly (else narrower).
fn exact(format: &str) -> bool {
    matches!(
        format,
        "json-pointer" | "int32" | "byte" | "float" | "double" | "binary" | "password"
    )
}

/// `format` said as the engine can (see the module's notes); with
/// `exact_only`, only where that is the format exactly.
pub(super) fn formats(s: &mut Map<String, Value>, exact_only: bool) {
    let Some(Value::String(format)) = s.get("format") else {
        return;
    };
    if exact_only && !exact(format) {
        return;
    }
    let Some(said) = said(format) else { return };
    // `allOf` there but not a list: malformed, the engine says so.
    if s.get("allOf").is_some_and(|a| !a.is_array()) {
        return;
    }
    s.remove("format");
    match said {
        Said::Format(f) => {
            s.insert("format".into(), f.into());
        }
        Said::Pattern(p) if !s.contains_key("pattern") => {
            s.insert("pattern".into(), p.into());
        }
        Said::Pattern(p) => add_to_all_of(s, json!({ "pattern": p })),
        Said::Range(min, max) => add_to_all_of(s, json!({"minimum": min, "maximum": max})),
        Said::Annotation => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(schema: Value) -> Value {
        let mut engine = super::super::for_engine(json!({"properties": {"p": schema}}));
        engine["properties"]["p"].take()
    }

    fn matcher(pattern: &str) -> impl Fn(&str) -> bool {
        let rx = regex::Regex::new(pattern).expect("the pattern compiles");
        move |s| rx.is_match(s)
    }

    #[test]
    fn uri_references_are_those_of_rfc_3986() {
        let ok = matcher(&uri_reference());
        for good in [
            "https://example.com/a/b?q=1#top",
            "mailto:someone@example.com",
            "urn:isbn:0451450523",
            "//cdn.example.com/lib.js",
            "../up/one",
            "/absolute/path",
            "relative/a:b",
            "?query",
            "#fragment",
            "",
            "a%20b",
            "http://user:pw@host:8080/",
        ] {
            assert!(ok(good), "{good:?} is a URI-reference");
        }
        for bad in [
            "1a:b",
            "with space",
            "back\\slash",
            "a%2",
            "http://host/<tag>",
            "a#b#c",
            "line\nbreak",
        ] {
            assert!(!ok(bad), "{bad:?} is not a URI-reference");
        }
    }

    #[test]
    fn json_pointers_and_base64() {
        let pointer = matcher(JSON_POINTER);
        assert!(pointer("") && pointer("/a/b~0c/~1") && pointer("/"));
        assert!(!pointer("a/b") && !pointer("/a~2"));
        let relative = matcher(RELATIVE_JSON_POINTER);
        assert!(relative("0") && relative("1/a") && relative("2#"));
        assert!(!relative("01/a") && !relative("/a") && !relative("1#/a"));
        let base64 = matcher(BASE64);
        assert!(base64("") && base64("aGk=") && base64("aGVsbG8gd29ybGQ="));
        assert!(!base64("aGk") && !base64("a===") && !base64("a b="));
    }

    #[test]
    fn formats_the_engine_lacks_become_keywords_it_has() {
        assert_eq!(
            rewritten(json!({"type": "string", "format": "iri"})),
            json!({"type": "string", "format": "uri"})
        );
        assert_eq!(
            rewritten(json!({"type": "string", "format": "json-pointer"})),
            json!({"type": "string", "pattern": JSON_POINTER})
        );
        // A pattern already there: both hold.
        assert_eq!(
            rewritten(json!({"pattern": "^/a", "format": "json-pointer"})),
            json!({"pattern": "^/a", "allOf": [{"pattern": JSON_POINTER}]})
        );
        assert_eq!(
            rewritten(json!({"type": "integer", "format": "int32", "minimum": 0})),
            json!({"type": "integer", "minimum": 0, "allOf": [{"minimum": -2147483648_i64, "maximum": 2147483647}]})
        );
        assert_eq!(
            rewritten(json!({"type": "number", "format": "double"})),
            json!({"type": "number"})
        );
        // Unknown: left for the engine to refuse.
        let left = json!({"type": "string", "format": "no-such-format"});
        assert_eq!(rewritten(left.clone()), left);
    }
}
