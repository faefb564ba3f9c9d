//! Shared harness for the multi-process tests: starts the real `ffrtmp-node`
//! binary, talks to its HTTP API, and finds what it left in the OS (job
//! cgroups, FFmpeg processes). Everything a test starts is cleaned up by pid
//! or by the cgroup parent the test named itself.

#![allow(dead_code)]

pub mod cli;
pub mod cluster;
pub mod relay;
pub mod vmaf;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_ffrtmp-node");

/// Heavy tests share two cores; run them one at a time so CPU-share
/// measurements and deadlines are not distorted by each other.
static HEAVY: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The isolation this host gives jobs: `cgroup-v2` on a unified hierarchy,
/// `cgroup-v1` otherwise, `none` where we may not create cgroups (not root).
pub fn host_isolation() -> &'static str {
    if !nix::unistd::geteuid().is_root() {
        return "none";
    }
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "cgroup-v2"
    } else {
        "cgroup-v1"
    }
}

/// A job cgroup's CPU quota as (quota_us, period_us), from v1 or v2 files.
pub fn cpu_quota(dirs: &[PathBuf]) -> Option<(u64, u64)> {
    for d in dirs {
        if let (Ok(q), Ok(p)) = (
            std::fs::read_to_string(d.join("cpu.cfs_quota_us")),
            std::fs::read_to_string(d.join("cpu.cfs_period_us")),
        ) {
            return Some((q.trim().parse().ok()?, p.trim().parse().ok()?));
        }
        if let Ok(max) = std::fs::read_to_string(d.join("cpu.max")) {
            let mut it = max.split_whitespace();
            return Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?));
        }
    }
    None
}

/// A job cgroup's memory limit in bytes, from v1 or v2 files.
pub fn memory_limit(dirs: &[PathBuf]) -> Option<u64> {
    dirs.iter().find_map(|d| {
        std::fs::read_to_string(d.join("memory.limit_in_bytes"))
            .or_else(|_| std::fs::read_to_string(d.join("memory.max")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    })
}

pub fn require_ffmpeg() {
    // As the demo does: installed with apt-get when missing and root, else
    // a panic with the command to run.
    static CHECKED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let checked = CHECKED
        .get_or_init(|| ffrtmp_shared::ffmpeg_check::ensure_installed().map_err(|e| e.to_string()));
    if let Err(e) = checked {
        panic!("these tests run real FFmpeg: {e}");
    }
}

/// Make a clip at `path` with FFmpeg from the lavfi `source`
/// (`testsrc2=size=64x64:rate=10:duration=1`), encoded with `encode`
/// (codec, preset, container...). Panics if FFmpeg fails.
pub fn lavfi_clip(path: &Path, source: &str, encode: &[&str]) {
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", source])
        .args(encode)
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("run ffmpeg");
    assert!(status.success(), "ffmpeg could not make {}", path.display());
}

/// Poll `f` until it returns `Some`, or panic after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct NodeOpts {
    pub slots: u32,
    pub api_key: Option<String>,
    pub extra: Vec<String>,
    /// The node's soft and hard `RLIMIT_NOFILE` (`None`: this process's).
    pub nofile: Option<u64>,
}

impl Default for NodeOpts {
    fn default() -> Self {
        NodeOpts {
            slots: 2,
            api_key: None,
            extra: Vec::new(),
            nofile: None,
        }
    }
}

/// A real `ffrtmp-node --role standalone` process.
pub struct Node {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub media: PathBuf,
    pub cgroup_parent: String,
    pub opts: NodeOpts,
    pub child: Option<Child>,
    pub base: String,
    http: reqwest::blocking::Client,
}

impl Node {
    pub fn start(name: &str, opts: NodeOpts) -> Node {
        Node::start_with(name, opts, |_| {})
    }

    /// [`Node::start`], running `prepare` on the data dir path (not created
    /// yet) before the node starts: e.g. to mount a filesystem there.
    pub fn start_with(name: &str, opts: NodeOpts, prepare: impl FnOnce(&Path)) -> Node {
        require_ffmpeg();
        let dir = tempfile::Builder::new()
            .prefix(&format!("ffrtmp-{name}-"))
            .tempdir()
            .expect("tempdir");
        let media = dir.path().join("media");
        std::fs::create_dir_all(&media).expect("media dir");
        let mut node = Node {
            name: name.to_string(),
            cgroup_parent: format!("ffrtmp-test-{}-{name}", std::process::id()),
            dir,
            media,
            opts,
            child: None,
            base: String::new(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http client"),
        };
        prepare(&node.data_dir());
        node.spawn();
        node
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Start a node process on this node's data dir; returns it and the
    /// file it will write its HTTP address to.
    fn launch(&self) -> (Child, PathBuf) {
        let addr_file = self.dir.path().join("http.addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("node.log"))
            .expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(["--role", "standalone", "--http", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--media-root")
            .arg(&self.media)
            .arg("--http-addr-file")
            .arg(&addr_file)
            .args(["--cgroup-parent", &self.cgroup_parent])
            .args(["--slots", &self.opts.slots.to_string()])
            .args(["--kill-grace-s", "1"])
            .args(&self.opts.extra)
            .env("FFRTMP_FAULT_INJECTION", "1")
            .env("FFRTMP_LOG", "info,ffrtmp=debug")
            .env_remove("FFRTMP_API_KEY")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(k) = &self.opts.api_key {
            cmd.args(["--api-key", k]);
        }
        if let Some(n) = self.opts.nofile {
            use nix::sys::resource::{setrlimit, Resource};
            use std::os::unix::process::CommandExt;
            // SAFETY: runs in the forked child before exec; setrlimit is
            // async-signal-safe and the closure allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    setrlimit(Resource::RLIMIT_NOFILE, n, n).map_err(std::io::Error::from)
                });
            }
        }
        (cmd.spawn().expect("spawn ffrtmp-node"), addr_file)
    }

    /// Start another node process on this node's data dir (beside this one
    /// if it runs) and wait for it to exit by itself, as it must when it
    /// refuses to start; returns its exit status and what was logged
    /// meanwhile.
    pub fn start_refused(&self, timeout: Duration) -> (std::process::ExitStatus, String) {
        let logged = self.log().len();
        let (mut child, _) = self.launch();
        let status = wait_for("the node to exit by itself", timeout, || {
            child.try_wait().expect("try_wait")
        });
        (status, self.log()[logged..].to_string())
    }

    fn spawn(&mut self) {
        let (child, addr_file) = self.launch();
        let pid = child.id();
        self.child = Some(child);
        let addr = wait_for("the node's HTTP address", Duration::from_secs(60), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    panic!(
                        "ffrtmp-node (pid {pid}) exited early: {status}\n{}",
                        self.log()
                    );
                }
            }
            std::fs::read_to_string(&addr_file)
                .ok()
                .filter(|s| !s.is_empty())
        });
        self.base = format!("http://{}", addr.trim());
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    /// SIGKILL the node process (the whole daemon, by pid) and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start the node again on the same data dir (same node id, same cgroup parent).
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn auth(&self, rb: reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder {
        match &self.opts.api_key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .auth(self.http.post(self.url(path)))
            .json(body)
            .send()
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str) -> (u16, Value) {
        let resp = self
            .auth(self.http.post(self.url(path)))
            .send()
            .expect("POST");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .auth(self.http.get(self.url(path)))
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn get_text(&self, path: &str) -> (u16, String) {
        let resp = self
            .auth(self.http.get(self.url(path)))
            .send()
            .expect("GET");
        let status = resp.status().as_u16();
        (status, resp.text().unwrap_or_default())
    }

    /// Submit a job; panics unless it is accepted.
    pub fn submit(&self, body: Value) -> String {
        let (status, job) = self.post_json("/v1/jobs", &body);
        assert_eq!(status, 201, "submission refused: {job}");
        job["id"].as_str().expect("job id").to_string()
    }

    pub fn job(&self, id: &str) -> Value {
        let (status, job) = self.get(&format!("/v1/jobs/{id}"));
        assert_eq!(status, 200, "GET job {id}: {job}");
        job
    }

    pub fn wait_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        wait_for(&format!("job {id} to reach {states:?}"), timeout, || {
            let job = self.job(id);
            let st = job["state"].as_str().unwrap_or("");
            states.contains(&st).then_some(job)
        })
    }

    /// Directories of this node's job cgroups (any hierarchy) whose name mentions `job_id`.
    pub fn job_cgroups(&self, job_id: &str) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_parent)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .map(|n| n.contains(job_id))
                    .unwrap_or(false)
            })
            .collect()
    }

    /// Pids inside this node's cgroups for `job_id`.
    pub fn job_pids(&self, job_id: &str) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .job_cgroups(job_id)
            .iter()
            .flat_map(|d| read_pids(d))
            .collect();
        pids.sort();
        pids.dedup();
        pids
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        cleanup_cgroups(&self.cgroup_parent);
        if std::thread::panicking() {
            eprintln!("--- node log ({}) ---\n{}", self.name, self.log());
        }
    }
}

/// Every cgroup directory under `parent`, in every mounted hierarchy.
pub fn cgroup_dirs(parent: &str) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            let p = e.path().join(parent);
            if p.is_dir() {
                roots.push(p);
            }
        }
    }
    let direct = Path::new("/sys/fs/cgroup").join(parent);
    if direct.is_dir() && !roots.contains(&direct) {
        roots.push(direct);
    }
    let mut out = Vec::new();
    let mut stack = roots;
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
        out.push(d);
    }
    out
}

pub fn read_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Alive and not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Kill what is left in the test's cgroups (by their pids) and remove them, deepest first.
pub fn cleanup_cgroups(parent: &str) {
    let mut dirs = cgroup_dirs(parent);
    for d in &dirs {
        for pid in read_pids(d) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    let deadline = Instant::now() + Duration::from_secs(5);
    for d in dirs {
        while std::fs::remove_dir(&d).is_err() && d.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn testsrc(scenario: &str, duration_s: f64) -> Value {
    serde_json::json!({
        "scenario": scenario,
        "input": {"type": "testsrc", "duration_s": duration_s},
        "output": {"type": "null"}
    })
}

/// A small, fast encode (tests need real FFmpeg, not big frames).
pub fn small_job(duration_s: f64) -> Value {
    serde_json::json!({
        "scenario": "480p30-h264",
        "width": 320, "height": 180,
        "input": {"type": "testsrc", "duration_s": duration_s},
        "output": {"type": "null"}
    })
}

/// A job that keeps a core busy for a long time (paced by `-re`-free encode of many frames).
pub fn long_job(duration_s: f64) -> Value {
    serde_json::json!({
        "scenario": "720p30-h264",
        "preset": "medium",
        "input": {"type": "testsrc", "duration_s": duration_s},
        "output": {"type": "null"}
    })
}
