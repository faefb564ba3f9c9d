//! The cluster harness: a real `ffrtmp-node --role master` and its
//! `--role worker` processes on loopback (tests/cluster.rs, tests/security.rs),
//! and helpers to read their logs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// One `ffrtmp-node` process of the cluster, cleaned up by pid and by the
/// cgroup parent it was given.
pub struct Proc {
    pub name: String,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub cgroup_parent: String,
    /// Extra environment for the process (fault injection).
    pub env: Vec<(String, String)>,
}

impl Proc {
    pub fn spawn(name: &str, dir: &Path, args: Vec<String>) -> Proc {
        Proc::spawn_with_env(name, dir, args, &[])
    }

    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        // A 1 s kill grace unless the caller chose one (benches/failure_detection.rs).
        let grace: &[&str] = if self.args.iter().any(|a| a == "--kill-grace-s") {
            &[]
        } else {
            &["--kill-grace-s", "1"]
        };
        let child = Command::new(BIN)
            .args(&self.args)
            .args(["--cgroup-parent", &self.cgroup_parent])
            .args(grace)
            .env("FFRTMP_LOG", "info")
            .env_remove("FFRTMP_API_KEY")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ffrtmp-node");
        self.child = Some(child);
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// Wait for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let c = self.child.as_mut().expect("running");
        let status = wait_for(&format!("{} to exit", self.name), timeout, || {
            c.try_wait().ok().flatten()
        });
        self.child = None;
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
        cleanup_cgroups(&self.cgroup_parent);
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log());
        }
    }
}

pub fn read_addr(path: &Path, who: &mut Proc) -> String {
    wait_for(
        &format!("{} address", who.name),
        Duration::from_secs(60),
        || {
            if let Some(c) = who.child.as_mut() {
                if let Ok(Some(s)) = c.try_wait() {
                    panic!("{} exited early: {s}\n{}", who.name, who.log());
                }
            }
            std::fs::read_to_string(path).ok().filter(|s| !s.is_empty())
        },
    )
}

/// Fields drop in declaration order: the processes (killed by their `Drop`)
/// before `dir`, so nothing still writes into the directory being removed.
pub struct Cluster {
    /// Held so the master process lives (and is killed) with the cluster.
    pub master: Proc,
    pub workers: Vec<Proc>,
    pub base: String,
    pub quic: String,
    pub token: String,
    pub slots: u32,
    pub worker_extra: Vec<String>,
    pub http: reqwest::blocking::Client,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(workers: usize) -> Cluster {
        Cluster::start_with(workers, 1)
    }

    pub fn start_with(workers: usize, slots: u32) -> Cluster {
        Cluster::start_full(workers, slots, Vec::new())
    }

    pub fn start_full(workers: usize, slots: u32, worker_extra: Vec<String>) -> Cluster {
        Cluster::start_opts(workers, slots, worker_extra, Vec::new())
    }

    pub fn start_opts(
        workers: usize,
        slots: u32,
        worker_extra: Vec<String>,
        master_extra: Vec<String>,
    ) -> Cluster {
        require_ffmpeg();
        let dir = tempfile::Builder::new()
            .prefix("ffrtmp-cluster-")
            .tempdir()
            .expect("tempdir");
        let pki = dir.path().join("pki");
        let ok = Command::new(BIN)
            .args(["pki", "init", "--dir"])
            .arg(&pki)
            .output()
            .expect("pki init");
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let out = Command::new(BIN)
            .args(["pki", "join-token", "--dir"])
            .arg(&pki)
            .output()
            .expect("token");
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let media = dir.path().join("media");
        std::fs::create_dir_all(&media).expect("media");
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let mut master = Proc::spawn(
            "master",
            dir.path(),
            vec![
                "--role".into(),
                "master".into(),
                "--pki".into(),
                s(&pki),
                "--data-dir".into(),
                s(&dir.path().join("m")),
                "--media-root".into(),
                s(&media),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--listen-addr-file".into(),
                s(&dir.path().join("quic.addr")),
                "--http".into(),
                "127.0.0.1:0".into(),
                "--http-addr-file".into(),
                s(&dir.path().join("http.addr")),
            ]
            .into_iter()
            .chain(master_extra)
            .collect(),
        );
        let base = format!(
            "http://{}",
            read_addr(&dir.path().join("http.addr"), &mut master)
        );
        let quic = read_addr(&dir.path().join("quic.addr"), &mut master);
        let mut c = Cluster {
            dir,
            master,
            workers: Vec::new(),
            base,
            quic,
            token,
            slots,
            worker_extra,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        };
        for i in 0..workers {
            c.add_worker(i, true);
        }
        c.wait_nodes(workers);
        c
    }

    /// Start the (killed) master again on the same data dir, QUIC port and
    /// HTTP address. Returns when its QUIC listener is up, with that instant.
    pub fn restart_master(&mut self) -> Instant {
        let http = self.base.trim_start_matches("http://").to_string();
        for f in ["quic.addr", "http.addr"] {
            let _ = std::fs::remove_file(self.dir.path().join(f));
        }
        let args = &mut self.master.args;
        for (flag, value) in [("--listen", self.quic.clone()), ("--http", http)] {
            let i = args.iter().position(|a| a == flag).expect(flag);
            args[i + 1] = value;
        }
        self.master.start();
        let quic_file = self.dir.path().join("quic.addr");
        let quic = read_addr(&quic_file, &mut self.master);
        let up = Instant::now();
        assert_eq!(quic, self.quic, "same QUIC address");
        read_addr(&self.dir.path().join("http.addr"), &mut self.master);
        up
    }

    /// The worker process whose data dir holds `node_id`.
    pub fn worker_of(&self, node_id: &str) -> usize {
        (0..self.workers.len())
            .find(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("w{i}/node_id")))
                    .map(|s| s.trim() == node_id)
                    .unwrap_or(false)
            })
            .expect("the node's worker")
    }

    /// Live pids in the cgroups of `job_id` on worker `i`.
    pub fn job_pids(&self, i: usize, job_id: &str) -> Vec<i32> {
        cgroup_dirs(&self.workers[i].cgroup_parent)
            .iter()
            .filter(|d| {
                d.file_name()
                    .map(|n| n.to_string_lossy().contains(job_id))
                    .unwrap_or(false)
            })
            .flat_map(|d| read_pids(d))
            .filter(|p| pid_alive(*p))
            .collect()
    }

    /// The node id of worker `i`.
    pub fn node_id_of(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("w{i}/node_id")))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    pub fn connected(&self, node_id: &str) -> bool {
        self.nodes()
            .iter()
            .any(|n| n["id"] == node_id && n["connected"] == true)
    }

    pub fn worker_args(&self, i: usize, with_token: bool) -> Vec<String> {
        let mut a = self.base_worker_args(i);
        a.extend(self.worker_extra.iter().cloned());
        if with_token {
            a.extend(["--join-token".into(), self.token.clone()]);
        }
        a
    }

    pub fn base_worker_args(&self, i: usize) -> Vec<String> {
        let a = vec![
            "--role".into(),
            "worker".into(),
            "--master".into(),
            self.quic.clone(),
            "--data-dir".into(),
            self.dir
                .path()
                .join(format!("w{i}"))
                .to_string_lossy()
                .into_owned(),
            "--media-root".into(),
            self.dir.path().join("media").to_string_lossy().into_owned(),
            "--slots".into(),
            self.slots.to_string(),
        ];
        a
    }

    pub fn add_worker(&mut self, i: usize, with_token: bool) {
        self.add_worker_with(i, with_token, &[]);
    }

    /// Add worker `i` that reaches the master at `master` (a relay) instead
    /// of its QUIC address, with extra environment `env`.
    pub fn add_worker_via(&mut self, i: usize, master: &str, env: &[(&str, &str)]) {
        let mut args = self.worker_args(i, true);
        if let Some(p) = args.iter().position(|a| a == "--master") {
            args[p + 1] = master.to_string();
        }
        let p = Proc::spawn_with_env(&format!("w{i}"), self.dir.path(), args, env);
        self.workers.push(p);
    }

    /// The data dir of worker `i`.
    pub fn worker_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("w{i}"))
    }

    pub fn add_worker_with(&mut self, i: usize, with_token: bool, extra: &[&str]) {
        let mut args = self.worker_args(i, with_token);
        args.extend(extra.iter().map(|s| s.to_string()));
        let p = Proc::spawn(&format!("w{i}"), self.dir.path(), args);
        self.workers.push(p);
    }

    pub fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .expect("GET")
            .json()
            .unwrap_or(Value::Null)
    }

    pub fn nodes(&self) -> Vec<Value> {
        self.get("/v1/nodes")["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn wait_nodes(&self, n: usize) -> Vec<Value> {
        wait_for(
            &format!("{n} connected workers"),
            Duration::from_secs(60),
            || {
                let nodes = self.nodes();
                (nodes.len() == n).then_some(nodes)
            },
        )
    }

    pub fn submit(&self, body: Value) -> String {
        let r = self
            .http
            .post(format!("{}/v1/jobs", self.base))
            .json(&body)
            .send()
            .expect("POST");
        assert_eq!(r.status().as_u16(), 201);
        r.json::<Value>().expect("job")["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    pub fn wait_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        wait_for(&format!("job {id} in {states:?}"), timeout, || {
            let job = self.get(&format!("/v1/jobs/{id}"));
            states
                .contains(&job["state"].as_str().unwrap_or(""))
                .then_some(job)
        })
    }
}

/// Log text without the ANSI colour codes tracing writes.
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ params letter
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines of `log` that contain every one of `needles`.
pub fn lines_with(log: &str, needles: &[&str]) -> Vec<String> {
    plain(log)
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}

/// The whole words of `line` that are numbers ("99," counts; a timestamp
/// or an address does not).
pub fn numbers_in(line: &str) -> Vec<u64> {
    line.split_whitespace()
        .filter_map(|w| {
            w.trim_matches(|c: char| !c.is_ascii_alphanumeric())
                .parse()
                .ok()
        })
        .collect()
}

/// A worker that advertises only libx264 test-encodes one encoder at start-up,
/// not thirteen: it starts faster.
pub fn libx264_only() -> Vec<String> {
    vec!["--encoders".into(), "libx264".into()]
}

impl Proc {
    pub fn spawn_with_env(name: &str, dir: &Path, args: Vec<String>, env: &[(&str, &str)]) -> Proc {
        let cgroup_parent = format!("ffrtmp-test-{}-{name}", std::process::id());
        let mut p = Proc {
            name: name.into(),
            args,
            log: dir.join(format!("{name}.log")),
            child: None,
            cgroup_parent,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        p.start();
        p
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .map(|c| matches!(c.try_wait(), Ok(None)))
            .unwrap_or(false)
    }
}

impl Cluster {
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub fn master_log(&self) -> String {
        self.master.log()
    }

    /// Wait for worker `idx` to exit by itself, checking on every poll that
    /// the master never lists a node.
    pub fn wait_refused_exit(&mut self, idx: usize, timeout: Duration) -> std::process::ExitStatus {
        let name = self.workers[idx].name.clone();
        let status = wait_for(&format!("{name} to exit"), timeout, || {
            let nodes = self.nodes();
            assert!(nodes.is_empty(), "a refused worker was listed: {nodes:?}");
            self.workers[idx]
                .child
                .as_mut()
                .expect("running")
                .try_wait()
                .ok()
                .flatten()
        });
        self.workers[idx].child = None;
        status
    }
}

/// A second master on its own PKI in `dir`: (process, HTTP base, QUIC address).
pub fn spawn_master(dir: &Path, name: &str, pki: &Path) -> (Proc, String, String) {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let media = dir.join("media");
    std::fs::create_dir_all(&media).expect("media");
    let mut m = Proc::spawn(
        name,
        dir,
        vec![
            "--role".into(),
            "master".into(),
            "--pki".into(),
            s(pki),
            "--data-dir".into(),
            s(&dir.join(format!("{name}-data"))),
            "--media-root".into(),
            s(&media),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--listen-addr-file".into(),
            s(&dir.join(format!("{name}-quic.addr"))),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--http-addr-file".into(),
            s(&dir.join(format!("{name}-http.addr"))),
        ],
    );
    let http = read_addr(&dir.join(format!("{name}-http.addr")), &mut m);
    let quic = read_addr(&dir.join(format!("{name}-quic.addr")), &mut m);
    (m, format!("http://{http}"), quic)
}

pub fn run_pki(args: &[&str], dir: &Path) -> String {
    let out = Command::new(BIN)
        .arg("pki")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("ffrtmp-node pki");
    assert!(
        out.status.success(),
        "pki {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
