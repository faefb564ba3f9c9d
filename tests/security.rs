//! Security checks as tests, against the real `ffrtmp-node` binary.
//!
//! Every check, and the test that makes it:
//!
//! | check | where |
//! |---|---|
//! | every route that needs the API key answers 401 (JSON error) without it, with a wrong one, or without `Bearer `; `/healthz`, `/readyz` and `/v1/openapi.json` need none; no other route is public | [`every_route_but_health_needs_the_api_key`] |
//! | a body over `--max-body-bytes` (sized, or chunked) → 413, nothing stored | [`an_oversized_body_is_refused_with_413_and_nothing_is_stored`] |
//! | `Content-Type` matched exactly as a media type, any case; duplicate keys and numbers out of range refused on both job routes, naming the innermost field | [`media_types_match_exactly_and_both_job_routes_name_the_innermost_bad_field`] |
//! | idle-connection floods, trickled headers or bodies, a body announced too large → capped, disconnected, 413 at once | tests/overload.rs |
//! | input/output paths: `..`, absolute outside the roots, a look-alike root, a symlinked dir or file escaping → 400 naming the field, nothing stored | [`paths_escaping_the_media_root_are_refused_with_the_field_and_nothing_is_stored`] (more cases: tests/standalone.rs `bad_input_is_rejected_with_the_field_and_nothing_is_stored`) |
//! | worker with an expired certificate from the right CA → refused, never listed, both logs name the expiry | [`a_worker_with_an_expired_certificate_is_refused_and_both_sides_log_the_expiry`] |
//! | worker with a certificate from another CA → refused and logged | tests/cluster.rs `a_worker_with_a_certificate_from_another_ca_is_refused` |
//! | client with no certificate → closed with `NO_CLIENT_CERT`, logged | tests/cluster.rs `a_client_without_a_certificate_is_closed_with_the_no_client_certificate_code` |
//! | worker speaking another protocol version → refused, exits, logged | tests/cluster.rs `a_worker_speaking_another_protocol_version_is_refused_and_exits` |
//! | join with a wrong or expired token → refused, logged | tests/cluster.rs `a_join_with_a_wrong_or_expired_token_is_refused_and_the_worker_exits` |
//! | a node's `Started`/`Progress`/`Finished` for another node's job (its token, or a wrong one) or for no job → ignored and logged; a second hello claiming another node → link closed; the job finishes on its own worker, attempt 1 | [`messages_about_another_nodes_job_are_ignored_and_logged`] |
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::cluster::*;
use common::*;
use ffrtmp_runtime::model::{Failure, FailureReason, Isolation, Outcome, Progress};
use ffrtmp_runtime::wire::{self, AttemptRef, Capabilities, ToMaster, ToWorker, PROTOCOL_VERSION};
use ffrtmp_transport_quic::endpoint::{self, Link, Timers};
use ffrtmp_transport_quic::pki::{self, CertificateAuthority, NodeIdentity};
use ffrtmp_transport_quic::{frame, tls};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);
const KEY: &str = "s3cret-key";

// ---------------------------------------------------------------------------
// HTTP API

fn keyed_node(name: &str, max_body: usize) -> Node {
    Node::start(
        name,
        NodeOpts {
            api_key: Some(KEY.into()),
            extra: vec!["--max-body-bytes".into(), max_body.to_string()],
            ..NodeOpts::default()
        },
    )
}

/// How many jobs the node has stored.
fn job_count(node: &Node) -> usize {
    let (status, page) = node.get("/v1/jobs?limit=1000");
    assert_eq!(status, 200, "{page}");
    page["jobs"].as_array().map(Vec::len).expect("jobs")
}

#[test]
fn every_route_but_health_needs_the_api_key() {
    let node = keyed_node("auth", 64 * 1024);
    let routes = ffrtmp_actors::admin::routes();
    // Only health and the API's own document are public: a route added
    // without the key fails here.
    let public: BTreeSet<&str> = routes
        .iter()
        .filter(|r| !r.needs_key)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        public,
        BTreeSet::from(["/healthz", "/readyz", "/v1/openapi.json"]),
        "{routes:?}"
    );
    // The routes the API documents are all listed (and so all checked below).
    for (method, path) in [
        ("POST", "/v1/jobs"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/{id}"),
        ("POST", "/v1/jobs/{id}/cancel"),
        ("GET", "/v1/jobs/{id}/events"),
        ("GET", "/v1/nodes"),
        ("POST", "/v1/nodes/{id}/drain"),
        ("GET", "/v1/reports/efficiency"),
        ("GET", "/metrics"),
    ] {
        assert!(
            routes
                .iter()
                .any(|r| r.method == method && r.path == path && r.needs_key),
            "{method} {path} is not a keyed route: {routes:?}"
        );
    }

    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client");
    let send = |method: &str, path: &str, auth: Option<&str>| {
        let url = node.url(path);
        let mut rb = match method {
            "GET" => client.get(url),
            "POST" => client.post(url).json(&small_job(0.5)),
            other => panic!("a route with method {other}: add it to this test"),
        };
        if let Some(a) = auth {
            rb = rb.header("Authorization", a);
        }
        let resp = rb.send().expect("request");
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        (status, ct, resp.text().unwrap_or_default())
    };
    let before = job_count(&node);
    let mut checked = 0;
    for r in &routes {
        let path = r.path.replace("{id}", "no-such-id");
        if !r.needs_key {
            let (status, _, body) = send(r.method, &path, None);
            assert_eq!(status, 200, "{} {path} without a key: {body}", r.method);
            continue;
        }
        for (what, auth) in [
            ("no key", None),
            ("a wrong key", Some("Bearer wrong-key".to_string())),
            ("the key with a suffix", Some(format!("Bearer {KEY}x"))),
            ("a prefix of the key", Some(format!("Bearer {}", &KEY[..4]))),
            ("the key without Bearer", Some(KEY.to_string())),
            ("an empty bearer", Some("Bearer ".to_string())),
        ] {
            let (status, ct, body) = send(r.method, &path, auth.as_deref());
            assert_eq!(status, 401, "{} {path} with {what}: {body}", r.method);
            assert!(ct.starts_with("application/json"), "{ct}: {body}");
            let err: Value = serde_json::from_str(&body).expect("a JSON error body");
            assert_eq!(err["error"]["code"], "unauthorized", "{body}");
            assert!(err["error"]["message"].is_string(), "{body}");
        }
        // With the key the route is served (whatever it makes of a job
        // that does not exist): the listed path really is a route.
        let (status, _, body) = send(r.method, &path, Some(&format!("Bearer {KEY}")));
        assert!(
            status != 401 && status != 405 && !body.contains("no_route"),
            "{} {path} with the key: {status} {body}",
            r.method
        );
        checked += 1;
    }
    println!("{checked} keyed routes refuse a missing or wrong key");
    // The one POST /v1/jobs with the key stored one job; no refused one did.
    assert_eq!(job_count(&node), before + 1);
}

#[test]
fn an_oversized_body_is_refused_with_413_and_nothing_is_stored() {
    let limit = 2048;
    let node = keyed_node("body-limit", limit);
    let client = reqwest::blocking::Client::new();
    let mut big = small_job(0.5);
    big["padding"] = json!("x".repeat(limit));
    let bytes = serde_json::to_vec(&big).expect("json");
    assert!(bytes.len() > limit);
    // With a Content-Length, and chunked (the length unknown up front).
    let sized = reqwest::blocking::Body::from(bytes.clone());
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(bytes));
    for (what, body) in [("sized", sized), ("chunked", chunked)] {
        let r = client
            .post(node.url("/v1/jobs"))
            .bearer_auth(KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("post");
        assert_eq!(r.status().as_u16(), 413, "{what}");
        let err: Value = r.json().expect("a JSON error body");
        assert_eq!(err["error"]["code"], "body_too_large", "{what}: {err}");
    }
    // Without the key the size does not matter: 401 first.
    let r = client
        .post(node.url("/v1/jobs"))
        .json(&big)
        .send()
        .expect("post");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(job_count(&node), 0, "nothing stored");
    // Just under the limit is accepted.
    node.submit(small_job(0.5));
    assert_eq!(job_count(&node), 1);
}

/// `Content-Type` is matched as a media type (any case, parameters
/// allowed, nothing that merely starts like JSON); both job routes refuse
/// duplicate keys and numbers out of range on the innermost field.
#[test]
fn media_types_match_exactly_and_both_job_routes_name_the_innermost_bad_field() {
    let node = keyed_node("media-types", 64 * 1024);
    let client = reqwest::blocking::Client::new();
    let post = |path: &str, content_type: &str, body: Vec<u8>| {
        let r = client
            .post(node.url(path))
            .bearer_auth(KEY)
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("post");
        let status = r.status().as_u16();
        (status, r.json::<Value>().unwrap_or(Value::Null))
    };
    let job = serde_json::to_vec(&small_job(0.5)).expect("json");
    for (content_type, want) in [
        ("Application/JSON", 201),
        ("application/json; charset=UTF-8", 201),
        ("application/jsonx", 415),
        ("application/json-patch+json", 415),
    ] {
        let (status, body) = post("/v1/jobs", content_type, job.clone());
        assert_eq!(status, want, "{content_type}: {body}");
        if want == 415 {
            assert_eq!(body["error"]["code"], "unsupported_media_type", "{body}");
        }
    }
    for (path, body, field) in [
        (
            "/jobs",
            &br#"{"scenario":"720p-h264","scenario":"1080p-h264"}"#[..],
            "scenario",
        ),
        (
            "/jobs",
            br#"{"scenario":"720p-h264","parameters":{"duration":1e309}}"#,
            "parameters.duration",
        ),
        (
            "/v1/jobs",
            br#"{"scenario":"480p30-h264","input":{"type":"file","path":"a.mp4","path":"b.mp4"},"output":{"type":"null"}}"#,
            "input.path",
        ),
    ] {
        let (status, err) = post(path, "application/json", body.to_vec());
        assert_eq!(status, 400, "{path} {field}: {err}");
        assert_eq!(err["error"]["code"], "invalid_field", "{err}");
        assert_eq!(err["error"]["field"], field, "{err}");
    }
    assert_eq!(job_count(&node), 2, "only the two accepted jobs are stored");
}

#[test]
fn paths_escaping_the_media_root_are_refused_with_the_field_and_nothing_is_stored() {
    let node = keyed_node("paths", 64 * 1024);
    let media = node.media.clone();
    // Outside the root: a directory with a real file in it, and a sibling
    // whose name starts with the root's.
    let outside = node.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("outside dir");
    std::fs::write(outside.join("in.mp4"), b"not really a video").expect("outside file");
    let lookalike = std::path::PathBuf::from(format!("{}-evil", media.display()));
    std::fs::create_dir_all(&lookalike).expect("look-alike dir");
    std::fs::write(lookalike.join("in.mp4"), b"x").expect("look-alike file");
    // Inside the root: a real sub dir, a directory symlink and a file
    // symlink that both lead outside.
    std::fs::create_dir_all(media.join("sub")).expect("sub");
    std::os::unix::fs::symlink(&outside, media.join("out-dir")).expect("dir symlink");
    std::os::unix::fs::symlink(outside.join("in.mp4"), media.join("link.mp4"))
        .expect("file symlink");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let inputs = [
        "../outside/in.mp4".to_string(),
        "sub/../../outside/in.mp4".to_string(),
        s(&outside.join("in.mp4")),
        format!("{}/../outside/in.mp4", media.display()),
        s(&lookalike.join("in.mp4")),
        "out-dir/in.mp4".to_string(),
        "link.mp4".to_string(),
        "/etc/passwd".to_string(),
    ];
    let outputs = [
        "../out.mp4".to_string(),
        "sub/../../out.mp4".to_string(),
        s(&outside.join("out.mp4")),
        s(&lookalike.join("out.mp4")),
        "out-dir/out.mp4".to_string(),
        // An existing symlink as the output: writing would follow it.
        "link.mp4".to_string(),
    ];
    let mut cases: Vec<(Value, &str)> = Vec::new();
    for p in &inputs {
        cases.push((
            json!({"scenario":"480p30-h264","input":{"type":"file","path":p},"output":{"type":"null"}}),
            "input.path",
        ));
    }
    for p in &outputs {
        cases.push((
            json!({"scenario":"480p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"file","path":p}}),
            "output.path",
        ));
    }
    for (body, field) in &cases {
        let (status, err) = node.post_json("/v1/jobs", body);
        assert_eq!(status, 400, "{body} → {err}");
        assert_eq!(err["error"]["field"], *field, "{body} → {err}");
        assert!(
            err["error"]["code"].is_string() && err["error"]["message"].is_string(),
            "{err}"
        );
    }
    assert_eq!(job_count(&node), 0, "nothing stored");
    assert!(
        !outside.join("out.mp4").exists() && !lookalike.join("out.mp4").exists(),
        "nothing written outside the root"
    );
    // Control: the same shapes inside the root are accepted.
    std::fs::write(media.join("sub/in.mp4"), b"x").expect("inside file");
    for body in [
        json!({"scenario":"480p30-h264","input":{"type":"file","path":"sub/in.mp4"},"output":{"type":"null"}}),
        json!({"scenario":"480p30-h264","input":{"type":"testsrc","duration_s":1},"output":{"type":"file","path":"sub/out.mp4"}}),
    ] {
        let (status, job) = node.post_json("/v1/jobs", &body);
        assert_eq!(status, 201, "{body} → {job}");
    }
    println!(
        "{} escaping paths refused, {} accepted inside the root",
        cases.len(),
        job_count(&node)
    );
}

// ---------------------------------------------------------------------------
// Cluster

/// A node identity for `node_id` signed by the cluster CA in `pki_dir`,
/// valid over `window` (default: the CA's usual validity from now).
fn mint_identity(
    pki_dir: &Path,
    node_id: &str,
    window: Option<(SystemTime, SystemTime)>,
) -> NodeIdentity {
    let ca = CertificateAuthority::load(pki_dir).expect("the cluster CA");
    let (key_pem, csr) = pki::new_key_and_csr(node_id).expect("key and CSR");
    let cert_pem = match window {
        Some((from, to)) => ca.issue_node_cert_valid_between(node_id, &csr, from, to),
        None => ca.issue_node_cert(node_id, &csr),
    }
    .expect("node certificate");
    NodeIdentity {
        cert_pem,
        key_pem,
        ca_pem: ca.cert_pem().to_string(),
    }
}

/// Give the worker data dir `dir` this identity (its node id included).
fn install_identity(dir: &Path, id: &NodeIdentity) {
    id.save(dir).expect("save identity");
    std::fs::write(dir.join("node_id"), id.node_id().expect("node id")).expect("node_id");
}

#[test]
fn a_worker_with_an_expired_certificate_is_refused_and_both_sides_log_the_expiry() {
    let _g = serial();
    let mut c = Cluster::start_full(0, 1, libx264_only());
    let node_id = "expired-w0";
    let day = Duration::from_secs(24 * 3600);
    let now = SystemTime::now();
    let expired = mint_identity(&c.pki(), node_id, Some((now - 30 * day, now - day)));
    let data = c.dir.path().join("w0");
    install_identity(&data, &expired);

    c.add_worker(0, false);
    let wlines = wait_for(
        "the master to refuse the expired worker twice",
        Duration::from_secs(60),
        || {
            assert!(
                c.workers[0].running(),
                "the worker keeps retrying:\n{}",
                c.workers[0].log()
            );
            assert!(c.nodes().is_empty(), "listed: {:?}", c.nodes());
            let l = lines_with(&c.workers[0].log(), &["refused by the master", "xpired"]);
            (l.len() >= 2).then_some(l)
        },
    );
    let mlines = wait_for(
        "the master to log the expired certificate",
        Duration::from_secs(10),
        || {
            let l = lines_with(&c.master_log(), &["connection refused", "xpired"]);
            (!l.is_empty()).then_some(l)
        },
    );
    assert!(lines_with(&c.workers[0].log(), &["connected to the master"]).is_empty());
    assert!(lines_with(&c.master_log(), &["worker connected"]).is_empty());
    println!("worker: {}", wlines[0]);
    println!("master: {}", mlines[0]);
    c.workers[0].kill9();
    assert!(c.nodes().is_empty(), "never listed: {:?}", c.nodes());

    // Control: the same node id with a current certificate gets in, so what
    // kept it out was the expiry.
    c.workers.clear();
    install_identity(&data, &mint_identity(&c.pki(), node_id, None));
    c.add_worker(0, false);
    let nodes = c.wait_nodes(1);
    assert_eq!(nodes[0]["id"], node_id);
}

/// A node that speaks the protocol itself, from the test: a valid cluster
/// certificate, QUIC on loopback, frames by hand.
struct RogueNode {
    rt: tokio::runtime::Runtime,
    ep: quinn::Endpoint,
    link: Link,
}

impl RogueNode {
    fn connect(master: SocketAddr, id: &NodeIdentity) -> RogueNode {
        // Multi-threaded, so the connection keeps its keep-alives going
        // while the test thread is making HTTP calls.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let hello = ToMaster::Hello {
            node_id: id.node_id().expect("node id"),
            protocol_version: PROTOCOL_VERSION,
            // Nothing is ever assigned to it.
            slots: 0,
            capabilities: Capabilities::default(),
            running: Vec::new(),
            unacked: Vec::new(),
        };
        let tls_cfg = tls::client_config(id).expect("client TLS");
        let (ep, link) = rt.block_on(async {
            let ep = endpoint::client_endpoint("127.0.0.1:0".parse().expect("addr"), &[7; 32])
                .expect("client endpoint");
            let link = endpoint::connect(
                &ep,
                master,
                pki::MASTER_SERVER_NAME,
                tls_cfg,
                Timers::default(),
                &hello,
            )
            .await
            .expect("the master accepts a node with a valid certificate");
            (ep, link)
        });
        RogueNode { rt, ep, link }
    }

    fn send(&mut self, msg: &ToMaster) {
        self.try_send(msg).expect("send a frame");
    }

    /// Sends `msg`; an error where the master has already closed the link.
    fn try_send(&mut self, msg: &ToMaster) -> Result<(), frame::FrameError> {
        let bytes = wire::encode(msg).expect("encode");
        let send = &mut self.link.send;
        self.rt.block_on(frame::write_frame(send, &bytes))
    }

    /// Messages from the master until `done` holds for all received so far.
    fn recv_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[ToWorker]) -> bool,
    ) -> Vec<ToWorker> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while !done(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            let recv = &mut self.link.recv;
            let frame = self
                .rt
                .block_on(async { tokio::time::timeout(left, endpoint::recv_frame(recv)).await })
                .unwrap_or_else(|_| panic!("timed out after {timeout:?}; got {got:?}"))
                .expect("a frame")
                .unwrap_or_else(|| panic!("the master closed the stream; got {got:?}"));
            got.push(wire::decode::<ToWorker>(&frame).expect("decode"));
        }
        got
    }

    /// Wait for the master to close the connection.
    fn wait_closed(&self, timeout: Duration) -> quinn::ConnectionError {
        let conn = self.link.connection.clone();
        self.rt
            .block_on(async { tokio::time::timeout(timeout, conn.closed()).await })
            .expect("the master closes the connection")
    }
}

impl Drop for RogueNode {
    fn drop(&mut self) {
        self.ep.close(endpoint::close::NORMAL, b"done");
    }
}

/// The `data:` JSON of every event of `/v1/jobs/{id}/events` until it ends.
fn read_events(url: String) -> Vec<Value> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .expect("client");
    let resp = client.get(url).send().expect("events");
    assert_eq!(resp.status().as_u16(), 200);
    BufReader::new(resp)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            l.strip_prefix("data:")
                .and_then(|d| serde_json::from_str(d.trim()).ok())
        })
        .collect()
}

#[test]
fn messages_about_another_nodes_job_are_ignored_and_logged() {
    let _g = serial();
    let c = Cluster::start_full(1, 1, libx264_only());
    let victim = c.node_id_of(0);
    let id = c.submit(long_job(20.0));
    let running = c.wait_state(&id, &["running"], LONG);
    assert_eq!(running["node"], victim.as_str());
    let token = running["token"].as_u64().expect("token");
    // Everything the job goes through from now on, as the API tells it.
    let events = {
        let url = format!("{}/v1/jobs/{id}/events", c.base);
        std::thread::spawn(move || read_events(url))
    };

    let rogue_id = "rogue-node";
    let identity = mint_identity(&c.pki(), rogue_id, None);
    let master: SocketAddr = c.quic.trim().parse().expect("quic addr");
    let mut rogue = RogueNode::connect(master, &identity);
    wait_for(
        "the rogue node to be listed",
        Duration::from_secs(10),
        || c.connected(rogue_id).then_some(()),
    );

    const FORGED_FRAME: u64 = 987_654_321;
    let forged_progress = Progress {
        frame: FORGED_FRAME,
        fps: 1.0,
        speed: None,
        out_time_s: 99_999.0,
        percent: Some(99.0),
        bitrate_kbps: None,
        total_size_bytes: None,
    };
    let forged_outcome = Outcome::Failed {
        failure: Failure::new(FailureReason::FfmpegError, "forged by another node"),
    };
    let unknown = "no-such-job";
    let wrong = token + 1000;
    // The victim's current token (as if this node ran it), then a wrong one.
    for t in [token, wrong] {
        rogue.send(&ToMaster::Started {
            job_id: id.clone(),
            token: t,
            isolation: Isolation::None,
        });
        rogue.send(&ToMaster::Progress {
            job_id: id.clone(),
            token: t,
            progress: forged_progress.clone(),
        });
        rogue.send(&ToMaster::Finished {
            job_id: id.clone(),
            token: t,
            outcome: forged_outcome.clone(),
            energy: None,
        });
    }
    // A job that does not exist.
    rogue.send(&ToMaster::Started {
        job_id: unknown.into(),
        token: 1,
        isolation: Isolation::None,
    });
    rogue.send(&ToMaster::Finished {
        job_id: unknown.into(),
        token: 1,
        outcome: forged_outcome.clone(),
        energy: None,
    });

    // The master answers each: kill the attempt it does not recognise as
    // this node's, acknowledge each result (so it is not resent) without
    // applying it.
    let kill = |j: &str, t: u64| ToWorker::Kill {
        job_id: j.into(),
        token: t,
    };
    let ack = |j: &str, t: u64| {
        ToWorker::Ack(AttemptRef {
            job_id: j.into(),
            token: t,
        })
    };
    let expected = vec![
        kill(&id, token),
        kill(&id, token),
        ack(&id, token),
        kill(&id, wrong),
        kill(&id, wrong),
        ack(&id, wrong),
        kill(unknown, 1),
        ack(unknown, 1),
    ];
    let n = expected.len();
    let got = rogue.recv_until(Duration::from_secs(20), |g| g.len() >= n);
    assert_eq!(got, expected, "the master's answers, in order");

    let job = c.get(&format!("/v1/jobs/{id}"));
    assert_eq!(job["state"], "running", "nothing applied: {job}");
    assert_eq!(job["node"], victim.as_str(), "{job}");
    assert_eq!(job["token"], token, "{job}");
    assert_ne!(job["progress"]["frame"], FORGED_FRAME, "{job}");
    assert!(job["failure"].is_null(), "{job}");

    let mlog = c.master_log();
    let other_node = lines_with(
        &mlog,
        &[
            "message about an attempt assigned to another node ignored",
            &id,
            rogue_id,
        ],
    );
    assert_eq!(other_node.len(), 3, "Started, Progress, Finished:\n{mlog}");
    let stale = lines_with(&mlog, &["stale token", &id, rogue_id]);
    assert_eq!(stale.len(), 2, "Started and Progress:\n{mlog}");
    let not_applied = lines_with(&mlog, &["result not applied", &id, rogue_id]);
    assert_eq!(not_applied.len(), 1, "{mlog}");
    assert!(
        not_applied[0].contains("stale fencing token"),
        "{}",
        not_applied[0]
    );
    assert_eq!(
        lines_with(
            &mlog,
            &["result for an unknown job dropped", unknown, rogue_id]
        )
        .len(),
        1,
        "{mlog}"
    );
    assert_eq!(
        lines_with(
            &mlog,
            &["worker reported an unknown job", unknown, rogue_id]
        )
        .len(),
        1,
        "{mlog}"
    );
    for l in other_node.iter().chain(&stale).chain(&not_applied) {
        println!("master: {l}");
    }

    // A second hello on the same link, now claiming to be the victim: the
    // master closes the link rather than let it speak for another node.
    let before = lines_with(&c.master_log(), &["worker connected"]).len();
    rogue.send(&ToMaster::Hello {
        node_id: victim.clone(),
        protocol_version: PROTOCOL_VERSION,
        slots: 1,
        capabilities: Capabilities::default(),
        running: vec![AttemptRef {
            job_id: id.clone(),
            token,
        }],
        unacked: Vec::new(),
    });
    // The master may have closed the link on the hello before this result
    // is written: then it never arrives, which is as good as ignored.
    let sent = rogue.try_send(&ToMaster::Finished {
        job_id: id.clone(),
        token,
        outcome: forged_outcome,
        energy: None,
    });
    println!(
        "forged result after the second hello sent: {}",
        sent.is_ok()
    );
    let closed = rogue.wait_closed(Duration::from_secs(20));
    println!("rogue link closed: {closed}");
    let line = wait_for(
        "the master to log the second hello",
        Duration::from_secs(10),
        || {
            lines_with(&c.master_log(), &["second hello", rogue_id, &victim])
                .into_iter()
                .next()
        },
    );
    println!("master: {line}");
    wait_for("the rogue node to leave", Duration::from_secs(10), || {
        (!c.connected(rogue_id)).then_some(())
    });
    assert!(c.connected(&victim), "the real worker keeps its link");
    assert_eq!(
        lines_with(&c.master_log(), &["worker connected"]).len(),
        before
    );
    drop(rogue);

    let job = c.wait_state(&id, &["succeeded", "failed", "queued"], LONG);
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["attempt"], 1, "{job}");
    assert_eq!(job["attempts"].as_array().map(Vec::len), Some(1), "{job}");
    assert_eq!(job["node"], victim.as_str(), "{job}");
    assert!(job["result"]["frames"].as_u64().unwrap_or(0) > 0, "{job}");
    assert_ne!(job["result"]["frames"], FORGED_FRAME, "{job}");
    let events = events.join().expect("events thread");
    assert!(!events.is_empty());
    for e in &events {
        assert_ne!(
            e["progress"]["frame"], FORGED_FRAME,
            "forged progress seen: {e}"
        );
        assert_ne!(e["state"], "failed", "{e}");
        assert_eq!(e["attempt"], 1, "{e}");
    }
    assert_eq!(
        events.last().map(|e| e["state"].clone()),
        Some(json!("succeeded"))
    );
}
