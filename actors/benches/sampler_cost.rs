//! The power sampler's CPU cost at 10 Hz (issue 4, docs/BENCHMARKS.md).
//!
//! Runs a `PowerSamplerActor` alone in this process for `--seconds` and
//! divides the process's CPU time (`getrusage`, microseconds) by the wall
//! time: the sampler's cost as a share of one core, tokio and ractor
//! included. Two set-ups, each `--runs` times:
//! - `rapl`: a FAKE powercap tree (two packages with DRAM subzones, written
//!   by this benchmark: there is no RAPL here; a real sysfs read costs an
//!   MSR read more), the real `/proc/stat`, and `--jobs` tracked jobs whose
//!   CPU time comes from fake `cpuacct.usage` files;
//! - `estimate`: the real `/proc/stat` only (what a node without RAPL runs).
//!
//! It also times the reads of one cycle (hot, in a loop; and cold, once
//! every 100 ms as the sampler does them) and, as a floor, an actor woken by
//! a 10 Hz ractor timer that does nothing.
//!
//! `cargo bench -p ffrtmp-actors --bench sampler_cost -- --seconds 20 --runs 3`
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ffrtmp_actors::power::{
    JobPids, PowerArgs, PowerChoice, PowerConfig, PowerMsg, PowerSamplerActor,
};
use ffrtmp_os::energy::cpu::CpuProbe;
use ffrtmp_runtime::model::NodePower;
use ffrtmp_runtime::wire::AttemptRef;
use ractor::Actor;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn zone(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).expect("zone dir");
    std::fs::write(dir.join("name"), format!("{name}\n")).expect("name");
    std::fs::write(dir.join("max_energy_range_uj"), "262143328850\n").expect("max");
    std::fs::write(dir.join("energy_uj"), "1000000\n").expect("energy");
}

fn fake_tree(root: &Path) {
    for p in 0..2 {
        zone(
            &root.join(format!("intel-rapl:{p}")),
            &format!("package-{p}"),
        );
        zone(
            &root.join(format!("intel-rapl:{p}/intel-rapl:{p}:0")),
            "core",
        );
        zone(
            &root.join(format!("intel-rapl:{p}/intel-rapl:{p}:1")),
            "dram",
        );
    }
}

struct Run {
    percent_of_core: f64,
    cycle_us: f64,
    samples: u64,
}

async fn run(config: PowerConfig, jobs: &[PathBuf], seconds: u64) -> Run {
    let me = cpu_s;
    let (p, handle) = Actor::spawn(
        None,
        PowerSamplerActor,
        PowerArgs {
            config,
            report_to: None,
        },
    )
    .await
    .expect("spawn sampler");
    for (i, usage) in jobs.iter().enumerate() {
        p.cast(PowerMsg::Track {
            attempt: AttemptRef {
                job_id: format!("bench-{i}"),
                token: 1,
            },
            cpu: CpuProbe::CgroupV1Usage(usage.clone()),
            pids: JobPids::Fixed(vec![]),
        })
        .expect("track");
    }
    let cpu0 = me();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let cpu = me() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let snap: NodePower = ractor::call!(p, PowerMsg::Snapshot).expect("snapshot");
    p.stop(None);
    let _ = handle.await;
    Run {
        percent_of_core: cpu / wall * 100.0,
        cycle_us: snap.cycle_seconds * 1e6,
        samples: snap.samples,
    }
}

/// The floor: an actor woken at 10 Hz that does nothing, on the same
/// runtime — what any 10 Hz ractor timer costs here.
struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(
        &self,
        myself: ractor::ActorRef<()>,
        _: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        myself.send_interval(Duration::from_millis(100), || ());
        Ok(())
    }
}

async fn idle_run(seconds: u64) -> f64 {
    let (a, h) = Actor::spawn(None, Idle, ()).await.expect("spawn idle");
    let cpu0 = cpu_s();
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let pct = (cpu_s() - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    a.stop(None);
    let _ = h.await;
    pct
}

/// This process's CPU time (user + system), microsecond resolution.
fn cpu_s() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(u.user_time()) + tv(u.system_time())
}

fn summary(name: &str, runs: &[Run]) {
    let mut pct: Vec<f64> = runs.iter().map(|r| r.percent_of_core).collect();
    pct.sort_by(f64::total_cmp);
    let median = pct[pct.len() / 2];
    let worst = pct[pct.len() - 1];
    let cycles: Vec<String> = runs.iter().map(|r| format!("{:.0}", r.cycle_us)).collect();
    let samples: Vec<String> = runs.iter().map(|r| r.samples.to_string()).collect();
    println!(
        "{name:<9} cpu % of one core: median {median:.4}  worst {worst:.4}  (runs: {}; mean cycle µs per run: {}; samples: {})",
        pct.iter()
            .map(|p| format!("{p:.4}"))
            .collect::<Vec<_>>()
            .join(", "),
        cycles.join(", "),
        samples.join(", ")
    );
}

/// Mean time of one call of `f` over `n` calls, in µs.
fn time_us(n: u32, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// What one sampling cycle's reads cost, part by part.
fn components(root: &Path, jobs: &[PathBuf]) {
    use ffrtmp_os::energy::{cpu::CpuReader, procstat::ProcStat, rapl::Rapl};
    let mut rapl = Rapl::open(root).expect("fake rapl");
    let n = 2000;
    let r = time_us(n, || {
        let _ = rapl.read();
    });
    let mut stat = ProcStat::new(Path::new("/proc/stat"));
    let p = time_us(n, || {
        let _ = stat.read();
    });
    let mut probes: Vec<CpuReader> = jobs
        .iter()
        .map(|j| CpuReader::new(CpuProbe::CgroupV1Usage(j.clone())))
        .collect();
    let c = time_us(n, || {
        for probe in probes.iter_mut() {
            let _ = probe.read_s();
        }
    });
    // The same reads as the sampler does them: once per 100 ms, caches cold.
    let mut cold = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(100));
        cold.push(time_us(1, || {
            let _ = rapl.read();
            let _ = stat.read();
            for probe in probes.iter_mut() {
                let _ = probe.read_s();
            }
        }));
    }
    cold.sort_by(f64::total_cmp);
    println!(
        "per cycle, hot: rapl read ({} zones) {r:.1} µs, /proc/stat {p:.1} µs, {} job cpu files {c:.1} µs; all of them every 100 ms (cold): median {:.1} µs",
        rapl.zones().len(),
        probes.len(),
        cold[cold.len() / 2]
    );
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let seconds = arg("--seconds", 20);
    let runs = arg("--runs", 3).max(1);
    let n_jobs = arg("--jobs", 4) as usize;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("powercap");
    fake_tree(&root);
    let jobs: Vec<PathBuf> = (0..n_jobs)
        .map(|i| {
            let p = dir.path().join(format!("job{i}.usage"));
            std::fs::write(&p, "123456789\n").expect("usage");
            p
        })
        .collect();
    // One worker thread, like a quiet worker's runtime; the sampler's
    // blocking reads run on it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    components(&root, &jobs);
    println!(
        "power sampler at 10 Hz, {seconds} s per run, {runs} runs, {n_jobs} tracked jobs (rapl set-up)"
    );
    rt.block_on(async {
        let mut floor = Vec::new();
        for _ in 0..runs {
            floor.push(idle_run(seconds).await);
        }
        floor.sort_by(f64::total_cmp);
        println!(
            "floor     cpu % of one core: median {:.4}  worst {:.4}  (an actor woken at 10 Hz doing nothing)",
            floor[floor.len() / 2],
            floor[floor.len() - 1]
        );
        for (name, choice) in [
            ("rapl", PowerChoice::Rapl),
            ("estimate", PowerChoice::Estimate),
        ] {
            let mut results = Vec::new();
            for _ in 0..runs {
                let mut config = PowerConfig::new(2);
                config.choice = choice;
                config.powercap_root = root.clone();
                let tracked: &[PathBuf] = if choice == PowerChoice::Rapl {
                    &jobs
                } else {
                    &[]
                };
                results.push(run(config, tracked, seconds).await);
            }
            summary(name, &results);
        }
    });
}
