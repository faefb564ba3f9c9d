//! The link between a master tree and a worker tree.
//!
//! Both ends exchange encoded [`wire`](ffrtmp_runtime::wire) messages as byte
//! frames. The QUIC bridge (`ffrtmp_transport_quic::bridge`) provides the two
//! halves over a connection; [`in_process_pair`] provides them as a pair of
//! bounded channels, for an embedding application that wants both trees in
//! one process without QUIC ([`crate::embed::link_in_process`] sends the
//! node's hello as the first frame, hands the master end to the scheduler and
//! the worker end to the `NodeActor`). The actors never know which one they
//! hold.

use tokio::sync::mpsc;

/// Frames in flight per direction before a sender waits.
const LINK_CAPACITY: usize = 1024;

/// One end of a link: frames out, frames in. Dropping it closes the link.
#[derive(Debug)]
pub struct LinkEnd {
    /// Frames to the other end, each one encoded wire message.
    pub tx: mpsc::Sender<Vec<u8>>,
    /// Frames from the other end; `None` once the other end is dropped.
    pub rx: mpsc::Receiver<Vec<u8>>,
}

/// A connected pair of in-process ends: `(master end, worker end)`.
pub fn in_process_pair() -> (LinkEnd, LinkEnd) {
    let (to_worker_tx, to_worker_rx) = mpsc::channel(LINK_CAPACITY);
    let (to_master_tx, to_master_rx) = mpsc::channel(LINK_CAPACITY);
    (
        LinkEnd {
            tx: to_worker_tx,
            rx: to_master_rx,
        },
        LinkEnd {
            tx: to_master_tx,
            rx: to_worker_rx,
        },
    )
}
