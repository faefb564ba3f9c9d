//! serde's errors mapped onto the API's field errors, and the JSON-level
//! checks that run before a body is deserialised.

use super::*;

pub(super) fn join_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}.{name}")
    }
}

/// The name between the first pair of backticks of a serde message such as
/// "unknown field `foo`, expected one of ...".
pub(super) fn backticked_name<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    // serde writes the name unescaped; the separators it appends are fixed.
    ["`, expected", "`, there are no fields", "` at line", "`"]
        .iter()
        .find_map(|sep| rest.find(sep).map(|i| &rest[..i]))
}

/// The dotted field name of a path serde_path_to_error tracked.
pub(super) fn field_path(segments: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut path = String::new();
    for seg in segments.iter() {
        match seg {
            // An empty key would leave `field` empty (or `input.`):
            // name it as the JSON it is.
            Segment::Map { key } if key.is_empty() => path = join_path(&path, "\"\""),
            Segment::Map { key } => path = join_path(&path, key),
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Enum { variant } => path = join_path(&path, variant),
            Segment::Unknown => path = join_path(&path, "?"),
        }
    }
    path
}

/// A request body's deserialization error as a refusal naming the
/// innermost field (shared by `POST /v1/jobs` and the Go-seed `POST /jobs`).
pub(crate) fn map_serde_error(err: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let path = field_path(err.path());
    let inner = err.into_inner();
    if !inner.is_data() {
        return FieldError::new(
            codes::INVALID_JSON,
            None,
            format!("request body is not valid JSON: {inner}"),
        );
    }
    let full = inner.to_string();
    let suffix = format!(" at line {} column {}", inner.line(), inner.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full);

    if let Some(name) = backticked_name(message, "unknown field `") {
        // The path already ends with the unknown key; the name parsed from the
        // message is only a fallback.
        let field = if path.is_empty() {
            name.to_string()
        } else {
            path
        };
        return FieldError::new(
            codes::UNKNOWN_FIELD,
            Some(&field),
            format!("unknown field `{field}`"),
        );
    }
    if let Some(name) = backticked_name(message, "missing field `") {
        return missing(&join_path(&path, name));
    }
    if let Some(name) = backticked_name(message, "duplicate field `") {
        // serde refuses the second key before reading its value: the path
        // ends at the object that holds it.
        let field = join_path(&path, name);
        return invalid(&field, format!("duplicate field `{field}`"));
    }
    if path.is_empty() {
        return FieldError::new(
            codes::INVALID_JSON,
            None,
            format!("request body must be a JSON object: {message}"),
        );
    }
    invalid(&path, format!("`{path}`: {message}"))
}

/// A request body as a JSON value. Malformed JSON is `invalid_json` on no
/// field, but for a number too large for any type (`1e309`), which is
/// refused on the field that holds it.
pub(crate) fn parse_json_value(body: &[u8]) -> Result<serde_json::Value, FieldError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed: Result<serde_json::Value, _> = serde_path_to_error::deserialize(&mut de);
    let value = parsed.map_err(|e| {
        let path = field_path(e.path());
        let inner = e.into_inner();
        let full = inner.to_string();
        if full.starts_with("number out of range") && !path.is_empty() {
            return invalid(&path, format!("`{path}`: the number is out of range"));
        }
        FieldError::new(
            codes::INVALID_JSON,
            None,
            format!("request body is not valid JSON: {full}"),
        )
    })?;
    de.end().map_err(|e| {
        FieldError::new(
            codes::INVALID_JSON,
            None,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    Ok(value)
}

/// serde's derived structs also accept JSON arrays (fields by position); the
/// API takes objects only. This pass also reports malformed JSON.
pub(super) fn check_object_shapes(body: &[u8]) -> Result<(), FieldError> {
    let value = parse_json_value(body)?;
    let obj = value.as_object().ok_or_else(|| {
        FieldError::new(
            codes::INVALID_JSON,
            None,
            "request body must be a JSON object",
        )
    })?;
    for key in ["input", "output", "resource_limits", "quality"] {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Object(_)) => {}
            Some(_) => return Err(invalid(key, format!("`{key}` must be a JSON object"))),
        }
    }
    Ok(())
}
