//! Turns a handshaken [`Link`] into two channels of frames, so the actors
//! hold the same kind of link end whether the other tree is in the same
//! process or across the network.
//!
//! - Frames read from the stream go to the returned receiver; a malformed or
//!   oversized frame closes the connection with a reason, and the receiver
//!   then ends, which the owning actor sees as the link closing.
//! - Frames sent on the returned sender are written to the stream; when the
//!   sender is dropped, the stream is finished and the connection closed.

use tokio::sync::mpsc;

use crate::endpoint::{close, recv_frame, Link};
use crate::frame;

/// How long a closing link waits for its last frames to be acknowledged.
const FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Frames in flight per direction before a sender waits.
pub const BRIDGE_CAPACITY: usize = 1024;

/// Start pumping. `first` frames are delivered before anything read from
/// the stream (the master re-delivers the handshake's hello this way).
pub fn bridge(link: Link, first: Vec<Vec<u8>>) -> (mpsc::Sender<Vec<u8>>, mpsc::Receiver<Vec<u8>>) {
    let (in_tx, in_rx) = mpsc::channel(BRIDGE_CAPACITY);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(BRIDGE_CAPACITY);
    let Link {
        connection,
        mut send,
        mut recv,
    } = link;
    let reader_conn = connection.clone();
    tokio::spawn(async move {
        for f in first {
            if in_tx.send(f).await.is_err() {
                return;
            }
        }
        loop {
            match recv_frame(&mut recv).await {
                Ok(Some(f)) => {
                    if in_tx.send(f).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(frame::FrameError::Io(e)) => {
                    tracing::debug!(error = %e, "link read ended");
                    return;
                }
                Err(e) => {
                    let why = format!("malformed frame: {e}");
                    tracing::warn!(remote = %reader_conn.remote_address(), "{why}; closing the connection");
                    reader_conn.close(close::MALFORMED_FRAME, why.as_bytes());
                    return;
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(f) = out_rx.recv().await {
            if let Err(e) = frame::write_frame(&mut send, &f).await {
                tracing::debug!(error = %e, "link write ended");
                break;
            }
        }
        // Let the last frames (a worker's final results) reach the peer
        // before the close, which would discard unacknowledged data.
        if send.finish().is_ok() {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, send.stopped()).await;
        }
        // Not over an error already recorded: quinn's close() replaces it
        // with LocallyClosed, and the owner wants the real cause (a
        // stateless reset from a restarted peer, a timeout).
        if connection.close_reason().is_none() {
            connection.close(close::NORMAL, b"link closed");
        }
    });
    (out_tx, in_rx)
}
