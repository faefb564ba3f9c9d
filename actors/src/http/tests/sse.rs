//! Server-sent events: an event that does not serialise.

use super::super::sse::{json_event, send_event};

/// A value that does not serialise became `data: {}` on the stream;
/// now it is an error event, and the stream ends after it.
#[tokio::test]
async fn an_event_that_does_not_serialise_ends_the_stream_with_an_error() {
    let bad: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    let ev = json_event("state", &bad);
    let Err(shown) = &ev else {
        panic!("serialised: {ev:?}")
    };
    let shown = format!("{shown:?}");
    assert!(shown.contains("event: error"), "{shown}");
    assert!(shown.contains("internal"), "{shown}");
    assert!(!shown.contains("data: {}"), "{shown}");
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    assert!(!send_event(&tx, ev).await, "the stream goes on");
    assert!(rx.recv().await.is_some(), "the error event was sent");
    let fine = json_event("state", &serde_json::json!({"id": "j"}));
    assert!(send_event(&tx, fine).await);
}
