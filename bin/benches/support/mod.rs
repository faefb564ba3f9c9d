//! Helpers shared by the benchmarks in this folder: statistics, `/proc`
//! readers, a minimal HTTP/1.1 client for timing single requests, the
//! guards' run log and the nodes' tracing logs.
//!
//! Lives in a sub-folder so cargo does not take it for a bench target.

#![allow(dead_code)]

use nix::time::{clock_gettime, ClockId};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- stats

/// Nearest-rank percentile of sorted values.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Dist {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    /// Means add up where percentiles do not: for breakdowns.
    pub mean: f64,
}

pub fn dist(values: &[f64]) -> Dist {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    Dist {
        mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
        n: v.len(),
        p50: pct(&v, 50.0),
        p99: pct(&v, 99.0),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

/// Lower median (for an even count), like the other benches.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[(v.len() - 1) / 2]
}

pub fn worst(v: &[f64], higher_is_worse: bool) -> f64 {
    let it = v.iter().copied();
    if higher_is_worse {
        it.fold(f64::MIN, f64::max)
    } else {
        it.fold(f64::MAX, f64::min)
    }
}

/// One summary line: the median over the runs and the worst run.
pub fn line(what: &str, unit: &str, v: &[f64], higher_is_worse: bool) {
    println!(
        "{what:<62} median {:>9.3} {unit:<5} worst {:>9.3} {unit}",
        median(v),
        worst(v, higher_is_worse)
    );
}

/// p50, p99 and max lines over the runs' distributions.
pub fn dist_lines(what: &str, unit: &str, ds: &[Dist]) {
    let n = ds.first().map(|d| d.n).unwrap_or(0);
    line(
        &format!("{what} p50 (n={n})"),
        unit,
        &ds.iter().map(|d| d.p50).collect::<Vec<_>>(),
        true,
    );
    line(
        &format!("{what} p99"),
        unit,
        &ds.iter().map(|d| d.p99).collect::<Vec<_>>(),
        true,
    );
    line(
        &format!("{what} max"),
        unit,
        &ds.iter().map(|d| d.max).collect::<Vec<_>>(),
        true,
    );
}

/// [`dist_lines`] and the mean.
pub fn dist_lines_mean(what: &str, unit: &str, ds: &[Dist]) {
    dist_lines(what, unit, ds);
    line(
        &format!("{what} mean"),
        unit,
        &ds.iter().map(|d| d.mean).collect::<Vec<_>>(),
        true,
    );
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------- clocks, /proc

/// CLOCK_MONOTONIC now, in ns: the clock the guards write to the run log.
pub fn mono_ns() -> u64 {
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC, in seconds (the tighter of a few reads):
/// add it to a CLOCK_MONOTONIC time to get the wall clock the logs use.
pub fn mono_to_unix() -> f64 {
    let read = |clock| {
        let ts = clock_gettime(clock).expect("clock_gettime");
        ts.tv_sec() as f64 + ts.tv_nsec() as f64 / 1e9
    };
    (0..5)
        .map(|_| {
            let m0 = read(ClockId::CLOCK_MONOTONIC);
            let r = read(ClockId::CLOCK_REALTIME);
            let m1 = read(ClockId::CLOCK_MONOTONIC);
            (m1 - m0, r - (m0 + m1) / 2.0)
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, off)| off)
        .expect("five reads")
}

/// VmRSS of `pid` in MiB, or `None` once the process is gone.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_kib(pid, "VmRSS:").map(|kb| kb / 1024.0)
}

/// A `kB` field of `/proc/PID/status`.
pub fn status_kib(pid: u32, name: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
}

/// Polls VmRSS of `pid` every 100 ms until three samples in a row are within
/// 64 KiB of each other, or `deadline` passes: (last sample, settled?).
pub fn settled_rss(pid: u32, deadline: Duration) -> (f64, bool) {
    let until = Instant::now() + deadline;
    let mut last: Vec<f64> = Vec::new();
    loop {
        let v = rss_mib(pid).unwrap_or_else(|| panic!("process {pid} is gone"));
        last.push(v);
        if last.len() >= 3 {
            let w = &last[last.len() - 3..];
            let spread = w.iter().copied().fold(f64::MIN, f64::max)
                - w.iter().copied().fold(f64::MAX, f64::min);
            if spread <= 64.0 / 1024.0 {
                return (v, true);
            }
        }
        if Instant::now() > until {
            return (v, false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The three load averages, as `/proc/loadavg` writes them.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `n` rounds of a 4 KiB write + `fdatasync` in `dir`: what one durable
/// flush costs on that file system now, in ms. `append`: each write extends
/// the file (the file system journals the new size too); otherwise the same
/// block is rewritten in place.
pub fn fdatasync_probe(dir: &Path, n: usize, append: bool) -> Vec<f64> {
    use std::io::{Seek, SeekFrom};
    let path = dir.join(format!("fdatasync-probe-{}", std::process::id()));
    let mut f = std::fs::File::create(&path).expect("fdatasync probe file");
    let block = [7u8; 4096];
    if !append {
        f.write_all(&block).expect("fdatasync probe write");
        f.sync_all().expect("fsync");
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if !append {
            f.seek(SeekFrom::Start(0)).expect("seek");
        }
        f.write_all(&block).expect("fdatasync probe write");
        let t = Instant::now();
        f.sync_data().expect("fdatasync");
        out.push(ms(t.elapsed()));
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    out
}

// ---------------------------------------------------------------- HTTP

/// A keep-alive HTTP/1.1 connection with nothing between the caller and
/// the socket, so a request's timing starts at the `write`.
pub struct RawHttp {
    reader: BufReader<TcpStream>,
    host: String,
}

impl RawHttp {
    /// `base` as the harness gives it: `http://127.0.0.1:PORT`.
    pub fn connect(base: &str) -> RawHttp {
        let host = base.trim_start_matches("http://").to_string();
        let stream = TcpStream::connect(&host).unwrap_or_else(|e| panic!("connect {host}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        RawHttp {
            reader: BufReader::new(stream),
            host,
        }
    }

    /// Writes one request (the whole of it in one `write`).
    pub fn send(&mut self, method: &str, path: &str, body: Option<&[u8]>) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        if let Some(b) = body {
            bytes.extend_from_slice(b);
        }
        self.reader
            .get_mut()
            .write_all(&bytes)
            .expect("write the request");
    }

    /// Reads one response: (status, body). Content-Length or chunked.
    pub fn read_response(&mut self) -> (u16, Vec<u8>) {
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("status line");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).expect("header line");
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (name, value) = h.split_once(':').unwrap_or((h, ""));
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            if name == "content-length" {
                length = value.parse::<usize>().ok();
            } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.reader.read_line(&mut size).expect("chunk size");
                let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .expect("chunk size");
                let mut chunk = vec![0u8; n + 2];
                self.reader.read_exact(&mut chunk).expect("chunk");
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body).expect("body");
        }
        (status, body)
    }

    pub fn request(&mut self, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
        self.send(method, path, body);
        self.read_response()
    }

    pub fn get_json(&mut self, path: &str) -> (u16, serde_json::Value) {
        let (s, b) = self.request("GET", path, None);
        (
            s,
            serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null),
        )
    }
}

// ---------------------------------------------------------------- run log

/// One run-log line: `<event> <CLOCK_MONOTONIC ns> <job> <token> <worker pid>`.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: String,
    pub ns: u64,
    pub job: String,
}

pub fn read_run_log(path: &Path) -> Vec<Event> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut v: Vec<Event> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(Event {
                kind: f.first()?.to_string(),
                ns: f.get(1)?.parse().ok()?,
                job: f.get(2)?.to_string(),
            })
        })
        .collect();
    v.sort_by_key(|e| e.ns);
    v
}

// ---------------------------------------------------------------- tracing logs

/// Unix time in seconds of the tracing timestamp that starts a log line
/// (`2026-11-22T14:27:52.141234Z ...`, UTC).
pub fn log_time(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, clock) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let mut c = clock.split(':');
    let h: f64 = c.next()?.parse().ok()?;
    let mi: f64 = c.next()?.parse().ok()?;
    let sec: f64 = c.next()?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + sec)
}

/// The value of `name=value` in a log line.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
}

/// For each job, the Unix time of the first log line that contains
/// `message` (with the message's surrounding spaces) and `job=<id>`.
pub fn times_of(log: &str, message: &str) -> std::collections::HashMap<String, f64> {
    let needle = format!(" {message}");
    let mut m = std::collections::HashMap::new();
    for line in log.lines() {
        if !line.contains(&needle) {
            continue;
        }
        let (Some(t), Some(job)) = (log_time(line), field(line, "job")) else {
            continue;
        };
        m.entry(job.to_string()).or_insert(t);
    }
    m
}

/// The job ids of a list of run-log events of one kind, with their times.
pub fn events_of<'a>(events: &'a [Event], kind: &str) -> std::collections::HashMap<&'a str, u64> {
    events
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| (e.job.as_str(), e.ns))
        .collect()
}

// ---------------------------------------------------------------- cluster

/// Kills a bench's cluster processes by pid (workers first) before the
/// harness removes their directory and cgroups, on success and on panic
/// alike.
pub struct Guard(pub Option<crate::common::cluster::Cluster>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            for w in c.workers.iter_mut() {
                w.kill9();
            }
            c.master.kill9();
        }
        // Dropping the cluster removes its cgroups and the temp dir.
        self.0.take();
    }
}
