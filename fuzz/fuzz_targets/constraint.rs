//! Output constraints from untrusted text (a caller's JSON Schema, regular
//! expression or Lark grammar): compiling never panics or hangs, a
//! compiled matcher takes every byte its mask allows, and the tracker of
//! a schema's unique arrays (`uniqueItems`) follows the answer and its
//! look-ahead without a panic or a hang.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use symbi_slm_worker::constraint::{Compiler, Guided};
use symbiont_slm_protocol::Constraint;

fn compiler() -> &'static Compiler {
    static C: OnceLock<Compiler> = OnceLock::new();
    C.get_or_init(Compiler::bytes)
}

fuzz_target!(|data: &[u8]| {
    // kind | the constraint's text | 0xff | bytes to feed it
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let (spec, input) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &rest[..0]),
    };
    let text = String::from_utf8_lossy(spec).into_owned();
    let constraint = match kind % 4 {
        0 => Constraint::JsonSchema { schema: text },
        1 => Constraint::Regex { pattern: text },
        2 => Constraint::Lark { grammar: text },
        _ => Constraint::JsonObject,
    };
    let m = match compiler().compile(&constraint) {
        Ok(m) => m,
        // llguidance turns its panics into errors: they must not happen.
        Err(e) => {
            assert!(!e.to_string().to_lowercase().starts_with("panic"), "{e}");
            return;
        }
    };
    let mut g = Guided::new(m, true).with_unique_items(Some(&constraint));
    for &b in input.iter().take(256) {
        let Ok(mask) = g.matcher.compute_mask() else {
            break;
        };
        if mask.is_allowed(u32::from(b)) {
            let _ = g.dead_end(compiler(), u32::from(b));
            g.matcher
                .consume_token(u32::from(b))
                .expect("a byte the mask allows is consumed");
            g.consumed(&[b]);
        }
    }
});
