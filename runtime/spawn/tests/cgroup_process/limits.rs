//! CPU quota and memory limit, measured on real processes.

use super::*;

#[tokio::test]
async fn cpu_quota_caps_at_half_a_core() {
    let Some(tp) = TestParent::new("cpu-quota") else {
        return;
    };
    let limits = ResourceLimits {
        max_cpu_percent: Some(50),
        ..Default::default()
    };
    let job = tp.mgr.create_job("job-cpu", &limits).unwrap();
    let quota = match tp.mgr.version() {
        Some(CgroupVersion::V1) => {
            let cpu = job
                .dirs()
                .iter()
                .find(|d| d.join("cpu.cfs_quota_us").exists())
                .unwrap();
            let q = std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap();
            let p = std::fs::read_to_string(cpu.join("cpu.cfs_period_us")).unwrap();
            format!("{} {}", q.trim(), p.trim())
        }
        _ => std::fs::read_to_string(job.dirs()[0].join("cpu.max"))
            .unwrap()
            .trim()
            .to_string(),
    };
    assert_eq!(quota, "50000 100000");

    let args = [
        "-hide_banner",
        "-nostats",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=1280x720:rate=30",
        "-t",
        "30",
        "-c:v",
        "libx264",
        "-preset",
        "medium",
        "-f",
        "null",
        "-",
    ];
    let mut sp = process::spawn(spec("ffmpeg", &args, job.procs_files()))
        .await
        .unwrap();
    // Start measuring once the encoder is busy.
    eventually("ffmpeg uses CPU", || job.stats().cpu_s.unwrap_or(0.0) > 0.2).await;
    let (t0, c0) = (Instant::now(), job.stats().cpu_s.unwrap());
    while t0.elapsed() < Duration::from_secs(3) {
        assert!(sp.child.try_wait().unwrap().is_none(), "ffmpeg ended early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (wall, c1) = (t0.elapsed().as_secs_f64(), job.stats().cpu_s.unwrap());
    let share = (c1 - c0) / wall;
    eprintln!(
        "cpu share under a 50% quota: {share:.3} ({:.3} cpu-s over {wall:.3} s)",
        c1 - c0
    );
    let status = process::terminate(&mut sp.child, &sp.guard, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(!status.success());
    assert!(
        (share - 0.5).abs() <= 0.1,
        "cpu share {share:.3} not within 0.5 ± 0.1"
    );
    job.remove().unwrap();
}

#[tokio::test]
async fn memory_limit_is_written_and_oom_kills_counted() {
    let Some(tp) = TestParent::new("memory") else {
        return;
    };
    let limits = ResourceLimits {
        max_memory_mb: Some(32),
        ..Default::default()
    };
    let job = tp.mgr.create_job("job-mem", &limits).unwrap();
    let (file, want) = match tp.mgr.version() {
        Some(CgroupVersion::V1) => ("memory.limit_in_bytes", 32 << 20),
        _ => ("memory.max", 32u64 << 20),
    };
    let mem_dir = job
        .dirs()
        .iter()
        .find(|d| d.join(file).exists())
        .unwrap()
        .clone();
    let got: u64 = std::fs::read_to_string(mem_dir.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(got, want);

    // `tail` buffers a "line" of /dev/zero without end: it grows until killed.
    let mut sp = process::spawn(spec("tail", &["/dev/zero"], job.procs_files()))
        .await
        .unwrap();
    let status = tokio::time::timeout(DEADLINE, process::wait(&mut sp.child, &sp.guard))
        .await
        .expect("tail was not OOM-killed in time")
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let stats = job.stats();
    assert!(stats.oom_kills >= 1, "{stats:?}");
    let peak = stats.peak_memory_bytes.unwrap_or(0);
    assert!(peak > 16 << 20 && peak <= want + (1 << 20), "{stats:?}");
    job.remove().unwrap();
}
