//! Finds the line and column of a dotted key path in TOML text, so that
//! errors found after parsing still point into the file.

use super::Location;

/// Line and column of the value at `key_path` (`a.b[2].c`), if it exists.
pub(super) fn locate(text: &str, key_path: &str) -> Option<Location> {
    if key_path.is_empty() {
        return None;
    }
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut item = doc.as_item();
    let mut best = None;
    for segment in segments(key_path) {
        let next = match segment {
            Segment::Key(k) => item.get(k),
            Segment::Index(i) => item.get(i),
        };
        match next {
            Some(next) => {
                item = next;
                if let Some(span) = item.span() {
                    best = Some(span.start);
                }
            }
            // The deepest part that exists still says roughly where to look.
            None => break,
        }
    }
    best.map(|offset| offset_to_location(text, offset))
}

/// Converts a byte offset into a 1-based line and character column.
pub(super) fn offset_to_location(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> impl Iterator<Item = Segment<'_>> {
    path.split('.').flat_map(|part| {
        let (key, rest) = part.split_once('[').unwrap_or((part, ""));
        let indices = rest
            .split('[')
            .filter_map(|i| i.trim_end_matches(']').parse().ok())
            .map(Segment::Index);
        (!key.is_empty())
            .then_some(Segment::Key(key))
            .into_iter()
            .chain(indices)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_array_items() {
        let text = "[slm]\nenabled = true\n[[slm.model_allow_lists.global_models]]\nid = \"a\"\n[[slm.model_allow_lists.global_models]]\nid = \"b\"\n";
        let loc = locate(text, "slm.model_allow_lists.global_models[1].id").unwrap();
        assert_eq!(loc.line, 6);
        assert_eq!(loc.column, 6);
        assert_eq!(locate(text, "slm.enabled").unwrap().line, 2);
    }
}
