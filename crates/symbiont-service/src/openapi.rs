//! The OpenAPI document, generated from the handlers and types
//! (`utoipa`). The copy in the repository (`openapi.json` in this crate) is
//! checked against it by a test.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "symbiont-runtime service",
        description = "Small language models for agents, run in sandboxed workers. OpenAI-compatible endpoints under /v1, Anthropic's /v1/messages, the native /v1/execute, and operations endpoints. Every model request needs an agent's bearer token; the agent's allow-list decides which models it may use.",
    ),
    paths(
        crate::openai::chat_completions,
        crate::openai::completions,
        crate::openai::models,
        crate::openai::model,
        crate::openai::embeddings,
        crate::anthropic::messages,
        crate::native::execute,
        crate::native::health,
        crate::native::ready,
        crate::native::metrics,
        crate::native::ps,
        crate::native::openapi,
    ),
    modifiers(&Bearer),
    tags(
        (name = "openai", description = "OpenAI-compatible"),
        (name = "anthropic", description = "Anthropic-compatible (Messages API); the token as `x-api-key` or bearer"),
        (name = "native", description = "The runner's own request and result"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
#[derive(Debug)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "x-api-key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("x-api-key"))),
        );
    }
}

/// The document as pretty JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

#[cfg(test)]
mod tests {
    /// The committed document is the code's; `UPDATE_OPENAPI=1 cargo test
    /// -p symbiont-service openapi` rewrites it after a change of the API.
    #[test]
    fn the_committed_openapi_document_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let generated = super::document() + "\n";
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "{path} differs from the API in the code: run `UPDATE_OPENAPI=1 cargo test -p symbiont-service openapi` and commit it"
        );
    }
}
