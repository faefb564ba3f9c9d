//! Job labels: bounds, key syntax and the reserved key.

use super::*;

/// Most labels one job may carry.
pub const MAX_LABELS: usize = 16;
/// Longest label key, in characters.
pub const MAX_LABEL_KEY_LEN: usize = 63;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE_LEN: usize = 128;
/// The label key no user may set: the experiment is the job's own field.
pub const RESERVED_LABEL_KEY: &str = "experiment";

/// Whether `key` is a valid label key: 1–63 of `[a-z0-9_.-]`, starting with
/// a letter or digit, and not the reserved `experiment`.
pub fn label_key_ok(key: &str) -> bool {
    let mut chars = key.chars();
    (1..=MAX_LABEL_KEY_LEN).contains(&key.len())
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
        && key != RESERVED_LABEL_KEY
}

/// Validate a label map (the bounds in docs/API.md). `field` is the map's
/// name in the request (`labels`); a refusal names the innermost field
/// (`labels.<key>`), or `field` itself when there are too many.
pub fn check_labels(
    field: &str,
    labels: std::collections::BTreeMap<String, String>,
) -> Result<std::collections::BTreeMap<String, String>, FieldError> {
    if labels.len() > MAX_LABELS {
        return Err(invalid(
            field,
            format!(
                "`{field}` has {} labels; at most {MAX_LABELS} are allowed",
                labels.len()
            ),
        ));
    }
    for (key, value) in &labels {
        let inner = format!("{field}.{key}");
        if key == RESERVED_LABEL_KEY {
            return Err(invalid(
                &inner,
                format!("the label key `{RESERVED_LABEL_KEY}` is reserved (experiments set it)"),
            ));
        }
        if !label_key_ok(key) {
            return Err(invalid(
                &inner,
                format!(
                    "label key {key:?} must be 1-{MAX_LABEL_KEY_LEN} characters of \
                     [a-z0-9_.-], starting with a letter or digit"
                ),
            ));
        }
        if value.chars().count() > MAX_LABEL_VALUE_LEN {
            return Err(invalid(
                &inner,
                format!("`{inner}` is longer than {MAX_LABEL_VALUE_LEN} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(
                &inner,
                format!("`{inner}` must not contain control characters"),
            ));
        }
    }
    Ok(labels)
}
