//! A UDP relay the test controls, between workers and the master, to cut a
//! link (issue 5): while cut, every datagram is dropped both ways, as a
//! partition would, and nothing closes any socket. Loopback only.
//!
//! Each client address (a worker's QUIC socket) gets its own upstream
//! socket, so the master sees one stable peer address per worker socket; a
//! restarted worker (new port) simply gets a new one.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a relay thread blocks before looking at its stop flag.
const POLL: Duration = Duration::from_millis(50);

pub struct Relay {
    /// Where workers send: give this to `--master`.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    /// Datagrams dropped while cut (both directions).
    dropped: Arc<AtomicU64>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// A relay on 127.0.0.1 forwarding to `upstream` (a loopback address).
    pub fn start(upstream: SocketAddr) -> Relay {
        assert!(upstream.ip().is_loopback(), "loopback only: {upstream}");
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind relay"));
        front.set_read_timeout(Some(POLL)).expect("timeout");
        let addr = front.local_addr().expect("relay addr");
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let threads: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (c, s, d, t) = (cut.clone(), stop.clone(), dropped.clone(), threads.clone());
        let main = std::thread::Builder::new()
            .name("relay-front".into())
            .spawn(move || {
                let mut ups: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
                let mut buf = vec![0u8; 65536];
                while !s.load(Ordering::SeqCst) {
                    let Ok((n, client)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    if c.load(Ordering::SeqCst) {
                        d.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    let up = ups.entry(client).or_insert_with(|| {
                        let up = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind upstream"));
                        up.connect(upstream).expect("connect upstream");
                        up.set_read_timeout(Some(POLL)).expect("timeout");
                        let (up2, front2) = (up.clone(), front.clone());
                        let (c2, s2, d2) = (c.clone(), s.clone(), d.clone());
                        let back = std::thread::Builder::new()
                            .name("relay-back".into())
                            .spawn(move || {
                                let mut buf = vec![0u8; 65536];
                                while !s2.load(Ordering::SeqCst) {
                                    let Ok(n) = up2.recv(&mut buf) else {
                                        continue;
                                    };
                                    if c2.load(Ordering::SeqCst) {
                                        d2.fetch_add(1, Ordering::SeqCst);
                                        continue;
                                    }
                                    let _ = front2.send_to(&buf[..n], client);
                                }
                            })
                            .expect("relay thread");
                        t.lock().unwrap_or_else(|e| e.into_inner()).push(back);
                        up
                    });
                    // Refused (the master is down): the datagram is lost, as
                    // on a real network.
                    let _ = up.send(&buf[..n]);
                }
            })
            .expect("relay thread");
        threads.lock().unwrap_or_else(|e| e.into_inner()).push(main);
        Relay {
            addr,
            cut,
            stop,
            dropped,
            threads,
        }
    }

    /// Cut (`true`) or restore (`false`) the link.
    pub fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }

    /// Datagrams dropped by cuts so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}
