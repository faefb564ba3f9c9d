//! `AdminActor`: owns the HTTP API (axum, [`crate::http`]) under the
//! scheduler's supervision.
//!
//! The actor binds the listener in `pre_start` and serves until it stops;
//! if the server task dies, the actor stops and the scheduler's restart
//! policy applies. The scheduler starts it through
//! [`ServingChild`](crate::supervised::ServingChild), which [`AdminArgs`]
//! implements. The routes, handlers and types are [`crate::http`]'s; the
//! names re-exported here keep `ffrtmp_actors::admin::...` paths working.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use ffrtmp_os::store::Store;
use ffrtmp_runtime::spec::MediaRoots;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::events::JobEvents;
use crate::http::{router, Api};
use crate::output_claims::OutputClaims;
use crate::scheduler::SchedulerMsg;
use crate::supervised::{ServingChild, ServingChildRef};

pub use crate::http::{
    openapi, routes, AttemptLog, ConfigurationProgress, ErrorBody, ExperimentList,
    ExperimentStatus, ExperimentSummary, HttpLimits, JobLogs, JobPage, NodeList, Route, Status,
    DEFAULT_HTTP_READ_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_HTTP_CONNECTIONS,
};

/// How the HTTP API is set up.
#[derive(Clone)]
pub struct AdminArgs {
    /// Where to listen (port 0: any; [`AdminMsg::LocalAddr`] tells which).
    pub bind: SocketAddr,
    /// The scheduler's job store; handlers read it directly and store new
    /// submissions themselves (group commit), never transitions.
    pub store: Store,
    /// The scheduler's update channel, for the SSE route.
    pub events: JobEvents,
    /// The only folders job inputs and outputs may name.
    pub media_roots: Arc<MediaRoots>,
    /// The ffprobe binary: a file input's container is probed at
    /// submission and refused unless on the allow-list
    /// (`ffrtmp_os::probe::check_input_format`); `None`: only the worker probes.
    pub ffprobe: Option<std::path::PathBuf>,
    /// Bearer key required on every route but `/healthz` and `/readyz`.
    pub api_key: Option<String>,
    /// Larger request bodies are refused with 413.
    pub max_body_bytes: usize,
    /// The most jobs one experiment may expand to (`--max-experiment-jobs`).
    pub max_experiment_jobs: u64,
    /// Connection cap and read timeouts.
    pub limits: HttpLimits,
    /// The node id of a standalone node's own worker, the only worker it can
    /// have: draining it is refused (`409`).
    pub standalone_worker: Option<String>,
    /// What `GET /metrics` renders; without it the route answers 404.
    pub metrics: Option<PrometheusHandle>,
    /// Filled in by the scheduler that supervises this actor.
    pub scheduler: Option<ActorRef<SchedulerMsg>>,
    /// The local worker, for the test-only panic hook (used only when the
    /// `fault-injection` feature is compiled in).
    pub fault_node: Option<ActorRef<crate::node::NodeMsg>>,
}

/// Messages the [`AdminActor`] handles.
pub enum AdminMsg {
    /// Replies with the address the API listens on.
    LocalAddr(RpcReplyPort<SocketAddr>),
    /// The server task ended on its own.
    ServerDied(String),
}

/// The admin actor's state (public only because ractor's `Actor` trait
/// names it): the listener's address and the server task.
pub struct AdminState {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
}

impl Drop for AdminState {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.abort();
    }
}

/// Serves the HTTP API ([`routes`]) on [`AdminArgs::bind`]. Spawned by the
/// `SchedulerActor` under itself when the scheduler is given
/// [`AdminArgs`] (as its [`ServingChild`]); it stops when its server task dies, and the scheduler
/// restarts it (at most [`crate::scheduler::ADMIN_MAX_RESTARTS`] times a
/// minute).
pub struct AdminActor;

impl Actor for AdminActor {
    type Msg = AdminMsg;
    type State = AdminState;
    type Arguments = AdminArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<AdminMsg>,
        args: AdminArgs,
    ) -> Result<AdminState, ActorProcessingErr> {
        let scheduler = args
            .scheduler
            .clone()
            .ok_or("AdminActor needs its scheduler")?;
        let listener = tokio::net::TcpListener::bind(args.bind).await?;
        let addr = listener.local_addr()?;
        let app = router(Arc::new(Api {
            store: args.store.clone(),
            events: args.events.clone(),
            roots: args.media_roots.clone(),
            ffprobe: args.ffprobe.clone(),
            api_key: args.api_key.clone(),
            metrics: args.metrics.clone(),
            scheduler,
            max_body_bytes: args.max_body_bytes,
            max_experiment_jobs: args.max_experiment_jobs,
            body_timeout: args.limits.body_timeout,
            standalone_worker: args.standalone_worker.clone(),
            claims: OutputClaims::load(&args.store)?,
            #[cfg(feature = "fault-injection")]
            fault_node: args.fault_node.clone(),
        }))
        .layer(DefaultBodyLimit::max(args.max_body_bytes));
        let (tx, rx) = oneshot::channel::<()>();
        let me = myself.clone();
        let limits = args.limits;
        let server = tokio::spawn(async move {
            crate::http::server::serve(listener, app, limits, async {
                let _ = rx.await;
            })
            .await;
            let _ = me.cast(AdminMsg::ServerDied("server stopped".to_string()));
        });
        tracing::info!(%addr, "HTTP API listening");
        Ok(AdminState {
            addr,
            shutdown: Some(tx),
            server,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AdminMsg>,
        msg: AdminMsg,
        state: &mut AdminState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AdminMsg::LocalAddr(reply) => {
                let _ = reply.send(state.addr);
            }
            AdminMsg::ServerDied(why) => {
                if state.shutdown.is_some() {
                    myself.stop(Some(why));
                }
            }
        }
        Ok(())
    }
}

impl ServingChild<SchedulerMsg> for AdminArgs {
    /// An [`AdminActor`] linked to `supervisor`, which it also sends its
    /// API calls to ([`AdminArgs::scheduler`] is filled in).
    fn spawn(
        &self,
        supervisor: ActorRef<SchedulerMsg>,
    ) -> Pin<Box<dyn Future<Output = Result<ServingChildRef, ActorProcessingErr>> + Send + '_>>
    {
        Box::pin(async move {
            let mut args = self.clone();
            args.scheduler = Some(supervisor.clone());
            let (admin, _) =
                Actor::spawn_linked(None, AdminActor, args, supervisor.get_cell()).await?;
            let local_addr = ractor::call!(admin, AdminMsg::LocalAddr)?;
            Ok(ServingChildRef {
                cell: admin.get_cell(),
                local_addr,
            })
        })
    }
}
