//! Which files of a repository a Hugging Face model's `file` means: the
//! same rule for the hub's listing (`models pull`) and for a snapshot in
//! the cache (a run, offline).

use crate::config::provider::HubFile;

/// The quantisations tried, in order, when a repository holds several
/// GGUF models and the config names none (llama.cpp's `-hf` defaults).
pub const DEFAULT_QUANTS: [&str; 2] = ["Q4_K_M", "Q8_0"];

/// A model's files: one, or every part of a split GGUF, first part first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The files, as paths inside the repository.
    pub files: Vec<String>,
}

impl Selected {
    /// The file a run loads (a split model's first part).
    pub fn first(&self) -> &str {
        &self.files[0]
    }
}

/// Most parts a split model may have (llama.cpp's splits of the largest
/// models have a few dozen).
const MAX_PARTS: u32 = 512;

/// `-00001-of-00003.gguf` → `(1, 3)` and the name before it.
fn split_part(name: &str) -> Option<(&str, u32, u32)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, of) = stem.rsplit_once("-of-")?;
    let (prefix, part) = rest.rsplit_once('-')?;
    if part.len() != 5 || of.len() != 5 {
        return None;
    }
    let (part, of): (u32, u32) = (part.parse().ok()?, of.parse().ok()?);
    // A hostile listing must not make an empty model (`-of-00000`) or
    // hundreds of thousands of names to look for.
    ((1..=MAX_PARTS).contains(&of) && (1..=of).contains(&part)).then_some((prefix, part, of))
}

fn is_model_gguf(name: &str) -> bool {
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    // Projectors, importance matrices and draft heads are not models
    // (llama.cpp's `-hf` leaves the same out).
    base.ends_with(".gguf")
        && !["mmproj", "imatrix", "mtp-", "eagle3-"]
            .iter()
            .any(|w| base.contains(w))
}

/// The models among `files`: each a single GGUF or a complete split set
/// (an incomplete set is left out).
fn models(files: &[String]) -> Vec<Selected> {
    use std::collections::BTreeMap;
    // One pass: each split set's parts gathered by (prefix, count); a set
    // is a model when every part is there (no names are made up to look
    // for, whatever a listing claims).
    let mut sets: BTreeMap<(&str, u32), BTreeMap<u32, &String>> = BTreeMap::new();
    let mut out = Vec::new();
    for f in files.iter().filter(|f| is_model_gguf(f)) {
        match split_part(f) {
            None => out.push(Selected {
                files: vec![f.clone()],
            }),
            Some((prefix, part, n)) => {
                sets.entry((prefix, n)).or_default().insert(part, f);
            }
        }
    }
    for ((_, n), parts) in sets {
        if parts.len() == n as usize {
            out.push(Selected {
                files: parts.into_values().cloned().collect(),
            });
        }
    }
    out.sort_by(|a, b| a.first().cmp(b.first()));
    out
}

/// The model `spec` picks among `files`, or why there is none (the error
/// lists the candidates, so that the config's `file` can be set).
pub fn select(files: &[String], spec: &HubFile) -> Result<Selected, String> {
    let all = models(files);
    let names = || {
        let v: Vec<&str> = all.iter().map(Selected::first).collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    match spec {
        HubFile::Name(name) => all
            .iter()
            .find(|m| m.files.iter().any(|f| f == name))
            .cloned()
            .ok_or_else(|| format!("no GGUF file `{name}` (GGUF models: {})", names())),
        HubFile::Quant(q) => {
            let hits: Vec<&Selected> = all.iter().filter(|m| has_quant(m.first(), q)).collect();
            match hits.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(format!(
                    "no GGUF model with quantisation `{q}` (GGUF models: {})",
                    names()
                )),
                _ => Err(format!(
                    "several GGUF models match quantisation `{q}` ({}); set `file` to one of them",
                    hits.iter().map(|m| m.first()).collect::<Vec<_>>().join(", ")
                )),
            }
        }
        HubFile::Any => match all.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err("the repository holds no GGUF model".into()),
            _ => DEFAULT_QUANTS
                .iter()
                .find_map(|q| {
                    let hits: Vec<&Selected> =
                        all.iter().filter(|m| has_quant(m.first(), q)).collect();
                    (hits.len() == 1).then(|| hits[0].clone())
                })
                .ok_or_else(|| {
                    format!(
                        "the repository holds several GGUF models ({}); set `file` to one of them or to a quantisation such as `{}`",
                        names(),
                        DEFAULT_QUANTS[0]
                    )
                }),
        },
    }
}

/// Whether a file's name carries quantisation `q` as a whole word
/// (case-insensitive; `Q4_K` is not found in `Q4_K_M`).
fn has_quant(file: &str, q: &str) -> bool {
    let base = file.rsplit('/').next().unwrap_or(file).to_ascii_uppercase();
    let base = match split_part(&base.to_ascii_lowercase()) {
        Some((prefix, _, _)) => prefix.to_ascii_uppercase(),
        None => base.trim_end_matches(".GGUF").to_string(),
    };
    let q = q.to_ascii_uppercase();
    base.match_indices(&q).any(|(i, _)| {
        let before = base[..i].chars().next_back();
        let after = base[i + q.len()..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !c.is_ascii_alphanumeric() && c != '_');
        edge(before) && edge(after)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_quant_picks_its_file_and_split_sets_come_whole() {
        let files = v(&[
            "README.md",
            "m-Q4_K_M.gguf",
            "m-Q4_K.gguf",
            "m-q8_0-00001-of-00002.gguf",
            "m-q8_0-00002-of-00002.gguf",
            "mmproj-m-f16.gguf",
        ]);
        let q = |s: &str| select(&files, &HubFile::Quant(s.into()));
        assert_eq!(q("q4_k_m").unwrap().files, v(&["m-Q4_K_M.gguf"]));
        assert_eq!(q("Q4_K").unwrap().files, v(&["m-Q4_K.gguf"]));
        assert_eq!(
            q("Q8_0").unwrap().files,
            v(&["m-q8_0-00001-of-00002.gguf", "m-q8_0-00002-of-00002.gguf"])
        );
        assert!(q("F16").unwrap_err().contains("m-Q4_K_M.gguf"));
        assert_eq!(
            select(&files, &HubFile::Any).unwrap().files,
            v(&["m-Q4_K_M.gguf"]),
            "several models: the default quantisation"
        );
        assert_eq!(
            select(&files, &HubFile::Name("m-q8_0-00002-of-00002.gguf".into()))
                .unwrap()
                .first(),
            "m-q8_0-00001-of-00002.gguf"
        );
    }

    #[test]
    fn one_model_is_picked_without_a_name_and_gaps_are_refused() {
        assert_eq!(
            select(&v(&["x.gguf", "mmproj.gguf"]), &HubFile::Any)
                .unwrap()
                .files,
            v(&["x.gguf"])
        );
        assert_eq!(
            select(&v(&["a-F16.gguf", "b-Q8_0.gguf"]), &HubFile::Any)
                .unwrap()
                .files,
            v(&["b-Q8_0.gguf"]),
            "no Q4_K_M: Q8_0"
        );
        let e = select(&v(&["a-F16.gguf", "b-BF16.gguf"]), &HubFile::Any).unwrap_err();
        assert!(e.contains("a-F16.gguf, b-BF16.gguf"), "{e}");
        let e = select(&v(&["m-00001-of-00002.gguf"]), &HubFile::Any).unwrap_err();
        assert!(e.contains("no GGUF model"), "an incomplete split set: {e}");
        // Found by the hub_listing fuzz target: a split "of 0" made a
        // model of no file. Names that are no split are single files.
        for hostile in [
            "m-00001-of-00000.gguf",
            "m-00003-of-00002.gguf",
            "m-00001-of-99999.gguf",
        ] {
            let m = select(&v(&[hostile]), &HubFile::Any).unwrap();
            assert_eq!(m.files, v(&[hostile]));
        }
    }
}
