use super::submit::{bitrate_value, build_body, input_value, output_value};
use super::*;
use serde_json::json;

#[test]
fn flags_make_the_body_and_override_the_file() {
    let args = SubmitArgs {
        scenario: Some("720p30-h264".into()),
        size: Some(Size {
            width: 640,
            height: 360,
        }),
        bitrate: Some("2500k".into()),
        input: Some("testsrc:2.5".into()),
        to: Some("rtmp://h/app/key".into()),
        priority: Some("high".into()),
        timeout_s: Some(60),
        max_retries: Some(1),
        ..SubmitArgs::default()
    };
    let file = json!({"fps": 25, "priority": "low", "resource_limits": {"max_cpu_percent": 50}});
    let body = build_body(Some(file), &args).expect("body");
    assert_eq!(
        body,
        json!({
            "scenario": "720p30-h264", "width": 640, "height": 360, "fps": 25,
            "bitrate": "2500k", "input": {"type": "testsrc", "duration_s": 2.5},
            "output": {"type": "rtmp", "url": "rtmp://h/app/key"}, "priority": "high",
            "max_retries": 1,
            "resource_limits": {"max_cpu_percent": 50, "timeout_s": 60}
        })
    );
}

#[test]
fn inputs_outputs_and_bitrates() {
    assert_eq!(
        input_value("clips/a.mp4").expect("file"),
        json!({"type": "file", "path": "clips/a.mp4"})
    );
    assert!(input_value("testsrc:ten").is_err());
    assert!(input_value("testsrc").is_err());
    assert_eq!(output_value("null"), json!({"type": "null"}));
    assert_eq!(
        output_value("out.mp4"),
        json!({"type": "file", "path": "out.mp4"})
    );
    assert_eq!(bitrate_value("3000"), json!(3000));
    assert_eq!(bitrate_value("6M"), json!("6M"));
    assert_eq!(
        parse_size("1280x720"),
        Ok(Size {
            width: 1280,
            height: 720
        })
    );
    assert!(parse_size("1280").is_err());
    // No output named: encode and discard.
    let body = build_body(None, &SubmitArgs::default()).expect("body");
    assert_eq!(body, json!({"output": {"type": "null"}}));
}
