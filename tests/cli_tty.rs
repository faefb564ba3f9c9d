//! The `ffrtmp` client CLI as a long-lived process against a real standalone
//! node: `jobs watch` drawing its bars on a pseudo-terminal (the screen
//! rendered the way a terminal would, then read like a person would),
//! `jobs watch` with no ids picking up jobs submitted after it started, and
//! an `https://` master (a TLS front for the node, with a private CA).
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::num::NonZeroU16;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CLI: &str = env!("CARGO_BIN_EXE_ffrtmp");
const LONG: Duration = Duration::from_secs(180);
const ROWS: u16 = 50;
const COLS: u16 = 200;

/// A child process on the slave side of a pseudo-terminal; what it writes
/// is fed to a VT100 emulator, so the test reads the screen, not the bytes
/// (indicatif redraws in place with cursor movements).
struct Tty {
    child: Child,
    screen: Arc<Mutex<vt100::Parser>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Tty {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Tty {
        let size = nix::pty::Winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&size, None).expect("openpty");
        let slave = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the pty slave"));
        let mut cmd = Command::new(CLI);
        cmd.args(args)
            .env_remove("FFRTMP_MASTER")
            .env_remove("FFRTMP_API_KEY")
            .env_remove("FFRTMP_CA_CERT")
            .env("TERM", "xterm-256color")
            .stdin(slave(&pty.slave))
            .stdout(slave(&pty.slave))
            .stderr(slave(&pty.slave));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn ffrtmp on the pty");
        // Only the child holds the slave now: its exit ends our reads (EIO).
        drop(cmd);
        drop(pty.slave);
        let (rows, cols) = (
            NonZeroU16::new(ROWS).expect("rows"),
            NonZeroU16::new(COLS).expect("cols"),
        );
        let screen = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let feed = screen.clone();
        let mut master = std::fs::File::from(pty.master);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                feed.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .process(&buf[..n]);
            }
        });
        Tty {
            child,
            screen,
            reader: Some(reader),
        }
    }

    /// The screen as text, one line per row, trailing blanks trimmed.
    fn text(&self) -> String {
        let p = self.screen.lock().unwrap_or_else(|e| e.into_inner());
        // Row by row: `contents()` joins a row that fills the whole width
        // with the next, as a wrapped line.
        p.screen()
            .rows(0, COLS)
            .map(|r| r.trim_end().to_string())
            .collect::<Vec<_>>()
            .join("\n")
            .trim_end()
            .to_string()
    }

    /// Poll the screen until `ok` holds; the failure shows the screen.
    fn wait_screen(&mut self, what: &str, timeout: Duration, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if ok(&text) {
                return text;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The last bytes may still be on their way to the screen.
                self.drain();
                let text = self.text();
                if ok(&text) {
                    return text;
                }
                panic!("ffrtmp exited ({status}) before {what}; the screen:\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; the screen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for the exit code; the failure shows the screen.
    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.drain();
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "ffrtmp did not exit within {timeout:?}; the screen:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Read what is left once the child has exited (the read ends with EIO
    /// once no process holds the slave).
    fn drain(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        // By pid: ours only.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn testsrc_job(scenario: &str, seconds: f64) -> Value {
    json!({
        "scenario": scenario,
        "input": {"type": "testsrc", "duration_s": seconds},
        "output": {"type": "null"}
    })
}

/// The row of the screen that starts with `id`, and the row under it (the
/// bar and its text).
fn bar_of<'a>(screen: &'a str, id: &str) -> Option<(&'a str, &'a str)> {
    let mut lines = screen.lines();
    while let Some(l) = lines.next() {
        if l.starts_with(id) {
            return Some((l, lines.next()?));
        }
    }
    None
}

/// Under a bar, while its job runs: `[===>   ]  42%  running  frame 120
/// 31.5 fps  speed 1.04x  ETA 6s`.
fn shows_progress(screen: &str, id: &str, scenario: &str) -> bool {
    let Some((head, bar)) = bar_of(screen, id) else {
        return false;
    };
    let number_after = |key: &str| {
        bar.split(key)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|w| w.trim_end_matches(['x', 's', 'm', 'h']).to_string())
            .filter(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
            .is_some()
    };
    // Well under way (not the first frames), and not done.
    let percent = bar
        .split(']')
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|p| p.trim().parse::<u32>().ok());
    head.contains(scenario)
        && bar.trim_start().starts_with('[')
        && percent.is_some_and(|p| (10..100).contains(&p))
        && bar.contains("running")
        && number_after("frame ")
        && bar.contains(" fps")
        && number_after("speed ")
        && number_after("ETA ")
}

/// Under a bar, once its job ended: the outcome, frames and energy.
fn shows_outcome(screen: &str, id: &str) -> bool {
    let Some((_, bar)) = bar_of(screen, id) else {
        return false;
    };
    bar.contains("100%")
        && bar.contains("succeeded")
        && bar.contains(" frames in ")
        && bar.contains("energy ")
        && bar.contains(" J (")
}

#[test]
fn watch_draws_bars_on_a_terminal_then_outcome_and_energy() {
    let _g = serial();
    let node = Node::start("cli-tty", NodeOpts::default());
    let a = node.submit(testsrc_job("720p30-h264", 12.0));
    let b = node.submit(testsrc_job("480p30-h265", 12.0));
    let mut tty = Tty::spawn(
        &["jobs", "watch", &a, &b],
        &[("FFRTMP_MASTER", node.base.as_str())],
    );
    let running = tty.wait_screen("both bars with frames, fps, speed and ETA", LONG, |s| {
        shows_progress(s, &a, "720p30-h264") && shows_progress(s, &b, "480p30-h265")
    });
    eprintln!("--- the screen while both jobs run ---\n{running}\n---");

    let code = tty.wait_exit(LONG);
    let end = tty.text();
    eprintln!("--- the screen at the end ---\n{end}\n---");
    assert_eq!(code, 0, "exit code; the screen:\n{end}");
    for id in [&a, &b] {
        assert!(
            shows_outcome(&end, id),
            "outcome of {id}; the screen:\n{end}"
        );
        // The summary table: one row per job with its joules and source.
        let row = end
            .lines()
            .find(|l| l.starts_with(id.as_str()) && l.contains("succeeded") && !l.contains('['))
            .unwrap_or_else(|| panic!("a summary row for {id}; the screen:\n{end}"));
        let job = node.job(id);
        let source = job["energy"]["energy_source"]
            .as_str()
            .unwrap_or_else(|| panic!("energy of {id}: {job}"));
        assert!(
            row.contains(source),
            "{source} in the row; the screen:\n{end}"
        );
        let joules = job["energy"]["energy_joules"].as_f64().unwrap_or(0.0);
        assert!(joules > 0.0, "{job}");
        assert!(
            row.contains(&format!("{joules:.1}")),
            "{joules:.1} J in the row; the screen:\n{end}"
        );
    }
    assert!(end.contains("JOULES") && end.contains("SOURCE"), "{end}");
}

/// A process whose stdout lines are collected as they come.
struct Lines {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Lines {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Lines {
        let mut cmd = Command::new(CLI);
        cmd.args(args)
            .env_remove("FFRTMP_MASTER")
            .env_remove("FFRTMP_API_KEY")
            .env_remove("FFRTMP_CA_CERT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn ffrtmp");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (out, err) = (lines.clone(), stderr.clone());
        let so = child.stdout.take().expect("stdout");
        let mut se = child.stderr.take().expect("stderr");
        let readers = vec![
            std::thread::spawn(move || {
                for l in BufReader::new(so).lines().map_while(Result::ok) {
                    out.lock().unwrap_or_else(|e| e.into_inner()).push(l);
                }
            }),
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = se.read_to_string(&mut s);
                *err.lock().unwrap_or_else(|e| e.into_inner()) = s;
            }),
        ];
        Lines {
            child,
            lines,
            stderr,
            readers,
        }
    }

    fn json(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}"))
            })
            .collect()
    }

    fn dump(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .join("\n"),
            self.stderr.lock().unwrap_or_else(|e| e.into_inner())
        )
    }

    /// Poll the JSON lines until `ok` holds.
    fn wait(&mut self, what: &str, timeout: Duration, ok: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ok(&self.json()) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // What it wrote last may still be in the pipe.
                self.join_readers();
                if ok(&self.json()) {
                    return;
                }
                panic!("ffrtmp exited ({status}) before {what}\n{}", self.dump());
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Once the child has exited: its pipes close, the readers end.
    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.join_readers();
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "ffrtmp did not exit within {timeout:?}\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // By pid: ours only.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn events_of<'a>(lines: &'a [Value], id: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["id"] == id).collect()
}

fn ended(lines: &[Value], id: &str) -> bool {
    events_of(lines, id)
        .last()
        .is_some_and(|l| l["event"] == "end" && l["outcome"] == "succeeded")
}

#[test]
fn watch_without_ids_picks_up_jobs_submitted_later() {
    let _g = serial();
    let node = Node::start("cli-watch-new", NodeOpts::default());
    let env = [("FFRTMP_MASTER", node.base.as_str())];
    // A job that ended before any watch: never shown.
    let old = node.submit(small_job(0.5));
    node.wait_state(&old, &["succeeded"], LONG);

    // Default: the jobs under way, each new one, then exit when none is left.
    // Long enough to be under way when the watch starts and when `later` is
    // submitted, on a fast host too.
    let first = node.submit(small_job(20.0));
    node.wait_state(&first, &["running"], LONG);
    let mut watch = Lines::spawn(&["jobs", "watch", "-o", "json"], &env);
    watch.wait("the running job's first event", LONG, |l| {
        !events_of(l, &first).is_empty()
    });
    // Submitted once the watch is under way.
    let later = node.submit(small_job(1.0));
    watch.wait("the later job's end", LONG, |l| ended(l, &later));
    let code = watch.wait_exit(LONG);
    assert_eq!(code, 0, "{}", watch.dump());
    let lines = watch.json();
    for id in [&first, &later] {
        assert!(ended(&lines, id), "{id} ends succeeded\n{}", watch.dump());
        let mine = events_of(&lines, id);
        assert_eq!(mine[0]["event"], "state", "{}", watch.dump());
        // One end line per job.
        let ends = mine.iter().filter(|l| l["event"] == "end").count();
        assert_eq!(ends, 1, "{}", watch.dump());
    }
    assert!(events_of(&lines, &old).is_empty(), "{}", watch.dump());
    drop(watch);

    // --follow on an idle master: keeps watching; each job submitted later
    // shows up, one object per event, until the process is stopped.
    let mut watch = Lines::spawn(&["jobs", "watch", "--follow", "-o", "json"], &env);
    let one = node.submit(small_job(1.0));
    watch.wait("the first job's end", LONG, |l| ended(l, &one));
    // It is past its first look for sure now; and it did not exit.
    let two = node.submit(small_job(1.0));
    watch.wait("the second job's end", LONG, |l| ended(l, &two));
    assert!(
        watch.child.try_wait().expect("try_wait").is_none(),
        "--follow keeps running\n{}",
        watch.dump()
    );
    let lines = watch.json();
    for id in [&old, &first, &later] {
        assert!(events_of(&lines, id).is_empty(), "{}", watch.dump());
    }
    for l in &lines {
        assert!(l["event"].is_string() && l["id"].is_string(), "{l}");
    }
    // Stopped by its pid (Drop).
}

/// A TLS front for the node's HTTP API (like a reverse proxy in front of a
/// master): accepts TLS on a loopback port with `cert`/`key`, and copies
/// bytes both ways to `backend`. Runs until the test's runtime is dropped.
fn tls_front(
    rt: &tokio::runtime::Runtime,
    cert: &std::path::Path,
    key: &std::path::Path,
    backend: String,
) -> u16 {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("cert file")
        .collect::<Result<_, _>>()
        .expect("cert pem");
    let key = PrivateKeyDer::from_pem_file(key).expect("key pem");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(&backend).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
            });
        }
    });
    port
}

/// Run the CLI to its end; (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut p = Lines::spawn(args, env);
    let code = p.wait_exit(LONG);
    let out = p.lines.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
    let err = p.stderr.lock().unwrap_or_else(|e| e.into_inner()).clone();
    eprintln!("$ ffrtmp {}\n-> {code}\n{err}", args.join(" "));
    (code, out, err)
}

#[test]
fn an_https_master_with_a_private_ca() {
    let _g = serial();
    let node = Node::start("cli-https", NodeOpts::default());
    let pki = tempfile::tempdir().expect("tempdir");
    // The cluster PKI's own generator: a CA, and a server certificate for
    // localhost / 127.0.0.1 signed by it.
    ffrtmp_transport_quic::pki::init(pki.path(), &[]).expect("pki init");
    let ca = pki.path().join(ffrtmp_transport_quic::pki::CA_CERT_FILE);
    let ca = ca.to_str().expect("utf-8 path");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let backend = node.base.trim_start_matches("http://").to_string();
    let port = tls_front(
        &rt,
        &pki.path()
            .join(ffrtmp_transport_quic::pki::MASTER_CERT_FILE),
        &pki.path().join(ffrtmp_transport_quic::pki::MASTER_KEY_FILE),
        backend,
    );
    let https = format!("https://127.0.0.1:{port}");

    // Submit and follow a job to its end over TLS (the event stream too).
    let (code, out, err) = run(
        &[
            "jobs",
            "submit",
            "--scenario",
            "480p30-h264",
            "--input",
            "testsrc:1",
            "--wait",
            "-o",
            "json",
            "--master",
            &https,
            "--ca-cert",
            ca,
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let job: Value = serde_json::from_str(&out).expect("the final job");
    assert_eq!(job["state"], "succeeded", "{job}");
    // FFRTMP_CA_CERT does the same.
    let (code, out, err) = run(
        &["jobs", "list", "-o", "json"],
        &[("FFRTMP_MASTER", &https), ("FFRTMP_CA_CERT", ca)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let list: Value = serde_json::from_str(&out).expect("the list");
    assert_eq!(list["jobs"][0]["id"], job["id"], "{list}");

    // Without the CA: not trusted, exit 3, and the line says which knob.
    let (code, _, err) = run(&["jobs", "list", "--master", &https], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("certificate") && err.contains("--ca-cert"),
        "{err}"
    );
    // A CA file that is not there: exit 2, naming it; nothing sent.
    let missing = pki.path().join("missing.pem");
    let missing = missing.to_str().expect("utf-8 path");
    let (code, _, err) = run(
        &["jobs", "list", "--master", &https, "--ca-cert", missing],
        &[],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(missing), "{err}");
    // An https master nobody listens on: exit 3, like http.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let nobody = format!("https://127.0.0.1:{closed}");
    let (code, _, err) = run(&["jobs", "list", "--master", &nobody, "--ca-cert", ca], &[]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains(&nobody), "{err}");
}
