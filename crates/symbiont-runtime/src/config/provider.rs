//! The rules of a model's `provider`: local paths and pins, remote URLs
//! and key variables, Hugging Face repositories, files and revisions (the
//! hub client builds its URLs and cache paths only from names that pass
//! these).

use super::validate::Issues;
use super::{ModelProvider, Problem};

/// What a Hugging Face model's `file` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubFile {
    /// One file of the repository, by its path there (`dir/x.gguf`).
    Name(String),
    /// A quantisation tag such as `Q4_K_M`: the repository's GGUF file
    /// whose name carries it (case-insensitive), as `llama-server -hf
    /// repo:quant` picks it.
    Quant(String),
    /// Not given: the repository's one GGUF model.
    Any,
}

impl HubFile {
    /// `file` as written in the config, `None` when it is neither a GGUF
    /// path inside a repository nor a quantisation tag.
    pub fn parse(file: Option<&str>) -> Option<Self> {
        let Some(f) = file else {
            return Some(Self::Any);
        };
        if is_repo_file(f) && f.to_ascii_lowercase().ends_with(".gguf") {
            Some(Self::Name(f.to_string()))
        } else if (1..=40).contains(&f.len())
            && f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Some(Self::Quant(f.to_string()))
        } else {
            None
        }
    }
}

/// A repository id as the hub takes it: `org/name` (or a bare `name`),
/// each part 1 to 96 of letters, digits, `-`, `_` and `.`, neither
/// starting nor ending with `-` or `.`, with no `--` or `..`, and not
/// ending in `.git`. The id names a cache folder (`models--org--name`),
/// so nothing else passes.
pub fn is_repo_id(id: &str) -> bool {
    let parts: Vec<&str> = id.split('/').collect();
    parts.len() <= 2
        && !id.contains("--")
        && !id.contains("..")
        && !id.ends_with(".git")
        && parts.iter().all(|p| {
            (1..=96).contains(&p.len())
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && !p.starts_with(['-', '.'])
                && !p.ends_with(['-', '.'])
        })
}

/// A path inside a repository that is safe as a path under a snapshot
/// folder: relative, `/`-separated parts that are neither empty, `.` nor
/// `..`, no backslash or control character, at most 255 bytes.
pub fn is_repo_file(f: &str) -> bool {
    (1..=255).contains(&f.len())
        && !f.chars().any(|c| c.is_control() || c == '\\')
        && f.split('/').all(|p| !p.is_empty() && p != "." && p != "..")
}

/// A branch, tag or commit: 1 to 255 of letters, digits, `.`, `_`, `-`
/// and `/` (a branch such as `refs/pr/1`), no `..` or `//`, neither
/// starting with `/`, `.` or `-` nor ending with `/` or `.lock`. A
/// revision names a file under `refs/` in the cache.
pub fn is_revision(r: &str) -> bool {
    (1..=255).contains(&r.len())
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && !r.contains("..")
        && !r.contains("//")
        && !r.starts_with(['/', '.', '-'])
        && !r.ends_with('/')
        && !r.ends_with(".lock")
        && r.split('/').all(|p| !p.starts_with('.'))
}

/// A full commit id (40 lowercase hex digits).
pub fn is_commit(r: &str) -> bool {
    r.len() == 40 && r.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A SHA-256 as `sha256sum` prints it.
pub fn is_sha256(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())
}

fn pin(key: String, sha256: &Option<String>, out: &mut Issues) {
    if let Some(h) = sha256.as_ref().filter(|h| !is_sha256(h)) {
        out.push((
            key,
            Problem::InvalidName {
                what: "SHA-256 (64 hex digits, as `sha256sum` prints it)",
                value: h.clone(),
            },
        ));
    }
}

pub(super) fn check(base: &str, provider: &ModelProvider, out: &mut Issues) {
    let (key, value) = match provider {
        ModelProvider::LocalFile { file_path, sha256 } => {
            pin(format!("{base}.LocalFile.sha256"), sha256, out);
            if !file_path.is_absolute() {
                out.push((
                    format!("{base}.LocalFile.file_path"),
                    Problem::RelativePath {
                        path: file_path.display().to_string(),
                    },
                ));
            }
            return;
        }
        ModelProvider::HuggingFace {
            model_path,
            file,
            revision,
            sha256,
        } => {
            let key = |k: &str| format!("{base}.HuggingFace.{k}");
            pin(key("sha256"), sha256, out);
            if !is_repo_id(model_path) {
                out.push((
                    key("model_path"),
                    Problem::InvalidName {
                        what: "Hugging Face repository (`org/name`: letters, digits, `-`, `_`, `.`, each part at most 96, no `--` or `..`)",
                        value: model_path.clone(),
                    },
                ));
            }
            if HubFile::parse(file.as_deref()).is_none() {
                out.push((
                    key("file"),
                    Problem::InvalidName {
                        what: "file of the repository (a relative path ending in `.gguf`, no `..`) or quantisation (such as `Q4_K_M`)",
                        value: file.clone().unwrap_or_default(),
                    },
                ));
            }
            if let Some(r) = revision.as_ref().filter(|r| !is_revision(r)) {
                out.push((
                    key("revision"),
                    Problem::InvalidName {
                        what: "revision (a branch, tag or 40-digit commit: letters, digits, `.`, `_`, `-`, `/`)",
                        value: r.clone(),
                    },
                ));
            }
            return;
        }
        ModelProvider::OpenAI {
            model_name,
            base_url,
            api_key_env,
        } => {
            remote_fields(
                base,
                "OpenAI",
                base_url.as_ref(),
                None,
                api_key_env.as_ref(),
                out,
            );
            ("OpenAI.model_name", model_name)
        }
        ModelProvider::Anthropic {
            model_name,
            base_url,
            api_key_env,
        } => {
            remote_fields(
                base,
                "Anthropic",
                base_url.as_ref(),
                None,
                api_key_env.as_ref(),
                out,
            );
            ("Anthropic.model_name", model_name)
        }
        ModelProvider::Custom {
            endpoint_url,
            model_name,
            api_key_env,
        } => {
            remote_fields(
                base,
                "Custom",
                Some(endpoint_url),
                model_name.as_ref(),
                api_key_env.as_ref(),
                out,
            );
            return;
        }
    };
    if value.trim().is_empty() {
        out.push((format!("{base}.{key}"), Problem::Empty));
    }
}

/// A remote provider's URL (http or https, with a host, no credentials or
/// query in it), model name and key variable.
fn remote_fields(
    base: &str,
    kind: &str,
    url: Option<&String>,
    model_name: Option<&String>,
    api_key_env: Option<&String>,
    out: &mut Issues,
) {
    if let Some(u) = url {
        let key = if kind == "Custom" {
            "endpoint_url"
        } else {
            "base_url"
        };
        let rest = u
            .strip_prefix("https://")
            .or_else(|| u.strip_prefix("http://"));
        let authority = rest.map(|r| r.split(['/', '?', '#']).next().unwrap_or(""));
        let ok = match (rest, authority) {
            (Some(r), Some(a)) => !a.is_empty() && !a.contains('@') && !r.contains(['?', '#']),
            _ => false,
        };
        if !ok {
            out.push((
                format!("{base}.{kind}.{key}"),
                Problem::InvalidName {
                    what: "endpoint URL (http:// or https://, a host, no user, query or fragment)",
                    value: u.clone(),
                },
            ));
        }
    }
    if model_name.is_some_and(|m| m.trim().is_empty()) {
        out.push((format!("{base}.{kind}.model_name"), Problem::Empty));
    }
    if let Some(v) = api_key_env {
        let ok = !v.is_empty()
            && !v.starts_with(|c: char| c.is_ascii_digit())
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            out.push((
                format!("{base}.{kind}.api_key_env"),
                Problem::InvalidName {
                    what: "environment variable name (letters, digits, `_`)",
                    value: v.clone(),
                },
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_names_that_could_leave_the_cache_are_refused() {
        for ok in ["org/name", "gpt2", "Org-1/m.v2_x"] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in [
            "",
            "a/b/c",
            "../x",
            "org/..",
            "org/-x",
            "org--x/y",
            "org/x.git",
            "org/x y",
            "/x",
        ] {
            assert!(!is_repo_id(bad), "{bad}");
        }
        for ok in ["main", "v1.0", "refs/pr/1", &"a".repeat(40)] {
            assert!(is_revision(ok), "{ok}");
        }
        for bad in [
            "", "../x", "a/../b", "/main", "main/", "a//b", ".hidden", "x.lock", "a b",
        ] {
            assert!(!is_revision(bad), "{bad}");
        }
        assert_eq!(HubFile::parse(None), Some(HubFile::Any));
        assert_eq!(
            HubFile::parse(Some("Q4_K_M")),
            Some(HubFile::Quant("Q4_K_M".into()))
        );
        assert_eq!(
            HubFile::parse(Some("d/m.Q4.gguf")),
            Some(HubFile::Name("d/m.Q4.gguf".into()))
        );
        for bad in [
            "../m.gguf",
            "/m.gguf",
            "d//m.gguf",
            "m.bin",
            "a\\b.gguf",
            "Q4 K",
        ] {
            assert_eq!(HubFile::parse(Some(bad)), None, "{bad}");
        }
    }
}
