//! A full data disk degrades the master, it does not kill it (issue 15,
//! finding 4): on a small tmpfs data dir filled to below the store's
//! reserve (8 MiB left of 96), submissions get
//! `503 storage_full` with nothing stored, `/readyz` says not ready and why,
//! a running job finishes and its result waits on the worker; once the
//! filler is deleted, submissions get `201` again and the result is stored —
//! the same process, no restart.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{long_job, serial, small_job, wait_for, Node, NodeOpts};

const LONG: Duration = Duration::from_secs(180);

/// A tmpfs this test mounted; unmounted (by its path) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "ffrtmp-test-full",
            ])
            .arg(at)
            .status()
            .expect("mount");
        assert!(status.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Free bytes left on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    st.blocks_available() as u64 * st.fragment_size() as u64
}

/// Write zeros to `path` until only `leave` bytes are free on its
/// filesystem: below the store's 32 MiB reserve, so every job write is
/// refused, with room for what sled already has in flight. (Filled to the
/// last byte, a flush of sled's that was under way hits `ENOSPC` and stops
/// the master: the limit in docs/OPERATIONS.md, "A full disk".)
fn fill(path: &Path, leave: u64) {
    let dir = path.parent().expect("a directory");
    let mut f = std::fs::File::create(path).expect("filler");
    let chunk = vec![0u8; 1 << 20];
    loop {
        let free = free_bytes(dir);
        if free <= leave {
            break;
        }
        let n = usize::try_from((free - leave).min(chunk.len() as u64)).expect("small");
        match f.write_all(&chunk[..n]) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling: {e}"),
        }
    }
    let _ = f.sync_all();
}

#[test]
fn a_full_data_disk_refuses_writes_and_recovers_without_restart() {
    let _g = serial();
    let mut mount = None;
    let node = Node::start_with("store-full", NodeOpts::default(), |data| {
        mount = Some(Tmpfs::mount(data, "96m"));
    });
    let data = mount.as_ref().expect("mounted").0.clone();
    let pid = node.pid().expect("running");

    let running = node.submit(long_job(6.0));
    node.wait_state(&running, &["running"], LONG);
    let filler = data.join("filler");
    fill(&filler, 8 << 20);
    assert!(free_bytes(&data) < 32 << 20, "below the reserve");

    let (status, body) = node.post_json("/v1/jobs", &small_job(0.2));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    let (_, page) = node.get("/v1/jobs?limit=100");
    assert_eq!(
        page["jobs"].as_array().map(Vec::len),
        Some(1),
        "nothing half-stored: {page}"
    );
    let (status, ready) = node.get("/readyz");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "not_ready");
    assert!(
        ready["reason"]
            .as_str()
            .is_some_and(|r| r.contains("storage_full")),
        "{ready}"
    );

    // The running job is not stopped: its FFmpeg runs to its end. Its
    // result cannot be stored yet, so the master still shows it running.
    wait_for("the running job's FFmpeg to finish", LONG, || {
        node.job_pids(&running).is_empty().then_some(())
    });
    assert_eq!(node.job(&running)["state"], "running");

    std::fs::remove_file(&filler).expect("free the space");
    let again = wait_for("a submission to be accepted again", LONG, || {
        let (status, body) = node.post_json("/v1/jobs", &small_job(0.2));
        (status == 201).then(|| body["id"].as_str().expect("id").to_string())
    });
    let done = node.wait_state(&running, &["succeeded"], LONG);
    assert_eq!(done["attempt"], 1, "the result was kept, not rerun: {done}");
    node.wait_state(&again, &["succeeded"], LONG);
    assert_eq!(node.pid(), Some(pid), "the same process throughout");
    let (status, _) = node.get("/readyz");
    assert_eq!(status, 200);
}
