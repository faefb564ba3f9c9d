//! `NodeLink`: the master-side proxy of one remote `NodeActor`.
//!
//! Spawned linked under `SchedulerActor` for each link. It forwards frames in
//! both directions and ends when its link ends, so the scheduler learns of a
//! lost worker as a supervision event, not by polling.
//!
//! It answers the worker's lease `Ping`s itself, and records when it last
//! heard from the worker (`last_heard`, shared with the scheduler), from
//! which the scheduler fences the node's attempts once the link is gone.
//!
//! The scheduler spawns links, so a link does not import the scheduler: it
//! reports through [`LinkOwner`] ([`LinkReport`]s), which the scheduler's
//! `ActorRef` implements, and the dependency goes one way only:
//! `scheduler` → `node_link`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ffrtmp_runtime::model::NodeId;
use ffrtmp_runtime::wire::{self, AttemptRef, Capabilities, ToMaster, ToWorker, PROTOCOL_VERSION};
use ractor::{Actor, ActorProcessingErr, ActorRef, ActorStatus, Message, RpcReplyPort};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::link::LinkEnd;

/// The messages a [`NodeLink`] handles.
#[allow(
    clippy::large_enum_variant,
    reason = "each inbound frame is decoded into a ToMaster and moved here once; boxing it would add an allocation per frame to save stack on a message that is handled at once"
)]
pub enum NodeLinkMsg {
    /// A decoded frame from the worker (from the link's reader task). The
    /// first must be its hello; pings are answered here, the rest go to the
    /// scheduler as [`LinkReport::FromWorker`].
    Inbound(ToMaster),
    /// A message for the worker, from the scheduler (assign, cancel, kill,
    /// drain, acknowledge). The link stops if it cannot be sent.
    Outbound(ToWorker),
    /// The link ended (with why). Handled in order, after every inbound
    /// message before it.
    Closed(String),
}

/// What a [`NodeLink`] tells the actor it reports to (the scheduler, whose
/// messages convert from these).
pub enum LinkReport {
    /// Its worker said hello.
    NodeUp {
        /// What the worker said.
        hello: NodeHello,
        /// The link it said it on.
        link: ActorRef<NodeLinkMsg>,
    },
    /// A message from its worker about a job or itself.
    FromWorker {
        /// The worker it came from.
        node_id: NodeId,
        /// What it said.
        msg: ToMaster,
    },
    /// Reply once every message sent before this one has been handled.
    Sync(RpcReplyPort<()>),
}

/// Where a [`NodeLink`] reports: the scheduler, seen only as the actor
/// that takes [`LinkReport`]s, so that `node_link` does not import it.
pub trait LinkOwner: Send + Sync + 'static {
    /// Sends `report`; an error when the owner has stopped.
    fn report(&self, report: LinkReport) -> Result<(), ActorProcessingErr>;
    /// Whether the owner still runs (not stopping, not gone).
    fn is_running(&self) -> bool;
}

impl<M> LinkOwner for ActorRef<M>
where
    M: Message + From<LinkReport>,
{
    fn report(&self, report: LinkReport) -> Result<(), ActorProcessingErr> {
        Ok(self.cast(M::from(report))?)
    }

    fn is_running(&self) -> bool {
        self.get_status() == ActorStatus::Running
    }
}

/// How long a closing link waits for the scheduler to catch up.
const SYNC_TIMEOUT_MS: u64 = 5_000;

/// Resolves once `actor` is no longer running (it is stopping or gone).
/// ractor offers no notification for that short of supervising it, so this
/// looks every few milliseconds; it runs only while a link closes.
async fn stopping(actor: &dyn LinkOwner) {
    while actor.is_running() {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// What a [`NodeLink`] is started with (by the scheduler, on
/// its `AttachLink`).
pub struct NodeLinkArgs {
    /// The master's end of the link; the worker's hello is its first frame.
    pub link: LinkEnd,
    /// Where the worker's messages go; also the link's supervisor.
    pub scheduler: Box<dyn LinkOwner>,
    /// The lease granted with every `Pong`.
    pub lease_ms: u64,
}

/// A `NodeLink`'s state (private; public only because ractor's `Actor`
/// trait names it).
pub struct NodeLinkState {
    tx: mpsc::Sender<Vec<u8>>,
    reader: JoinHandle<()>,
    scheduler: Box<dyn LinkOwner>,
    node_id: Option<NodeId>,
    lease_ms: u64,
    last_heard: Arc<AtomicU64>,
}

impl Drop for NodeLinkState {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The master-side proxy of one worker's link: spawned linked under the
/// scheduler per link, it ends when the link ends (or the worker breaks the
/// protocol), which the scheduler sees as a supervision event.
pub struct NodeLink;

/// What the scheduler learns when a worker says hello.
#[derive(Debug, Clone)]
pub struct NodeHello {
    /// The worker's node id.
    pub node_id: NodeId,
    /// Jobs it runs at once.
    pub slots: u32,
    /// Its encoders (each passed a test encode), cores and memory.
    pub capabilities: Capabilities,
    /// Attempts the worker runs now.
    pub running: Vec<AttemptRef>,
    /// Attempts whose result waits in the worker's outbox.
    pub unacked: Vec<AttemptRef>,
    /// When this link last heard from the worker ([`crate::mono_ms`]).
    pub last_heard: Arc<AtomicU64>,
}

impl Actor for NodeLink {
    type Msg = NodeLinkMsg;
    type State = NodeLinkState;
    type Arguments = NodeLinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeLinkMsg>,
        args: NodeLinkArgs,
    ) -> Result<NodeLinkState, ActorProcessingErr> {
        let LinkEnd { tx, mut rx } = args.link;
        let me = myself.clone();
        let last_heard = Arc::new(AtomicU64::new(crate::mono_ms()));
        let heard = last_heard.clone();
        let reader = tokio::spawn(async move {
            let mut reason = "link closed".to_string();
            while let Some(frame) = rx.recv().await {
                heard.fetch_max(crate::mono_ms(), Ordering::AcqRel);
                match wire::decode::<ToMaster>(&frame) {
                    Ok(msg) => {
                        if me.cast(NodeLinkMsg::Inbound(msg)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        reason = format!("malformed frame from worker: {e}");
                        tracing::error!("{reason}; closing link");
                        break;
                    }
                }
            }
            let _ = me.cast(NodeLinkMsg::Closed(reason));
        });
        Ok(NodeLinkState {
            tx,
            reader,
            scheduler: args.scheduler,
            node_id: None,
            lease_ms: args.lease_ms,
            last_heard,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeLinkMsg>,
        msg: NodeLinkMsg,
        state: &mut NodeLinkState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeLinkMsg::Inbound(ToMaster::Hello {
                node_id,
                protocol_version,
                slots,
                capabilities,
                running,
                unacked,
            }) => {
                if protocol_version != PROTOCOL_VERSION {
                    let why = format!(
                        "worker {node_id} speaks protocol {protocol_version}, master speaks {PROTOCOL_VERSION}"
                    );
                    tracing::error!("{why}");
                    myself.stop(Some(why));
                    return Ok(());
                }
                // The transport checked the first hello against the
                // certificate; a second one could claim another node.
                if let Some(first) = &state.node_id {
                    let why = format!(
                        "worker {first} sent a second hello (as {node_id}): closing its link"
                    );
                    tracing::warn!("{why}");
                    myself.stop(Some(why));
                    return Ok(());
                }
                state.node_id = Some(node_id.clone());
                state.scheduler.report(LinkReport::NodeUp {
                    hello: NodeHello {
                        node_id,
                        slots,
                        capabilities,
                        running,
                        unacked,
                        last_heard: state.last_heard.clone(),
                    },
                    link: myself.clone(),
                })?;
            }
            NodeLinkMsg::Inbound(ToMaster::Ping { sent_ms }) => {
                // Answered here, on the live link only: renewal needs the
                // worker's ping to have arrived (docs/PROTOCOL.md, "Leases").
                let pong = ToWorker::Pong {
                    sent_ms,
                    lease_ms: state.lease_ms,
                };
                if state.tx.send(wire::encode(&pong)?).await.is_err() {
                    myself.stop(Some("link closed".into()));
                }
            }
            NodeLinkMsg::Inbound(msg) => match &state.node_id {
                Some(node_id) => state.scheduler.report(LinkReport::FromWorker {
                    node_id: node_id.clone(),
                    msg,
                })?,
                None => {
                    myself.stop(Some("worker spoke before its hello".into()));
                }
            },
            NodeLinkMsg::Closed(reason) => {
                // ractor delivers our termination to the scheduler ahead of
                // ordinary messages. Wait until it has processed everything
                // we forwarded (a worker's last results), so the lost-node
                // path that our termination starts never overtakes them.
                // Unless the scheduler is stopping: its `post_stop` waits
                // for its children, us included, and answers nothing
                // meanwhile (that wait used to hold a master's SIGTERM up
                // for the whole timeout, ~5 s, in about one stop in three).
                let scheduler = &*state.scheduler;
                let sync = async {
                    let (tx, rx) = ractor::concurrency::oneshot();
                    if scheduler.report(LinkReport::Sync(tx.into())).is_ok() {
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_millis(SYNC_TIMEOUT_MS),
                            rx,
                        )
                        .await;
                    }
                };
                tokio::select! {
                    () = sync => {}
                    () = stopping(scheduler) => {}
                }
                myself.stop(Some(reason));
            }
            NodeLinkMsg::Outbound(msg) => {
                let frame = wire::encode(&msg)?;
                if state.tx.send(frame).await.is_err() {
                    myself.stop(Some("link closed".into()));
                }
            }
        }
        Ok(())
    }
}
