//! The HTTP API's connection loop: hyper's HTTP/1 server under a cap on open
//! connections, with a header read timeout (docs/API.md, "Connections").
//!
//! `axum::serve` has no knobs for either: it takes every connection the
//! kernel hands it (1,100 idle sockets used up the process's descriptors, so
//! FFmpeg could not be started) and never times out a client that trickles
//! its headers. hyper's own `header_read_timeout` does the second (it runs
//! from the moment hyper waits for a request head, so an idle connection and
//! an idle keep-alive connection are closed too); the cap is here:
//! - at most [`HttpLimits::max_connections`] connections are open at once;
//! - at the cap, a new connection takes the place of the oldest one that has
//!   not sent a single byte (a flood of idle sockets cannot lock out a client
//!   that sends its request at once); if every open connection has spoken,
//!   the new one gets a `503` (`too_many_connections`) and is closed.
//!
//! Accepting goes on at the cap, so the listen backlog never fills and a
//! refused client hears so at once; the descriptors the API holds stay
//! below the cap plus one. A failed `accept` (`EMFILE`, say) is logged and
//! retried after a short pause instead of ending the server.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::HttpLimits;

/// What a refused connection is told before it is closed.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
connection: close\r\n\
retry-after: 1\r\n\
content-length: 109\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections; try again later\",\"field\":null}}";

/// Pause after a failed `accept` (out of descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning this often about refused connections.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// One open connection, as the accept loop sees it.
struct Open {
    /// Set once the client has sent a byte.
    spoke: Arc<AtomicBool>,
    /// Closes the connection when notified.
    evict: Arc<Notify>,
}

/// The open connections, oldest first (ids grow).
#[derive(Default)]
struct Table {
    next_id: u64,
    open: BTreeMap<u64, Open>,
}

impl Table {
    /// Make room for one more connection under `cap`: `false` if every open
    /// connection has spoken (the new one is refused), else `true`, having
    /// evicted the oldest silent one if the table was full.
    fn make_room(&mut self, cap: usize) -> bool {
        if self.open.len() < cap {
            return true;
        }
        let silent = self
            .open
            .iter()
            .find(|(_, o)| !o.spoke.load(Ordering::Relaxed))
            .map(|(id, _)| *id);
        match silent.and_then(|id| self.open.remove(&id)) {
            Some(o) => {
                o.evict.notify_one();
                tracing::debug!("HTTP connection cap reached: closed the oldest silent connection");
                true
            }
            None => false,
        }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves; then wait for the
/// requests in flight.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let cap = limits.max_connections.max(1);
    let table = Arc::new(Mutex::new(Table::default()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP API: accept failed; retrying");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
        };
        let spoke = Arc::new(AtomicBool::new(false));
        let evict = Arc::new(Notify::new());
        let id = {
            let mut t = table.lock().unwrap_or_else(|p| p.into_inner());
            if !t.make_room(cap) {
                drop(t);
                refuse(stream);
                if last_warning.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        max_http_connections = cap,
                        "HTTP API: connection refused, every allowed connection is in use \
                         (--max-http-connections); further refusals are logged at most every 10 s"
                    );
                }
                continue;
            }
            let id = t.next_id;
            t.next_id += 1;
            t.open.insert(
                id,
                Open {
                    spoke: spoke.clone(),
                    evict: evict.clone(),
                },
            );
            id
        };
        let io = TokioIo::new(Watched {
            inner: stream,
            spoke,
        });
        let conn =
            graceful.watch(builder.serve_connection(io, TowerToHyperService::new(app.clone())));
        let table = table.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                () = evict.notified() => {}
            }
            table
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .open
                .remove(&id);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Tell a connection over the cap why, if its socket takes the bytes at once,
/// and close it.
fn refuse(stream: TcpStream) {
    // A fresh socket's send buffer is empty: this does not block, and a
    // short write only cuts the courtesy short.
    let _ = stream.try_write(REFUSED);
}

/// Errors of one connection that `accept` reports; the listener is fine.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A TCP stream that notes whether its client has sent anything.
struct Watched {
    inner: TcpStream,
    spoke: Arc<AtomicBool>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.spoke.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(REFUSED).expect("ASCII");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(v["error"]["code"], "too_many_connections");
        assert!(v["error"]["field"].is_null());
    }

    #[test]
    fn at_the_cap_the_oldest_silent_connection_makes_room() {
        let mut t = Table::default();
        let add = |t: &mut Table, spoke: bool| {
            let id = t.next_id;
            t.next_id += 1;
            let evict = Arc::new(Notify::new());
            t.open.insert(
                id,
                Open {
                    spoke: Arc::new(AtomicBool::new(spoke)),
                    evict: evict.clone(),
                },
            );
            evict
        };
        let _a = add(&mut t, true);
        let _b = add(&mut t, false);
        let _c = add(&mut t, false);
        assert!(t.make_room(4), "under the cap");
        assert_eq!(t.open.len(), 3);
        assert!(t.make_room(3), "room made");
        assert_eq!(t.open.keys().copied().collect::<Vec<_>>(), [0, 2], "b went");
        t.open
            .get(&2)
            .expect("c")
            .spoke
            .store(true, Ordering::Relaxed);
        assert!(!t.make_room(2), "every connection has spoken: refused");
        assert_eq!(t.open.len(), 2);
    }
}
