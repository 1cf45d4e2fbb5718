//! A safe, bounded reader of GGUF headers.
//!
//! The supervisor checks a model file before any worker sees it: magic,
//! version, every count and length against the bytes that remain, and every
//! tensor's data against the file's end. A truncated or hostile header is an
//! error here, never a crash or a huge allocation. It reads metadata only;
//! the weights are never touched.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use serde::Serialize;

const MAGIC: &[u8; 4] = b"GGUF";
/// Longest key accepted.
const MAX_KEY_BYTES: u64 = 64 * 1024;
/// Longest string value accepted (chat templates are a few KB; tokenizer
/// vocabularies are arrays of short strings).
const MAX_STRING_BYTES: u64 = 16 * 1024 * 1024;
/// String values the summary keeps; any other is skipped unread.
const KEPT_STRINGS: &[&str] = &["general.architecture", "general.name"];
/// Number keys the summary keeps, after their architecture's prefix.
const ARCH_NUMBERS: &[&str] = &[
    "context_length",
    "block_count",
    "embedding_length",
    "attention.head_count",
    "attention.head_count_kv",
];
/// At most this many such numbers are kept (one set per architecture a
/// header names is plenty).
const MAX_KEPT_NUMBERS: usize = 64;
/// Deepest nesting of arrays accepted.
const MAX_ARRAY_DEPTH: u32 = 3;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// What the header says about a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GgufSummary {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Number of metadata entries.
    pub metadata_count: u64,
    /// `general.architecture`.
    pub architecture: Option<String>,
    /// `general.name`.
    pub name: Option<String>,
    /// `<architecture>.context_length`.
    pub context_length: Option<u64>,
    /// Whether `tokenizer.chat_template` is present.
    pub has_chat_template: bool,
    /// File size in bytes.
    pub file_size: u64,
    /// `<architecture>.block_count`: layers.
    pub block_count: Option<u64>,
    /// `<architecture>.embedding_length`.
    pub embedding_length: Option<u64>,
    /// `<architecture>.attention.head_count`.
    pub head_count: Option<u64>,
    /// `<architecture>.attention.head_count_kv` (grouped-query attention;
    /// absent means one per head).
    pub head_count_kv: Option<u64>,
    /// Entries of `tokenizer.ggml.tokens`: the vocabulary's size.
    pub vocab_size: Option<u64>,
    /// `general.file_type`: llama.cpp's `llama_ftype`, the quantisation
    /// most tensors have (see [`GgufSummary::quantization`]).
    pub file_type: Option<u64>,
    /// Parameters: the elements of every tensor together.
    pub parameters: u64,
    /// Whether the chat template speaks of `tools` (it renders tool
    /// definitions and calls: the model was trained to use tools).
    pub template_uses_tools: bool,
}

impl GgufSummary {
    /// The quantisation's name (`Q4_K_M`, `F16`…) from `general.file_type`,
    /// as llama.cpp's `llama_ftype` numbers them.
    pub fn quantization(&self) -> Option<&'static str> {
        const NAMES: [&str; 42] = [
            "F32",
            "F16",
            "Q4_0",
            "Q4_1",
            "",
            "",
            "",
            "Q8_0",
            "Q5_0",
            "Q5_1",
            "Q2_K",
            "Q3_K_S",
            "Q3_K_M",
            "Q3_K_L",
            "Q4_K_S",
            "Q4_K_M",
            "Q5_K_S",
            "Q5_K_M",
            "Q6_K",
            "IQ2_XXS",
            "IQ2_XS",
            "Q2_K_S",
            "IQ3_XS",
            "IQ3_XXS",
            "IQ1_S",
            "IQ4_NL",
            "IQ3_S",
            "IQ3_M",
            "IQ2_S",
            "IQ2_M",
            "IQ4_XS",
            "IQ1_M",
            "BF16",
            "",
            "",
            "",
            "TQ1_0",
            "TQ2_0",
            "MXFP4_MOE",
            "NVFP4",
            "Q1_0",
            "Q2_0",
        ];
        let i = usize::try_from(self.file_type?).ok()?;
        NAMES.get(i).copied().filter(|n| !n.is_empty())
    }

    /// Bytes of KV cache one token takes with llama.cpp's default cache
    /// type (16-bit keys and values), from the header: layers × 2 ×
    /// (KV heads × head size) × 2 bytes. `None` when the header lacks a
    /// figure (or they are absurd).
    pub fn kv_bytes_per_token(&self) -> Option<u64> {
        let layers = self.block_count?;
        let embd = self.embedding_length?;
        let heads = self.head_count.filter(|&h| h > 0)?;
        let kv_heads = self.head_count_kv.unwrap_or(heads);
        let per_layer = embd.checked_div(heads)?.checked_mul(kv_heads)?;
        layers.checked_mul(per_layer)?.checked_mul(4)
    }
}

/// Why a GGUF header was refused.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Reading failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The file ends inside the header.
    #[error("truncated: the header needs more bytes than the file's {file_size}")]
    Truncated {
        /// File size.
        file_size: u64,
    },
    /// Not a GGUF file.
    #[error("not a GGUF file (magic {0:02x?})")]
    BadMagic([u8; 4]),
    /// An unsupported version.
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    BadVersion(u32),
    /// A count or length that cannot fit the file.
    #[error("{what} of {value} cannot fit in the {remaining} bytes left")]
    Absurd {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u64,
        /// Bytes left in the file.
        remaining: u64,
    },
    /// A malformed entry.
    #[error("malformed header: {0}")]
    Malformed(String),
}

/// Reads and checks the header of the GGUF file at `path`.
pub fn read_summary(path: &Path) -> Result<GgufSummary, GgufError> {
    read_summary_of(&File::open(path)?)
}

/// Reads and checks the header of an open GGUF file, from its start (the
/// file's offset moves; the descriptor stays usable).
pub fn read_summary_of(file: &File) -> Result<GgufSummary, GgufError> {
    use std::io::{Seek, SeekFrom};
    let file_size = file.metadata()?.len();
    let mut file = file;
    file.seek(SeekFrom::Start(0))?;
    summarize(BufReader::with_capacity(64 * 1024, file), file_size)
}

/// Reads and checks a GGUF header from `reader`, which holds `file_size`
/// bytes in all (the tensors' data is checked against that size, never
/// read).
pub fn summarize(reader: impl Read, file_size: u64) -> Result<GgufSummary, GgufError> {
    let mut r = Reader {
        inner: reader,
        pos: 0,
        len: file_size,
    };
    let mut magic = [0u8; 4];
    r.bytes(&mut magic)?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic(magic));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::BadVersion(version));
    }
    let tensor_count = r.u64()?;
    let metadata_count = r.u64()?;
    // Smallest possible entries: a tensor info is at least 8+1+4+8+4+8
    // bytes, a key/value at least 8+1+4+1.
    r.fits("tensor count", tensor_count, 33)?;
    r.fits("metadata count", metadata_count, 14)?;

    // Only what the summary needs is kept (a hostile header may hold
    // hundreds of megabytes of other strings, or millions of keys): the
    // strings of two keys, the chat template's presence, the vocabulary's
    // length, and the numbers whose key ends as an architecture's does
    // (the architecture may come after them), at most MAX_KEPT_NUMBERS.
    let mut strings: BTreeMap<String, String> = BTreeMap::new();
    let mut numbers: BTreeMap<String, u64> = BTreeMap::new();
    let mut arrays: BTreeMap<String, u64> = BTreeMap::new();
    let mut has_chat_template = false;
    let mut template_uses_tools = false;
    let mut file_type = None;
    let mut alignment = 32u64;
    for _ in 0..metadata_count {
        let key = r.string(MAX_KEY_BYTES, "key length")?;
        let ty = r.u32()?;
        // A template of its own for tool calls says so by being there.
        if key == "tokenizer.chat_template.tool_use" {
            template_uses_tools = true;
        }
        if key == "tokenizer.chat_template" {
            has_chat_template = true;
            if ty == 8 {
                // Its bytes (at most MAX_STRING_BYTES, as any string; UTF-8
                // or not: llama.cpp decides that) searched for `tools`.
                template_uses_tools |= r.string_mentions(b"tools")?;
                continue;
            }
        }
        if ty == 8 && !KEPT_STRINGS.contains(&key.as_str()) {
            r.skip_string()?;
            continue;
        }
        match r.value(ty, 0)? {
            Value::Str(s) => {
                strings.insert(key, s);
            }
            Value::Num(n) => {
                if key == "general.file_type" {
                    file_type = Some(n);
                }
                if key == "general.alignment" {
                    if n == 0 || !n.is_power_of_two() || n > 1 << 20 {
                        return Err(GgufError::Malformed(format!("general.alignment = {n}")));
                    }
                    alignment = n;
                }
                let wanted = ARCH_NUMBERS.iter().any(|k| {
                    key.len() > k.len()
                        && key.ends_with(k)
                        && key[..key.len() - k.len()].ends_with('.')
                });
                if wanted && numbers.len() < MAX_KEPT_NUMBERS {
                    numbers.insert(key, n);
                }
            }
            Value::Array(n) => {
                if key == "tokenizer.ggml.tokens" {
                    arrays.insert(key, n);
                }
            }
            Value::Other => {}
        }
    }

    // Checked as they come, keeping only the tensor that reaches furthest
    // into the data (where the data starts is known only after the last).
    let mut furthest: Option<(String, u64, u64)> = None;
    let mut parameters: u64 = 0;
    for _ in 0..tensor_count {
        let name = r.string(MAX_KEY_BYTES, "tensor name length")?;
        let n_dims = r.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::Malformed(format!(
                "tensor `{name}` has {n_dims} dimensions"
            )));
        }
        let mut elements: u64 = 1;
        for _ in 0..n_dims {
            let d = r.u64()?;
            elements = elements.checked_mul(d).ok_or_else(|| {
                GgufError::Malformed(format!("tensor `{name}` element count overflows"))
            })?;
        }
        parameters = parameters.saturating_add(elements);
        let ty = r.u32()?;
        let offset = r.u64()?;
        if offset % alignment != 0 {
            return Err(GgufError::Malformed(format!(
                "tensor `{name}` offset {offset} is not aligned to {alignment}"
            )));
        }
        // A type this table does not know: llama.cpp decides.
        let Some(bytes) = tensor_bytes(ty, elements) else {
            continue;
        };
        let past = || {
            GgufError::Malformed(format!(
                "tensor `{name}` ({bytes} bytes at offset {offset}) extends past the end of the file"
            ))
        };
        let end = offset.checked_add(bytes).ok_or_else(past)?;
        if end > file_size {
            return Err(past());
        }
        if furthest.as_ref().is_none_or(|(_, b, o)| end > o + b) {
            furthest = Some((name, bytes, offset));
        }
    }
    let data_start = r.pos.div_ceil(alignment) * alignment;
    let data_len = match file_size.checked_sub(data_start) {
        Some(n) => n,
        None if tensor_count == 0 => 0,
        None => return Err(GgufError::Truncated { file_size }),
    };
    if let Some((name, bytes, offset)) = furthest.filter(|(_, b, o)| o + b > data_len) {
        return Err(GgufError::Malformed(format!(
            "tensor `{name}` ({bytes} bytes at offset {offset}) extends past the end of the file"
        )));
    }

    let architecture = strings.get("general.architecture").cloned();
    let context_length = architecture
        .as_ref()
        .and_then(|a| numbers.get(&format!("{a}.context_length")).copied());
    let arch_number = |key: &str| {
        architecture
            .as_ref()
            .and_then(|a| numbers.get(&format!("{a}.{key}")).copied())
    };
    Ok(GgufSummary {
        block_count: arch_number("block_count"),
        embedding_length: arch_number("embedding_length"),
        head_count: arch_number("attention.head_count"),
        head_count_kv: arch_number("attention.head_count_kv"),
        vocab_size: arrays.get("tokenizer.ggml.tokens").copied(),
        file_type,
        parameters,
        template_uses_tools,
        version,
        tensor_count,
        metadata_count,
        name: strings.get("general.name").cloned(),
        has_chat_template,
        architecture,
        context_length,
        file_size,
    })
}

/// Bytes of a tensor of `ty` with `elements` elements, for the ggml types
/// whose block layout is known here.
fn tensor_bytes(ty: u32, elements: u64) -> Option<u64> {
    // (elements per block, bytes per block), from ggml's type traits.
    let (block, size): (u64, u64) = match ty {
        0 => (1, 4),      // F32
        1 => (1, 2),      // F16
        2 => (32, 18),    // Q4_0
        3 => (32, 20),    // Q4_1
        6 => (32, 22),    // Q5_0
        7 => (32, 24),    // Q5_1
        8 => (32, 34),    // Q8_0
        9 => (32, 36),    // Q8_1
        10 => (256, 84),  // Q2_K
        11 => (256, 110), // Q3_K
        12 => (256, 144), // Q4_K
        13 => (256, 176), // Q5_K
        14 => (256, 210), // Q6_K
        15 => (256, 292), // Q8_K
        24 => (1, 1),     // I8
        25 => (1, 2),     // I16
        26 => (1, 4),     // I32
        27 => (1, 8),     // I64
        28 => (1, 8),     // F64
        30 => (1, 2),     // BF16
        _ => return None,
    };
    elements.div_ceil(block).checked_mul(size)
}

enum Value {
    Str(String),
    Num(u64),
    /// An array: its length.
    Array(u64),
    Other,
}

struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Reader<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn fits(&self, what: &'static str, count: u64, min_each: u64) -> Result<(), GgufError> {
        if count
            .checked_mul(min_each)
            .is_none_or(|n| n > self.remaining())
        {
            return Err(GgufError::Absurd {
                what,
                value: count,
                remaining: self.remaining(),
            });
        }
        Ok(())
    }

    fn bytes(&mut self, buf: &mut [u8]) -> Result<(), GgufError> {
        if buf.len() as u64 > self.remaining() {
            return Err(GgufError::Truncated {
                file_size: self.len,
            });
        }
        self.inner.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => GgufError::Truncated {
                file_size: self.len,
            },
            _ => GgufError::Io(e),
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                file_size: self.len,
            });
        }
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        if copied != n {
            return Err(GgufError::Truncated {
                file_size: self.len,
            });
        }
        self.pos += n;
        Ok(())
    }

    /// Skips a string value (its length, then its bytes) without keeping
    /// it.
    fn skip_string(&mut self) -> Result<(), GgufError> {
        let n = self.u64()?;
        if n > MAX_STRING_BYTES {
            return Err(GgufError::Absurd {
                what: "string length",
                value: n,
                remaining: self.remaining(),
            });
        }
        self.skip(n)
    }

    /// Reads a string value's bytes and says whether `needle` is in them.
    fn string_mentions(&mut self, needle: &[u8]) -> Result<bool, GgufError> {
        let n = self.u64()?;
        if n > MAX_STRING_BYTES || n > self.remaining() {
            return Err(GgufError::Absurd {
                what: "string length",
                value: n,
                remaining: self.remaining(),
            });
        }
        let mut buf = vec![0u8; n as usize];
        self.bytes(&mut buf)?;
        Ok(buf.windows(needle.len()).any(|w| w == needle))
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        let mut b = [0u8; 4];
        self.bytes(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        let mut b = [0u8; 8];
        self.bytes(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn string(&mut self, max: u64, what: &'static str) -> Result<String, GgufError> {
        let n = self.u64()?;
        if n > max || n > self.remaining() {
            return Err(GgufError::Absurd {
                what,
                value: n,
                remaining: self.remaining(),
            });
        }
        let mut buf = vec![0u8; n as usize];
        self.bytes(&mut buf)?;
        String::from_utf8(buf).map_err(|_| GgufError::Malformed(format!("{what}: not UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, GgufError> {
        let fixed = |n: u64| -> Option<u64> { Some(n) };
        let size = match ty {
            0 | 1 | 7 => fixed(1),
            2 | 3 => fixed(2),
            4..=6 => fixed(4),
            10..=12 => fixed(8),
            8 | 9 => None,
            other => {
                return Err(GgufError::Malformed(format!("unknown value type {other}")));
            }
        };
        if let Some(n) = size {
            let mut b = [0u8; 8];
            self.bytes(&mut b[..n as usize])?;
            let v = u64::from_le_bytes(b);
            // Integers only; floats and signed values are not needed here.
            return Ok(match ty {
                0 | 2 | 4 | 10 => Value::Num(v),
                _ => Value::Other,
            });
        }
        if ty == 8 {
            return Ok(Value::Str(self.string(MAX_STRING_BYTES, "string length")?));
        }
        // Array: element type, count, elements.
        if depth >= MAX_ARRAY_DEPTH {
            return Err(GgufError::Malformed("arrays nested too deeply".into()));
        }
        let elem = self.u32()?;
        let count = self.u64()?;
        let elem_size = match elem {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            8 | 9 => None,
            other => {
                return Err(GgufError::Malformed(format!(
                    "unknown array element type {other}"
                )));
            }
        };
        match elem_size {
            Some(s) => {
                self.fits("array length", count, s)?;
                self.skip(count * s)?;
            }
            None => {
                // Strings take at least their 8-byte length; arrays 12.
                self.fits("array length", count, 8)?;
                for _ in 0..count {
                    if elem == 8 {
                        self.skip_string()?;
                    } else {
                        self.value(9, depth + 1)?;
                    }
                }
            }
        }
        Ok(Value::Array(count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn header(version: u32, tensors: u64, kvs: u64) -> Vec<u8> {
        let mut v = b"GGUF".to_vec();
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&tensors.to_le_bytes());
        v.extend_from_slice(&kvs.to_le_bytes());
        v
    }

    fn kv_str(v: &mut Vec<u8>, k: &str, s: &str) {
        v.extend_from_slice(&(k.len() as u64).to_le_bytes());
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(&8u32.to_le_bytes());
        v.extend_from_slice(&(s.len() as u64).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
    }

    fn check(bytes: &[u8]) -> Result<GgufSummary, GgufError> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        read_summary(f.path())
    }

    /// The quantisation from `general.file_type`, and whether the chat
    /// template renders tools; neither when absent (the twin).
    #[test]
    fn quantization_and_tool_template() {
        let mut v = header(3, 0, 3);
        kv_str(&mut v, "general.architecture", "qwen2");
        kv_str(
            &mut v,
            "tokenizer.chat_template",
            "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}",
        );
        let k = "general.file_type";
        v.extend_from_slice(&(k.len() as u64).to_le_bytes());
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&15u32.to_le_bytes());
        let s = check(&v).unwrap();
        assert_eq!(s.quantization(), Some("Q4_K_M"));
        assert!(s.has_chat_template && s.template_uses_tools);
        let mut v = header(3, 0, 2);
        kv_str(&mut v, "general.architecture", "llama");
        kv_str(&mut v, "tokenizer.chat_template", "{{ messages }}");
        let s = check(&v).unwrap();
        assert_eq!(s.quantization(), None);
        assert!(s.has_chat_template && !s.template_uses_tools);
        // A template that is not UTF-8 is llama.cpp's to judge, not a
        // reason to refuse the header.
        let mut v = header(3, 0, 2);
        kv_str(&mut v, "general.architecture", "llama");
        let k = "tokenizer.chat_template";
        v.extend_from_slice(&(k.len() as u64).to_le_bytes());
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(&8u32.to_le_bytes());
        let t = b"\xff\xfe {% for t in tools %}";
        v.extend_from_slice(&(t.len() as u64).to_le_bytes());
        v.extend_from_slice(t);
        let s = check(&v).unwrap();
        assert!(s.has_chat_template && s.template_uses_tools);
    }

    #[test]
    fn minimal_valid_header() {
        let mut v = header(3, 0, 1);
        kv_str(&mut v, "general.architecture", "llama");
        let s = check(&v).unwrap();
        assert_eq!(s.architecture.as_deref(), Some("llama"));
        assert_eq!(s.version, 3);
    }

    #[test]
    fn hostile_headers_are_refused() {
        assert!(matches!(check(b""), Err(GgufError::Truncated { .. })));
        assert!(matches!(check(b"GGU"), Err(GgufError::Truncated { .. })));
        assert!(matches!(check(&[0u8; 64]), Err(GgufError::BadMagic(_))));
        assert!(matches!(
            check(&header(9, 0, 0)),
            Err(GgufError::BadVersion(9))
        ));
        assert!(matches!(
            check(&header(3, u64::MAX, 0)),
            Err(GgufError::Absurd {
                what: "tensor count",
                ..
            })
        ));
        assert!(matches!(
            check(&header(3, 0, 1 << 40)),
            Err(GgufError::Absurd {
                what: "metadata count",
                ..
            })
        ));
        // A string claiming 2^62 bytes.
        let mut v = header(3, 0, 1);
        v.extend_from_slice(&(1u64 << 62).to_le_bytes());
        v.extend_from_slice(&[0; 32]);
        assert!(matches!(check(&v), Err(GgufError::Absurd { .. })));
        // An array claiming more elements than bytes.
        let mut v = header(3, 0, 1);
        v.extend_from_slice(&1u64.to_le_bytes());
        v.push(b'k');
        v.extend_from_slice(&9u32.to_le_bytes());
        v.extend_from_slice(&4u32.to_le_bytes());
        v.extend_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(matches!(check(&v), Err(GgufError::Absurd { .. })));
        // Truncated in the middle of a value.
        let mut v = header(3, 0, 1);
        kv_str(&mut v, "general.architecture", "llama");
        v.truncate(v.len() - 2);
        assert!(matches!(
            check(&v),
            Err(GgufError::Truncated { .. } | GgufError::Absurd { .. })
        ));
    }

    #[test]
    fn tensor_past_the_end_is_refused() {
        let mut v = header(3, 1, 0);
        v.extend_from_slice(&1u64.to_le_bytes());
        v.push(b't');
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&1024u64.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes()); // F32: 4096 bytes
        v.extend_from_slice(&0u64.to_le_bytes());
        v.resize(v.len().div_ceil(32) * 32 + 100, 0);
        let err = check(&v).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
