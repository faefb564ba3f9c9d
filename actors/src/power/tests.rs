//! The sampler against FAKE inputs written by the test (hardware edges
//! only): a powercap tree with one package, a `/proc/stat`, and two
//! jobs' `cpuacct.usage` files. Timer ticks are off (1 mHz); the test
//! sends `Tick` itself, so every interval's numbers are known.

use super::*;
use std::path::Path;

struct Fake {
    _dir: tempfile::TempDir,
    energy: PathBuf,
    stat: PathBuf,
    cpu: [PathBuf; 2],
}

impl Fake {
    fn new() -> Fake {
        let dir = tempfile::tempdir().expect("tempdir");
        let zone = dir.path().join("powercap/intel-rapl:0");
        std::fs::create_dir_all(&zone).expect("zone");
        std::fs::write(zone.join("name"), "package-0\n").expect("name");
        std::fs::write(zone.join("max_energy_range_uj"), "262143328850\n").expect("max");
        let f = Fake {
            energy: zone.join("energy_uj"),
            stat: dir.path().join("stat"),
            cpu: [dir.path().join("a.usage"), dir.path().join("b.usage")],
            _dir: dir,
        };
        f.set(0.0, 0.0, [0.0, 0.0]);
        f
    }

    /// Cumulative joules, node busy seconds, and each job's CPU seconds.
    fn set(&self, joules: f64, busy_s: f64, cpu_s: [f64; 2]) {
        std::fs::write(&self.energy, format!("{}\n", (joules * 1e6) as u64)).expect("energy");
        // /proc/stat in clock ticks (100 Hz here, as sysconf says on Linux).
        let ticks = |s: f64| (s * 100.0).round() as u64;
        std::fs::write(
            &self.stat,
            format!(
                "cpu  {} 0 0 {} 0 0 0 0 0 0\ncpu0 0 0 0 0\n",
                ticks(busy_s),
                1_000_000
            ),
        )
        .expect("stat");
        for (p, s) in self.cpu.iter().zip(cpu_s) {
            std::fs::write(p, format!("{}\n", (s * 1e9) as u64)).expect("usage");
        }
    }

    fn config(&self, root: &Path) -> PowerConfig {
        PowerConfig {
            choice: PowerChoice::Rapl,
            powercap_root: root.to_path_buf(),
            proc_stat: self.stat.clone(),
            sample_hz: 0.001,
            estimate: EstimateModel::for_cores(2),
            report_every: Duration::from_secs(3600),
        }
    }
}

fn attempt(job: &str) -> AttemptRef {
    AttemptRef {
        job_id: job.into(),
        token: 1,
    }
}

async fn finish(p: &ActorRef<PowerMsg>, job: &str, final_cpu_s: Option<f64>) -> SampledEnergy {
    p.call(
        |reply| PowerMsg::Finish {
            attempt: attempt(job),
            final_cpu_s,
            reply,
        },
        None,
    )
    .await
    .expect("call")
    .expect("reply")
    .expect("tracked")
}

/// Sample now, and return once the sampler has (messages are handled
/// in order, so the snapshot's reply comes after the tick).
async fn tick(p: &ActorRef<PowerMsg>) -> NodePower {
    p.cast(PowerMsg::Tick).expect("tick");
    ractor::call!(p, PowerMsg::Snapshot).expect("snapshot")
}

fn joules(e: &SampledEnergy) -> f64 {
    e.domains.iter().map(|d| d.joules).sum()
}

#[tokio::test]
async fn splits_by_cpu_share_and_conserves_the_total() {
    let f = Fake::new();
    let root = f.energy.parent().and_then(Path::parent).expect("root");
    let (p, handle) = Actor::spawn(
        None,
        PowerSamplerActor,
        PowerArgs {
            config: f.config(root),
            report_to: None,
        },
    )
    .await
    .expect("spawn");
    for (i, job) in ["a", "b"].into_iter().enumerate() {
        p.cast(PowerMsg::Track {
            attempt: attempt(job),
            cpu: CpuProbe::CgroupV1Usage(f.cpu[i].clone()),
            pids: JobPids::Fixed(vec![]),
        })
        .expect("track");
    }
    // Both tracked (their baselines read) before the files change.
    let _: NodePower = ractor::call!(p, PowerMsg::Snapshot).expect("snapshot");
    // 1: 10 J while the node was busy 4 s, a 3 s and b 1 s: 7.5 / 2.5.
    f.set(10.0, 4.0, [3.0, 1.0]);
    let n = tick(&p).await;
    assert!((n.joules_total - 10.0).abs() < 1e-6, "{n:?}");
    assert!((n.attributed_joules_total - 10.0).abs() < 1e-6, "{n:?}");
    assert_eq!(n.domains.len(), 1, "{n:?}");
    // 2: 8 J, busy 4 s, a 1 s, b nothing: a 2 J, b 0, 6 J idle.
    f.set(18.0, 8.0, [4.0, 1.0]);
    tick(&p).await;
    // a exits: its final CPU reading (5 s) comes with the call, not
    // from the file; 2 J while busy 1 s, all a's.
    f.set(20.0, 9.0, [4.0, 1.0]);
    let a = finish(&p, "a", Some(5.0)).await;
    let b = finish(&p, "b", None).await;
    assert!((joules(&a) - 11.5).abs() < 1e-6, "{a:?}");
    assert!((joules(&b) - 2.5).abs() < 1e-6, "{b:?}");
    assert_eq!(a.domains[0].domain, "package-0");
    assert_eq!(a.domains[0].source, PowerSource::Rapl);
    let n: NodePower = ractor::call!(p, PowerMsg::Snapshot).expect("snapshot");
    assert!((n.joules_total - 20.0).abs() < 1e-6, "{n:?}");
    assert!((n.attributed_joules_total - 14.0).abs() < 1e-6, "{n:?}");
    assert!((n.idle_joules_total - 6.0).abs() < 1e-6, "{n:?}");
    // Untracked now: a second finish has no figures.
    let again = p
        .call(
            |reply| PowerMsg::Finish {
                attempt: attempt("a"),
                final_cpu_s: None,
                reply,
            },
            None,
        )
        .await
        .expect("call")
        .expect("reply");
    assert_eq!(again, None);
    p.stop(None);
    handle.await.expect("stopped");
}

#[tokio::test]
async fn a_source_asked_for_by_name_must_exist() {
    let f = Fake::new();
    let empty = tempfile::tempdir().expect("tempdir");
    let r = Actor::spawn(
        None,
        PowerSamplerActor,
        PowerArgs {
            config: f.config(empty.path()),
            report_to: None,
        },
    )
    .await;
    let err = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("--power-source rapl"), "{err}");
}
