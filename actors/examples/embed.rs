//! A small ractor application that embeds ffrtmp (see `ffrtmp_actors::embed`).
//!
//! Its own supervisor actor spawns a `SchedulerActor` and a `NodeActor` linked
//! under it and connects them in memory; `main` submits one real encode (two
//! seconds of FFmpeg's test pattern, discarded), prints its updates as they
//! arrive and the final result, then stops the supervisor, which stops the
//! node and the scheduler. Exits non-zero unless the job succeeded and
//! everything it started is gone afterwards.
//!
//! ```text
//! cargo run -p ffrtmp-actors --example embed
//! ```
//!
//! Needs `ffmpeg` and `ffprobe` in `PATH`. Job cgroups are used when this
//! process may create them (root); otherwise jobs run with `nice` only.
//! `RUST_LOG=info` shows the library's logs.
// A test/bench/example crate: panics are how it fails, and it exports nothing.
#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ffrtmp_actors::embed;
use ffrtmp_actors::events::UpdateKind;
use ffrtmp_actors::node::{NodeArgs, NodeMsg};
use ffrtmp_actors::os::cgroup::{cgroup_exists, CgroupManager};
use ffrtmp_actors::os::store::Store;
use ffrtmp_actors::runtime::model::{Isolation, Job, JobState};
use ffrtmp_actors::runtime::spec::{parse_job_request, MediaRoots};
use ffrtmp_actors::scheduler::{SchedulerArgs, SchedulerMsg};
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort, SupervisionEvent};

/// The cgroup parent this application's nodes create job cgroups under.
const CGROUP_PARENT: &str = "ffrtmp-embed";

/// The job: two seconds of test pattern at 640x360, H.264, discarded.
const JOB: &str = r#"{
    "codec": "h264", "width": 640, "height": 360, "fps": 30,
    "input": {"type": "testsrc", "duration_s": 2},
    "output": {"type": "null"}
}"#;

/// How long the job may take before the example gives up.
const JOB_DEADLINE: Duration = Duration::from_secs(60);

/// The application's supervisor: owns the scheduler and the node.
struct App;

/// What the supervisor is started with.
struct AppArgs {
    data_dir: PathBuf,
    node_id: String,
}

/// What the rest of the application asks the supervisor.
enum AppMsg {
    /// The scheduler (to submit jobs to) and the node.
    Children(RpcReplyPort<(ActorRef<SchedulerMsg>, ActorRef<NodeMsg>)>),
    /// Stop the node, then the scheduler, then the supervisor itself.
    Shutdown,
    /// The children are stopped: stop. A message, not a direct stop, so the
    /// children's supervision events (which ractor delivers ahead of
    /// messages, but behind a stop) are handled first.
    Stop,
}

struct AppState {
    scheduler: ActorRef<SchedulerMsg>,
    node: ActorRef<NodeMsg>,
    cgroups: Arc<CgroupManager>,
}

impl AppState {
    fn child_name(&self, cell: &ractor::ActorCell) -> &'static str {
        if cell.get_id() == self.scheduler.get_id() {
            "scheduler"
        } else if cell.get_id() == self.node.get_id() {
            "node"
        } else {
            "other child"
        }
    }
}

impl Actor for App {
    type Msg = AppMsg;
    type State = AppState;
    type Arguments = AppArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AppMsg>,
        args: AppArgs,
    ) -> Result<AppState, ActorProcessingErr> {
        let store = Store::open(&args.data_dir.join("master.sled"))?;
        let (scheduler, _) =
            embed::spawn_scheduler(SchedulerArgs::new(store), Some(myself.get_cell())).await?;

        // One slot, and only libx264 probed: that is all this job needs.
        let libx264 = ["libx264".to_string()];
        let mut config = embed::node_config(
            args.node_id,
            "ffmpeg".into(),
            "ffprobe".into(),
            CGROUP_PARENT,
            Some(&libx264),
        )
        .await;
        config.slots = 1;
        let cgroups = config.cgroups.clone();
        // ractor does not stop children with their supervisor: on an error
        // from here on, stop what was started.
        let outbox = match embed::open_outbox(&args.data_dir, &config.node_id) {
            Ok(outbox) => outbox,
            Err(e) => {
                embed::stop_scheduler(&scheduler).await;
                return Err(e.into());
            }
        };
        let node =
            match embed::spawn_node(NodeArgs { config, outbox }, Some(myself.get_cell())).await {
                Ok((node, _)) => node,
                Err(e) => {
                    embed::stop_scheduler(&scheduler).await;
                    return Err(e.into());
                }
            };
        if let Err(e) = embed::link_in_process(&scheduler, &node).await {
            embed::stop_node(&node, cgroups).await;
            embed::stop_scheduler(&scheduler).await;
            return Err(e.into());
        }
        println!(
            "supervisor: scheduler and node {} started and linked (job isolation: {:?})",
            node.get_name().unwrap_or_default(),
            cgroups.isolation()
        );
        Ok(AppState {
            scheduler,
            node,
            cgroups,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AppMsg>,
        msg: AppMsg,
        state: &mut AppState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AppMsg::Children(reply) => {
                let _ = reply.send((state.scheduler.clone(), state.node.clone()));
            }
            AppMsg::Shutdown => {
                // Node first: its jobs are killed and their cgroups removed;
                // then the scheduler.
                embed::stop_node(&state.node, state.cgroups.clone()).await;
                embed::stop_scheduler(&state.scheduler).await;
                myself.cast(AppMsg::Stop)?;
            }
            AppMsg::Stop => myself.stop(Some("shutdown".into())),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<AppMsg>,
        evt: SupervisionEvent,
        state: &mut AppState,
    ) -> Result<(), ActorProcessingErr> {
        match &evt {
            SupervisionEvent::ActorStarted(cell) => {
                println!("supervisor: {} started", state.child_name(cell));
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                println!(
                    "supervisor: {} stopped ({})",
                    state.child_name(cell),
                    reason.as_deref().unwrap_or("no reason given")
                );
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                // This application's policy: no restarts; a failed child
                // stops the whole application (post_stop stops the other).
                let who = state.child_name(cell);
                eprintln!("supervisor: {who} failed: {err}; stopping");
                myself.stop(Some(format!("{who} failed")));
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AppMsg>,
        state: &mut AppState,
    ) -> Result<(), ActorProcessingErr> {
        // After a failure (or an outside stop): ractor does not stop
        // children with their supervisor. Nothing to do after `Shutdown`.
        embed::stop_node(&state.node, state.cgroups.clone()).await;
        embed::stop_scheduler(&state.scheduler).await;
        Ok(())
    }
}

fn print_update(kind: UpdateKind, job: &Job) {
    match (kind, &job.progress) {
        (UpdateKind::Progress, Some(p)) => println!(
            "  progress: frame {:>4}  {:>6.1} fps  {:>5.2} s written  {}",
            p.frame,
            p.fps,
            p.out_time_s,
            p.percent.map(|x| format!("{x:.0} %")).unwrap_or_default()
        ),
        _ => println!(
            "  state: {}{}",
            job.state.as_str(),
            job.node
                .as_deref()
                .map(|n| format!(" (attempt {} on {n})", job.attempt))
                .unwrap_or_default()
        ),
    }
}

fn print_result(job: &Job) {
    println!(
        "result: {} (isolation: {})",
        job.state.as_str(),
        match job.isolation {
            Some(Isolation::CgroupV1) => "cgroup v1",
            Some(Isolation::CgroupV2) => "cgroup v2",
            Some(Isolation::None) | None => "nice only",
        }
    );
    if let Some(r) = &job.result {
        println!(
            "  {} frames in {:.2} s, {:.1} fps, speed {}",
            r.frames,
            r.wall_s,
            r.avg_fps,
            r.speed.map(|s| format!("{s:.2}x")).unwrap_or("n/a".into())
        );
    }
    match &job.energy {
        Some(e) => println!(
            "  energy: {:.2} J, {:.2} W mean, source {}{}",
            e.energy_joules,
            e.mean_power_watts,
            e.energy_source,
            if e.estimate { " (an estimate)" } else { "" }
        ),
        None => println!("  energy: not measured"),
    }
    if let Some(f) = &job.failure {
        println!("  failure: {:?}: {}", f.reason, f.message);
        for line in &f.stderr_tail {
            println!("    {line}");
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("embed example failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(true): the job succeeded and nothing was left behind.
async fn run() -> Result<bool, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    // Unique per process: a node sweeps its cgroup parent when it starts.
    let node_id = format!("embed-{}", std::process::id());
    let (app, app_done) = Actor::spawn(
        None,
        App,
        AppArgs {
            data_dir: dir.path().to_path_buf(),
            node_id: node_id.clone(),
        },
    )
    .await?;
    let (scheduler, node) = ractor::call!(app, AppMsg::Children)?;

    let spec = parse_job_request(JOB.as_bytes(), &MediaRoots::new(&[])?)?;
    let job = embed::submit(&scheduler, spec).await?;
    println!("submitted job {}", job.id);
    let mut updates = embed::subscribe(&scheduler, &job.id).await?;
    let watch = async {
        let mut last = None;
        while let Some(update) = updates.next().await {
            print_update(update.kind, &update.job);
            last = Some(update.job);
        }
        last
    };
    let last = tokio::time::timeout(JOB_DEADLINE, watch).await;
    drop(updates);

    app.cast(AppMsg::Shutdown)?;
    tokio::time::timeout(Duration::from_secs(60), app_done).await??;

    let Ok(Some(job)) = last else {
        eprintln!("the job did not finish within {JOB_DEADLINE:?}");
        return Ok(false);
    };
    print_result(&job);

    let job_cgroup = format!("job-{}-{}", job.id, job.token);
    let node_parent = format!("{CGROUP_PARENT}/{node_id}");
    let checks = [
        ("node stopped", node.get_status() == ActorStatus::Stopped),
        (
            "scheduler stopped",
            scheduler.get_status() == ActorStatus::Stopped,
        ),
        ("job cgroup gone", !cgroup_exists(&node_parent, &job_cgroup)),
        ("node cgroup gone", !cgroup_exists(CGROUP_PARENT, &node_id)),
    ];
    for (what, ok) in checks {
        println!("check: {what}: {}", if ok { "yes" } else { "NO" });
    }
    let clean = checks.iter().all(|(_, ok)| *ok);
    Ok(job.state == JobState::Succeeded && clean)
}
