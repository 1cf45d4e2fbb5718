//! Renders the model's own chat template (the GGUF's Jinja text) with
//! minijinja. The template is untrusted input: rendering is bounded by
//! minijinja's fuel and recursion limits and happens inside the sandbox.

use minijinja::{context, Environment, Error, ErrorKind};

/// Rendering budget: far more than any real chat template needs for one
/// message, small enough that a hostile template stops quickly.
const TEMPLATE_FUEL: u64 = 2_000_000;

/// Renders `template` for a conversation (`(role, content)`, oldest
/// first), with the generation prompt.
pub fn render_chat(
    template: &str,
    messages: &[(&str, &str)],
    bos: &str,
    eos: &str,
) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    // Templates written for Python's Jinja call str methods such as .strip().
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
        Err(Error::new(ErrorKind::InvalidOperation, msg))
    });
    env.add_template("chat", template)
        .map_err(|e| format!("{e:#}"))?;
    let tmpl = env.get_template("chat").map_err(|e| format!("{e:#}"))?;
    tmpl.render(context! {
        messages => messages
            .iter()
            .map(|&(role, content)| context! { role => role, content => content })
            .collect::<Vec<_>>(),
        add_generation_prompt => true,
        bos_token => bos,
        eos_token => eos,
    })
    .map_err(|e| format!("{e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M-Instruct's template, as stored in its GGUF.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn smollm2_template_keeps_its_default_system_prompt() {
        let out = render_chat(SMOLLM2, &[("user", "Hi")], "", "<|im_end|>").unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn conversations_render_every_turn_in_order() {
        let out = render_chat(
            SMOLLM2,
            &[
                ("system", "Be brief."),
                ("user", "Hi"),
                ("assistant", "Hello!"),
                ("user", "Bye"),
            ],
            "",
            "<|im_end|>",
        )
        .unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn hostile_templates_fail_cleanly() {
        let endless = "{% for i in range(100000000) %}{{ i }}{% endfor %}";
        assert!(render_chat(endless, &[("user", "x")], "", "").is_err());
        assert!(render_chat("{{ raise_exception('no') }}", &[("user", "x")], "", "").is_err());
        assert!(render_chat("{% if %}", &[("user", "x")], "", "").is_err());
        let rec = "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}";
        assert!(render_chat(rec, &[("user", "x")], "", "").is_err());
    }

    /// Work bounded by fuel alone: each loop stays within minijinja's own
    /// range cap (10,000 items), the nest does 10⁸ iterations. Stopped by
    /// the fuel (the error says so); the same template with a tenth of the
    /// budget's work renders.
    #[test]
    fn fuel_stops_a_template_that_works_too_long() {
        let nested = |outer: u32| {
            format!("{{% for i in range({outer}) %}}{{% for j in range(10000) %}}{{% endfor %}}{{% endfor %}}ok")
        };
        let e = render_chat(&nested(10_000), &[("user", "x")], "", "").unwrap_err();
        assert!(e.contains("fuel"), "stopped, but not by the fuel: {e}");
        let small = render_chat(&nested(10), &[("user", "x")], "", "").unwrap();
        assert_eq!(small, "ok");
    }

    #[test]
    fn python_string_methods_work() {
        let t = "{{ messages[0]['content'].strip() }}";
        assert_eq!(render_chat(t, &[("user", "  hi  ")], "", "").unwrap(), "hi");
    }
}
