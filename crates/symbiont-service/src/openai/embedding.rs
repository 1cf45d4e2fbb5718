//! `POST /v1/embeddings`.

use super::*;

/// `input` of an embeddings request: a string or a list of strings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    One(String),
    /// Several texts (at most 256), one vector each, in order.
    Many(Vec<String>),
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingRequest {
    /// A model with the `Embeddings` capability.
    pub model: String,
    /// The text(s), each at most 256 tokens.
    pub input: EmbeddingInput,
    /// `float` (default) or `base64` (little-endian 32-bit floats).
    pub encoding_format: Option<String>,
    /// Only the model's own size (not supported otherwise).
    pub dimensions: Option<u32>,
    /// Accepted, not used.
    pub user: Option<String>,
}

/// One vector: numbers, or base64 of little-endian 32-bit floats.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// `encoding_format: float`.
    Float(Vec<f32>),
    /// `encoding_format: base64`.
    Base64(String),
}

/// One embedding.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingObject {
    /// `embedding`.
    pub object: String,
    /// Its input's position.
    pub index: u32,
    /// The vector, L2-normalized (mean-pooled over the input's tokens).
    pub embedding: EmbeddingVector,
}

/// Token counts of an embeddings request.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingUsage {
    /// Tokens of every input, from the tokenizer.
    pub prompt_tokens: u32,
    /// The same.
    pub total_tokens: u32,
}

/// The embeddings.
#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingList {
    /// `list`.
    pub object: String,
    /// One per input, in order.
    pub data: Vec<EmbeddingObject>,
    /// The model id.
    pub model: String,
    /// Token counts.
    pub usage: EmbeddingUsage,
}

/// Most inputs in one embeddings request.
pub const MAX_EMBEDDING_INPUTS: usize = 256;

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Embeddings, OpenAI-compatible, for models with the `Embeddings`
/// capability: one vector per input.
#[utoipa::path(post, path = "/v1/embeddings", tag = "openai",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, body = EmbeddingList),
        (status = 400, description = "Malformed request, an input too long, or a model without the Embeddings capability", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 429, body = ErrorBody), (status = 500, body = ErrorBody),
        (status = 503, body = ErrorBody), (status = 504, body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn embeddings(Current(service): Current, headers: HeaderMap, body: Body) -> Response {
    let mut call = service.call("/v1/embeddings");
    let result = async {
        call.authenticate(&service, &headers)?;
        let request: EmbeddingRequest = parse_body(&service, &headers, body).await?;
        let base64_out = match request.encoding_format.as_deref() {
            None | Some("float") => false,
            Some("base64") => true,
            Some(other) => {
                return Err(ApiError::bad_request(
                    "invalid_value",
                    Some("encoding_format"),
                    format!("encoding_format: `{other}` is neither `float` nor `base64`"),
                ))
            }
        };
        let inputs = match request.input {
            EmbeddingInput::One(s) => vec![s],
            EmbeddingInput::Many(v) => v,
        };
        if inputs.is_empty() || inputs.len() > MAX_EMBEDDING_INPUTS {
            return Err(ApiError::bad_request(
                "invalid_value",
                Some("input"),
                format!(
                    "input: 1 to {MAX_EMBEDDING_INPUTS} texts, got {}",
                    inputs.len()
                ),
            ));
        }
        let bytes: u64 = inputs.iter().map(|s| s.len() as u64).sum();
        let max = service.settings().max_prompt_bytes;
        if bytes > max {
            return Err(ApiError::prompt_too_large(
                "input",
                "the inputs",
                bytes,
                max,
            ));
        }
        let (runner, permit) = call.admit(&service, &request.model).await?;
        let has_capability = service
            .pool()
            .catalog()
            .get_model(&request.model)
            .is_some_and(|m| {
                m.capabilities
                    .contains(&symbiont_runtime::config::ModelCapability::Embeddings)
            });
        if !has_capability {
            return Err(ApiError::bad_request(
                "model_without_embeddings",
                Some("model"),
                format!(
                    "the model `{}` does not have the Embeddings capability",
                    request.model
                ),
            ));
        }
        // Known from the model's header: refused before anything runs.
        let size = runner.embedding_size();
        if let (Some(d), Some(size)) = (request.dimensions, size) {
            if u64::from(d) != size {
                return Err(ApiError::bad_request(
                    "unsupported_parameter",
                    Some("dimensions"),
                    format!("dimensions: this model's embeddings have {size} numbers, not {d}"),
                ));
            }
        }
        let mut data = Vec::with_capacity(inputs.len());
        let mut tokens = 0u32;
        let mut last = None;
        for (i, text) in inputs.iter().enumerate() {
            let r = runner.embed(text, None).await.map_err(|e| {
                let mut e = call.runner_error(&service, e);
                if e.param.as_deref() == Some("prompt") {
                    // The runner's name for it; the client sent `input`.
                    e.param = Some(format!("input[{i}]"));
                    e.message = format!("input[{i}]: {}", e.message);
                }
                e
            })?;
            if let Some(d) = request
                .dimensions
                .filter(|&d| d as usize != r.embedding.len())
            {
                return Err(ApiError::bad_request(
                    "unsupported_parameter",
                    Some("dimensions"),
                    format!(
                        "dimensions: this model's embeddings have {} numbers, not {d}",
                        r.embedding.len()
                    ),
                ));
            }
            tokens = tokens.saturating_add(r.metadata.input_tokens.unwrap_or(0));
            let embedding = if base64_out {
                let raw: Vec<u8> = r.embedding.iter().flat_map(|x| x.to_le_bytes()).collect();
                EmbeddingVector::Base64(base64(&raw))
            } else {
                EmbeddingVector::Float(r.embedding)
            };
            data.push(EmbeddingObject {
                object: "embedding".into(),
                index: i as u32,
                embedding,
            });
            last = Some(r.metadata);
        }
        drop(permit);
        if let Some(mut m) = last {
            m.input_tokens = Some(tokens);
            call.completed_metadata(&service, &m);
        }
        Ok(Json(EmbeddingList {
            object: "list".into(),
            data,
            model: request.model,
            usage: EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        })
        .into_response())
    }
    .await;
    call.respond(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(super::base64(&1.0f32.to_le_bytes()), "AACAPw==");
    }
}
