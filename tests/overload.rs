//! Overload and exhaustion at the HTTP API, against the real `ffrtmp-node`:
//!
//! | check | test |
//! |---|---|
//! | 1,100 idle connections to a node whose open-file limit is 1,024: the job due to start runs and succeeds, the API answers throughout, the node holds at most `--max-http-connections` of them, and never runs out of descriptors | [`a_flood_of_idle_connections_neither_fails_the_next_job_nor_silences_the_api`] |
//! | a client trickling its headers is disconnected (header timeout); one trickling its body gets `408` and is disconnected (body timeout) | [`clients_trickling_headers_or_a_body_are_disconnected`] |
//! | a body announced as 1 GB gets `413` at once, without a byte of it sent | [`a_body_announced_too_large_is_refused_before_it_is_sent`] |
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);
/// The node's open-file limit in the flood test, soft and hard.
const NOFILE: u64 = 1024;
const FLOOD: usize = 1100;
/// `--max-http-connections`' default.
const DEFAULT_CAP: usize = 512;

fn addr(node: &Node) -> String {
    node.base
        .strip_prefix("http://")
        .expect("an http:// base")
        .to_string()
}

/// Whether the server has closed `s` (EOF or reset), without blocking.
fn closed_by_server(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    let closed = loop {
        match (&*s).read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    s.set_nonblocking(false).expect("blocking");
    closed
}

/// Let this test process hold the flood: its soft open-file limit up to the
/// hard one.
fn raise_own_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    assert!(
        hard >= FLOOD as u64 + 256,
        "this test needs an open-file limit above {FLOOD}: the hard limit is {hard}"
    );
}

#[test]
fn a_flood_of_idle_connections_neither_fails_the_next_job_nor_silences_the_api() {
    let _serial = serial();
    raise_own_open_file_limit();
    let node = Node::start(
        "flood",
        NodeOpts {
            slots: 1,
            nofile: Some(NOFILE),
            // Idle connections stay until the cap makes them go: it is the
            // cap under test, not the timeout.
            extra: vec!["--http-header-timeout-s".into(), "3600".into()],
            ..NodeOpts::default()
        },
    );
    // One slot: `due` waits behind `blocker` and starts when it is cancelled,
    // with the flood open.
    let blocker = node.submit(long_job(3600.0));
    let due = node.submit(small_job(1.0));
    node.wait_state(&blocker, &["running"], LONG);

    let to = addr(&node);
    let flood: Vec<TcpStream> = (0..FLOOD)
        .map(|i| TcpStream::connect(&to).unwrap_or_else(|e| panic!("connection {i}: {e}")))
        .collect();
    // The node keeps at most its cap of them (the oldest silent ones make
    // room for newer ones).
    wait_for(
        "the node to close the connections over its cap",
        LONG,
        || {
            let open = flood.iter().filter(|s| !closed_by_server(s)).count();
            (open <= DEFAULT_CAP).then_some(open)
        },
    );

    // With the flood held, the API answers and the job due to start runs.
    let (status, body) = node.post(&format!("/v1/jobs/{blocker}/cancel"));
    assert!(
        (200..300).contains(&status),
        "cancel answered {status}: {body}"
    );
    let job = node.wait_state(&due, &["succeeded", "failed", "cancelled"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    let (status, health) = node.get("/healthz");
    assert_eq!(status, 200, "{health}");
    let still_open = flood.iter().filter(|s| !closed_by_server(s)).count();
    assert!(
        still_open > 0,
        "the flood was still held while the job ran (the test means something)"
    );
    let log = node.log();
    assert!(
        !log.contains("Too many open files"),
        "the node ran out of descriptors:\n{log}"
    );
    assert!(
        log.contains("open-file limit"),
        "the node logs its open-file limit:\n{log}"
    );
    drop(flood);
}

/// Send `head`, then one byte of `trickle` at a time until the server
/// closes the connection; what it answered meanwhile. Panics if it is still
/// open after `LONG`.
fn trickle_until_closed(to: &str, head: &[u8], trickle: &[u8]) -> String {
    let mut s = TcpStream::connect(to).expect("connect");
    s.write_all(head).expect("send the head");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let deadline = Instant::now() + LONG;
    let mut answer = Vec::new();
    let mut next = trickle.iter().cycle();
    let mut buf = [0u8; 4096];
    loop {
        assert!(
            Instant::now() < deadline,
            "still connected after {LONG:?}; answered: {}",
            String::from_utf8_lossy(&answer)
        );
        let byte = next.next().copied().unwrap_or(b'a');
        if s.write_all(&[byte]).is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn clients_trickling_headers_or_a_body_are_disconnected() {
    let node = Node::start(
        "slowloris",
        NodeOpts {
            extra: vec![
                "--http-header-timeout-s".into(),
                "1".into(),
                "--http-body-timeout-s".into(),
                "1".into(),
            ],
            ..NodeOpts::default()
        },
    );
    let to = addr(&node);
    // Headers that never end.
    trickle_until_closed(
        &to,
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Slow: ",
        b"abcdefgh",
    );
    // A whole head, then a body that never ends.
    let answer = trickle_until_closed(
        &to,
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 4000\r\n\r\n{\"scenario\": \"",
        b"abcdefgh",
    );
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"body_timeout\""), "{answer}");
    // The node serves others as before.
    let (status, _) = node.get("/healthz");
    assert_eq!(status, 200);
}

#[test]
fn a_body_announced_too_large_is_refused_before_it_is_sent() {
    let key = "overload-key";
    let node = Node::start(
        "big-body",
        NodeOpts {
            api_key: Some(key.into()),
            ..NodeOpts::default()
        },
    );
    let mut s = TcpStream::connect(addr(&node)).expect("connect");
    let head = format!(
        "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("send the head");
    // Not a byte of the body: the answer must come anyway. (The read
    // timeout only bounds a test that would otherwise hang.)
    s.set_read_timeout(Some(LONG)).expect("read timeout");
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let text = loop {
        let n = s
            .read(&mut buf)
            .expect("an answer without the body being sent");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).into_owned();
        if n == 0 || text.ends_with('}') {
            break text;
        }
    };
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "the client is told the connection ends (its body is never read): {head}"
    );
    let err: Value = serde_json::from_str(body).expect("a JSON error");
    assert_eq!(err["error"]["code"], "body_too_large", "{err}");
    assert!(err["error"]["field"].is_null(), "{err}");
    let (status, page) = node.get("/v1/jobs");
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["jobs"].as_array().map(Vec::len),
        Some(0),
        "nothing stored"
    );
}
