//! JSON-level errors.

use super::*;

#[test]
fn unknown_fields_at_any_level_name_the_full_path() {
    let cases = [
        (with(base(), "foo", json!(1)), "foo"),
        (
            with(base(), "resource_limits", json!({"timeout_s": 5, "foo": 1})),
            "resource_limits.foo",
        ),
        (
            with(
                base(),
                "input",
                json!({"type": "testsrc", "duration_s": 1, "loop": true}),
            ),
            "input.loop",
        ),
        (
            with(base(), "output", json!({"type": "null", "format": "mp4"})),
            "output.format",
        ),
        (
            with(base(), "weird`name, expected", json!(1)),
            "weird`name, expected",
        ),
    ];
    for (v, field) in cases {
        let e = assert_err(parse(&v), codes::UNKNOWN_FIELD, Some(field));
        assert!(e.message.contains(field), "{e:?}");
    }
}

#[test]
fn invalid_json_is_reported_without_a_field() {
    for body in [
        &b""[..],
        b"{",
        b"{\"scenario\": }",
        b"[]",
        b"42",
        b"null",
        b"\"x\"",
        b"{} trailing",
        b"{}{}",
        b"\xff\xfe",
        br#"["720p30-h264", {"type": "testsrc", "duration_s": 1}, {"type": "null"}]"#,
    ] {
        let r = parse_job_request(body, &no_roots());
        assert_err(r, codes::INVALID_JSON, None);
    }
}

#[test]
fn nested_objects_given_as_arrays_are_rejected() {
    for key in ["input", "output", "resource_limits"] {
        let v = with(base(), key, json!(["testsrc", 1]));
        assert_err(parse(&v), codes::INVALID_FIELD, Some(key));
    }
}

/// A number no type holds is refused on its own field, the innermost.
#[test]
fn numbers_out_of_range_name_their_field() {
    for (body, field) in [
        (&br#"{"width": 1e999}"#[..], "width"),
        (
            br#"{"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":1e309},"output":{"type":"null"}}"#,
            "input.duration_s",
        ),
        (
            br#"{"scenario":"720p30-h264","resource_limits":{"timeout_s":-1e400},"output":{"type":"null"}}"#,
            "resource_limits.timeout_s",
        ),
    ] {
        let e = assert_err(
            parse_job_request(body, &no_roots()),
            codes::INVALID_FIELD,
            Some(field),
        );
        assert!(e.message.contains("out of range"), "{e:?}");
    }
}

/// A repeated key is named in full, however deep it is.
#[test]
fn duplicate_nested_fields_name_the_innermost_field() {
    let body = br#"{"scenario":"720p30-h264","input":{"type":"file","path":"a.mp4","path":"b.mp4"},"output":{"type":"null"}}"#;
    assert_err(
        parse_job_request(body, &no_roots()),
        codes::INVALID_FIELD,
        Some("input.path"),
    );
    let body = br#"{"scenario":"720p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"},"resource_limits":{"timeout_s":5,"timeout_s":6}}"#;
    assert_err(
        parse_job_request(body, &no_roots()),
        codes::INVALID_FIELD,
        Some("resource_limits.timeout_s"),
    );
}

#[test]
fn duplicate_fields_are_rejected() {
    let body = br#"{"scenario":"720p30-h264","scenario":"1080p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"null"}}"#;
    assert_err(
        parse_job_request(body, &no_roots()),
        codes::INVALID_FIELD,
        Some("scenario"),
    );
}

#[test]
fn a_missing_body_field_set_is_reported_first_as_missing() {
    assert_err(
        parse_job_request(b"{}", &no_roots()),
        codes::MISSING_FIELD,
        Some("width"),
    );
}
