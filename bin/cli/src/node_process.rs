//! `ffrtmp demo`'s node: `ffrtmp-node --role standalone` as a child
//! process, found next to the running `ffrtmp` executable. The CLI links
//! none of the server (no actors, store or QUIC): it starts the daemon and
//! talks to it over its HTTP API like any client.
//!
//! The child is stopped by its pid: `SIGTERM` (it kills its running jobs and
//! removes their cgroups, as on any stop), then waited for; `SIGKILL` if it
//! has not exited after [`STOP_GRACE`]. That happens when the demo ends, when
//! it fails part way (the handle's `Drop`), and on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::demo::{DemoNode, DemoSetup, DEMO_CGROUP_PARENT};

/// The daemon's executable name.
pub const NODE_BIN: &str = "ffrtmp-node";

/// How long the child has to exit after `SIGTERM` before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// How long the child has to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The command that builds both binaries (for the error when the node's is
/// missing).
const BUILD_COMMAND: &str = "cargo build --release -p ffrtmp";

/// `ffrtmp-node` next to `exe` (the running `ffrtmp`), or an error naming
/// where it was looked for and how to build it.
pub fn find_node_binary(exe: &Path) -> anyhow::Result<PathBuf> {
    let dir = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    let node = dir.join(NODE_BIN);
    if node.is_file() {
        return Ok(node);
    }
    anyhow::bail!(
        "the demo runs {NODE_BIN} as its node, and there is no {} next to {}; \
         build both binaries with:  {BUILD_COMMAND}  (then run target/release/ffrtmp demo)",
        node.display(),
        exe.display()
    )
}

/// A running `ffrtmp-node --role standalone`.
#[derive(Debug)]
pub struct NodeProcess {
    child: Option<Child>,
    http: String,
    media: PathBuf,
}

impl NodeProcess {
    /// Starts `node` for the demo's `setup`: its data in the setup's data
    /// dir, the HTTP API on a free loopback port, no API key, the daemon's
    /// defaults otherwise (`FFRTMP_*` settings of the caller's environment
    /// are not passed on, as the demo's node never read them). Returns once
    /// the API listens; an error, with the child stopped, if it exits or does
    /// not listen within a minute.
    pub async fn start(node: &Path, setup: &DemoSetup) -> anyhow::Result<NodeProcess> {
        let addr_file = setup.data_dir.join("http.addr");
        let mut cmd = Command::new(node);
        cmd.arg("--role")
            .arg("standalone")
            .arg("--data-dir")
            .arg(&setup.data_dir)
            .arg("--http")
            .arg("127.0.0.1:0")
            .arg("--http-addr-file")
            .arg(&addr_file)
            .arg("--cgroup-parent")
            .arg(DEMO_CGROUP_PARENT);
        if let Some(vmaf) = &setup.vmaf_bin {
            cmd.arg("--vmaf-bin").arg(vmaf);
        }
        for (name, _) in std::env::vars_os() {
            let ours = name.to_str().is_some_and(|n| n.starts_with("FFRTMP_"));
            if ours && name != "FFRTMP_LOG" {
                cmd.env_remove(&name);
            }
        }
        // The demo draws progress bars: only warnings interrupt them.
        if std::env::var_os("FFRTMP_LOG").is_none() {
            cmd.env("FFRTMP_LOG", "warn");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", node.display()))?;
        let mut process = NodeProcess {
            child: Some(child),
            http: String::new(),
            media: setup.media.clone(),
        };
        let until = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if let Some(addr) = text.lines().next().filter(|a| !a.trim().is_empty()) {
                    process.http = format!("http://{}", addr.trim());
                    return Ok(process);
                }
            }
            if let Some(child) = process.child.as_mut() {
                if let Some(status) = child.try_wait().context("waiting for the node")? {
                    process.child = None;
                    anyhow::bail!("{} exited ({status}) before it listened", node.display());
                }
            }
            if Instant::now() > until {
                process.stop();
                anyhow::bail!(
                    "{} did not listen within {} s",
                    node.display(),
                    START_TIMEOUT.as_secs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The child's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `SIGTERM`, wait; `SIGKILL` and wait after [`STOP_GRACE`].
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let Ok(raw) = i32::try_from(child.id()) else {
            let _ = child.kill();
            let _ = child.wait();
            return;
        };
        let pid = Pid::from_raw(raw);
        if kill(pid, Signal::SIGTERM).is_err() {
            let _ = child.wait();
            return;
        }
        let until = Instant::now() + STOP_GRACE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}

impl DemoNode for NodeProcess {
    fn base_url(&self) -> String {
        self.http.clone()
    }

    fn media_root(&self) -> PathBuf {
        self.media.clone()
    }

    async fn shutdown(mut self) {
        tokio::task::block_in_place(|| self.stop());
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No `ffrtmp-node` beside the executable: the error says where it was
    /// looked for and the command that builds it.
    #[test]
    fn a_missing_node_binary_is_named_with_the_build_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = dir.path().join("ffrtmp");
        let e = find_node_binary(&exe).expect_err("no node binary there");
        let text = format!("{e:#}");
        assert!(text.contains(BUILD_COMMAND), "{text}");
        assert!(
            text.contains(&dir.path().join(NODE_BIN).display().to_string()),
            "{text}"
        );
        std::fs::write(dir.path().join(NODE_BIN), b"").expect("write");
        assert_eq!(
            find_node_binary(&exe).expect("found"),
            dir.path().join(NODE_BIN)
        );
    }

    /// A node that exits before it listens is an error naming it, and no
    /// child is left to stop.
    #[tokio::test]
    async fn a_node_that_exits_before_listening_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let setup = DemoSetup {
            data_dir: dir.path().to_path_buf(),
            media: dir.path().join("media"),
            vmaf_bin: None,
        };
        // `false` ignores its arguments and exits 1 at once.
        let node = Path::new("/bin/false");
        let e = NodeProcess::start(node, &setup)
            .await
            .expect_err("false never listens");
        let text = format!("{e:#}");
        assert!(
            text.contains("exited") && text.contains("/bin/false"),
            "{text}"
        );
    }
}
