//! The master's job store refuses damage loudly (issue 15, finding 3): the
//! real `ffrtmp-node --role standalone` refuses to start on a store with a
//! flipped bit, saying what is damaged, how many jobs it still sees and the
//! recovery command; `ffrtmp-node store check` reports it; `ffrtmp-node
//! store salvage` then lets the node start with every readable job. And a
//! second node on a data dir in use is told so, with the live node's pid,
//! not that its store or outbox is damaged (finding 4).
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{serial, small_job, wait_for, Node, NodeOpts, BIN};

const LONG: Duration = Duration::from_secs(120);

fn store_cmd(args: &[&str], data_dir: &Path) -> (i32, String) {
    let out = Command::new(BIN)
        .arg("store")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("run ffrtmp-node store");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn flip_bit(db: &Path, pos: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(db)
        .expect("open db");
    let mut b = [0u8];
    f.seek(SeekFrom::Start(pos)).expect("seek");
    f.read_exact(&mut b).expect("read");
    b[0] ^= 0x10;
    f.seek(SeekFrom::Start(pos)).expect("seek");
    f.write_all(&b).expect("write");
}

/// The ids of every job the node lists.
fn listed(node: &Node) -> Vec<String> {
    let (status, page) = node.get("/v1/jobs?limit=1000");
    assert_eq!(status, 200, "{page}");
    page["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["id"].as_str().expect("id").to_string())
        .collect()
}

#[test]
fn a_damaged_store_is_refused_and_salvage_lets_the_node_start() {
    let _g = serial();
    let mut node = Node::start("store-damage", NodeOpts::default());
    let ids: Vec<String> = (0..60).map(|_| node.submit(small_job(0.2))).collect();
    wait_for("every job acknowledged and listed", LONG, || {
        (listed(&node).len() == ids.len()).then_some(())
    });
    let status = node.terminate().expect("node was running");
    assert!(status.success(), "clean stop: {status}");
    let data = node.data_dir();
    let store = data.join("master.sled");
    let (code, out) = store_cmd(&["check"], &data);
    assert_eq!(code, 0, "the undamaged store checks sound: {out}");
    assert!(out.contains("readable jobs: 60"), "{out}");

    // One flipped bit in the middle of the log: inside the first record
    // written for the middle job (a flip in space sled no longer reads
    // would be harmless; the library test covers seeded positions).
    let db = std::fs::read(store.join("db")).expect("db");
    let needle = ids[ids.len() / 2].as_bytes();
    let pos = db
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the middle job's id is in the log") as u64;
    flip_bit(&store.join("db"), pos + 2);
    let (code, out) = store_cmd(&["check"], &data);
    assert_eq!(code, 1, "check calls it damage: {out}");
    assert!(out.contains("DAMAGED"), "{out}");

    let (status, log) = node.start_refused(LONG);
    assert!(!status.success(), "refused with a failure status: {status}");
    assert!(
        log.contains("refusing the job store"),
        "the reason, flip at {pos}: {log}"
    );
    assert!(log.contains("still readable"), "what it still sees: {log}");
    assert!(
        log.contains("ffrtmp-node store salvage --data-dir"),
        "the recovery command: {log}"
    );

    let (code, out) = store_cmd(&["salvage"], &data);
    assert_eq!(code, 0, "{out}");
    let recovered: usize = out
        .split("recovered ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in: {out}"));
    assert!(
        recovered < ids.len() && out.contains("lost"),
        "salvage says what it lost: {out}"
    );
    assert!(out.contains("kept at"), "{out}");
    let (code, out) = store_cmd(&["check"], &data);
    assert_eq!(code, 0, "the salvaged store checks sound: {out}");

    node.restart();
    let after = listed(&node);
    assert_eq!(after.len(), recovered, "every salvaged job is listed");
    assert!(after.iter().all(|id| ids.contains(id)), "{after:?}");
    // It takes new work.
    let id = node.submit(small_job(0.2));
    node.wait_state(&id, &["succeeded"], LONG);
}

#[test]
fn a_second_node_on_a_live_data_dir_names_the_live_one() {
    let _g = serial();
    let node = Node::start("store-live", NodeOpts::default());
    let pid = node.pid().expect("running");
    let (status, log) = node.start_refused(LONG);
    assert!(!status.success(), "{status}");
    assert!(
        log.contains(&format!("pid {pid}")) && log.contains("already running"),
        "names the live node: {log}"
    );
    assert!(
        !log.contains("damaged") && !log.contains(".rejected") && !log.contains("salvage"),
        "no advice meant for damage: {log}"
    );
    // The live node is untouched.
    let id = node.submit(small_job(0.2));
    node.wait_state(&id, &["succeeded"], LONG);
}
