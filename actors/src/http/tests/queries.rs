//! Query strings and media types: refusals name the parameter.

use axum::extract::Query;
use axum::http::StatusCode;

use super::super::body::is_json_media_type;
use super::super::error::ApiResult;
use super::super::jobs::ListQuery;
use super::super::nodes::DrainQuery;
use super::super::query::QueryPairs;
use super::super::report::report_query;

fn pairs(p: &[(&str, &str)]) -> QueryPairs {
    Ok(Query(
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    ))
}

#[track_caller]
fn refused(r: ApiResult<impl Sized>, code: &str, field: &str) {
    match r {
        Ok(_) => panic!("accepted; expected {code} naming {field}"),
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.error.code, code, "{e:?}");
            assert_eq!(e.error.field.as_deref(), Some(field), "{e:?}");
        }
    }
}

#[test]
fn query_refusals_name_the_parameter() {
    let q = ListQuery::parse(pairs(&[
        ("state", "queued"),
        ("limit", "5"),
        ("cursor", "7"),
    ]))
    .expect("valid");
    assert_eq!(
        (q.state.as_deref(), q.limit, q.cursor),
        (Some("queued"), Some(5), Some(7))
    );
    refused(
        ListQuery::parse(pairs(&[("nope", "1")])),
        "unknown_field",
        "nope",
    );
    refused(
        ListQuery::parse(pairs(&[("", "1")])),
        "unknown_field",
        "\"\"",
    );
    refused(
        ListQuery::parse(pairs(&[("limit", "x")])),
        "invalid_field",
        "limit",
    );
    refused(
        ListQuery::parse(pairs(&[("cursor", "-1")])),
        "invalid_field",
        "cursor",
    );
    refused(
        ListQuery::parse(pairs(&[("limit", "1"), ("limit", "2")])),
        "invalid_field",
        "limit",
    );
    let q = DrainQuery::parse(pairs(&[("deadline_s", "0")])).expect("valid");
    assert_eq!(q.deadline_s, Some(0));
    refused(
        DrainQuery::parse(pairs(&[("deadline_s", "99999999999999999999999")])),
        "invalid_field",
        "deadline_s",
    );
    refused(
        DrainQuery::parse(pairs(&[("limit", "1")])),
        "unknown_field",
        "limit",
    );
    // The report: `label` repeats, nothing else does.
    let q = report_query(pairs(&[
        ("experiment", "sweep"),
        ("label", "clip=park"),
        ("label", "run=2"),
        ("min_vmaf", "93"),
    ]))
    .expect("valid");
    assert_eq!(q.labels.len(), 2);
    assert_eq!(q.min_vmaf, Some(93.0));
    for (p, code, field) in [
        (&[("min_vmaf", "101")][..], "invalid_field", "min_vmaf"),
        (&[("min_psnr", "-3")][..], "invalid_field", "min_psnr"),
        (&[("label", "nokey")][..], "invalid_field", "label"),
        (
            &[("min_vmaf", "90"), ("min_vmaf", "91")][..],
            "invalid_field",
            "min_vmaf",
        ),
        (&[("vmaf", "90")][..], "unknown_field", "vmaf"),
    ] {
        refused(report_query(pairs(p)), code, field);
    }
}

#[test]
fn json_media_types_match_exactly_and_in_any_case() {
    for ok in [
        "application/json",
        "Application/JSON",
        "APPLICATION/JSON; charset=utf-8",
        "application/json ;charset=UTF-8",
    ] {
        assert!(is_json_media_type(ok), "{ok}");
    }
    for refused in [
        "application/jsonx",
        "application/json-patch+json",
        "application/merge-patch+json",
        "text/json",
        "application/x-www-form-urlencoded",
        "",
    ] {
        assert!(!is_json_media_type(refused), "{refused}");
    }
}
