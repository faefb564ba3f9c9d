//! Query strings: known names only, each at most once unless repeatable;
//! refusals name the parameter, as a body's refusals name the field.

use axum::extract::Query;
use axum::http::StatusCode;
use ffrtmp_runtime::error::FieldError;

use super::error::ApiResult;
use super::ApiError;

/// A query string as (name, value) pairs, percent-decoded.
pub(super) type QueryPairs =
    Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>;

/// The pairs of a query string, each name at most once and one of `known`.
/// Refusals name the parameter, like a body's refusals name the field.
pub(super) fn query_params(query: QueryPairs, known: &[&str]) -> ApiResult<Vec<(String, String)>> {
    query_params_repeatable(query, known, &[])
}

/// [`query_params`], where the names in `repeatable` may come more than once.
pub(super) fn query_params_repeatable(
    query: QueryPairs,
    known: &[&str],
    repeatable: &[&str],
) -> ApiResult<Vec<(String, String)>> {
    let bad = |e: FieldError| ApiError::field(StatusCode::BAD_REQUEST, e);
    let Query(pairs) = query.map_err(|e| {
        bad(FieldError::new(
            "invalid_query",
            None,
            format!("the query string cannot be read: {}", e.body_text()),
        ))
    })?;
    let mut seen: Vec<&str> = Vec::new();
    for (name, _) in &pairs {
        // An empty name is named as the JSON it would be, as in bodies.
        let field = if name.is_empty() { "\"\"" } else { name };
        if !known.contains(&name.as_str()) {
            return Err(bad(FieldError::new(
                "unknown_field",
                Some(field),
                format!(
                    "unknown query parameter `{field}`; known: {}",
                    known.join(", ")
                ),
            )));
        }
        if seen.contains(&name.as_str()) && !repeatable.contains(&name.as_str()) {
            return Err(bad(FieldError::invalid(
                field,
                format!("query parameter `{field}` is given twice"),
            )));
        }
        seen.push(name);
    }
    Ok(pairs)
}

/// A whole non-negative number in a query parameter.
pub(super) fn query_number<T: std::str::FromStr>(name: &str, value: &str) -> ApiResult<T> {
    value.parse().map_err(|_| {
        ApiError::field(
            StatusCode::BAD_REQUEST,
            FieldError::invalid(
                name,
                format!("`{name}` must be a whole number in range, got {value:?}"),
            ),
        )
    })
}
