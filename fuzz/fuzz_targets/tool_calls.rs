//! Tool calls from untrusted input: a caller's tool list (names and
//! parameter schemas) becomes a call grammar that compiles or is refused,
//! never a panic; and whatever text a model writes after a call's marker,
//! the call stream cuts it without panicking, its pieces in order (a named
//! piece opens the next call, the others extend the last).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use symbi_slm_worker::constraint::Compiler;
use symbi_slm_worker::tools::{grammar, CallStream, Format};
use symbiont_slm_protocol::{Constraint, Function, ToolChoice, Tools};

fn compiler() -> &'static Compiler {
    static C: OnceLock<Compiler> = OnceLock::new();
    C.get_or_init(Compiler::bytes)
}

fuzz_target!(|data: &[u8]| {
    // choice | parameters schema | 0xff | model text (cut at 0xfe marks)
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (spec, text) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[..0]),
    };
    let tools = Tools {
        functions: vec![
            Function {
                name: "f".into(),
                description: String::new(),
                parameters: String::from_utf8_lossy(spec).into_owned(),
            },
            Function {
                name: "g-2".into(),
                description: "x".into(),
                parameters: r#"{"type":"object"}"#.into(),
            },
        ],
        choice: match kind % 3 {
            0 => ToolChoice::Auto,
            1 => ToolChoice::Required,
            _ => ToolChoice::Function { name: "f".into() },
        },
        parallel: kind & 4 != 0,
    };
    let format = [Format::GENERIC, Format::HERMES, Format::MISTRAL, Format::LLAMA3]
        [usize::from(kind >> 3) % 4];
    if let Ok(g) = grammar(&tools, format) {
        if let Err(e) = compiler().compile(&Constraint::Lark { grammar: g }) {
            assert!(!e.to_string().to_lowercase().starts_with("panic"), "{e}");
        }
    }
    let mut calls = CallStream::new(format);
    let mut begun = 0;
    for chunk in text.split(|&b| b == 0xfe) {
        for p in calls.push(&String::from_utf8_lossy(chunk)) {
            match p.name {
                Some(_) => {
                    assert_eq!(p.index, begun);
                    begun += 1;
                }
                None => assert_eq!(p.index + 1, begun),
            }
        }
    }
    assert_eq!(calls.calls(), begun);
});
