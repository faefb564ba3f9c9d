//! A child actor that serves on a socket, as its supervisor sees it: spawned,
//! recognised by its cell in supervision events, asked where it listens,
//! stopped; nothing of its type.
//!
//! The `SchedulerActor` supervises the HTTP API's actor
//! ([`crate::admin::AdminActor`]), while the HTTP layer sends the scheduler
//! its messages. Through this trait the scheduler spawns and restarts that
//! actor without importing the HTTP layer, so the dependency goes one way
//! only: `admin`/`http` → `scheduler` → `supervised`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use ractor::{ActorCell, ActorProcessingErr, ActorRef, Message};

/// A started child: its cell and the address it serves on.
#[derive(Debug, Clone)]
pub struct ServingChildRef {
    /// Its cell: compare with a supervision event's, stop it.
    pub cell: ActorCell,
    /// Where it listens (the bound address, port 0 resolved).
    pub local_addr: SocketAddr,
}

/// How a supervisor whose messages are `M` starts a child that serves on a
/// socket. The supervisor keeps the spec and calls [`ServingChild::spawn`]
/// again to restart the child.
pub trait ServingChild<M: Message>: Send + Sync + 'static {
    /// Spawns the child linked to `supervisor` and returns once it listens.
    fn spawn(
        &self,
        supervisor: ActorRef<M>,
    ) -> Pin<Box<dyn Future<Output = Result<ServingChildRef, ActorProcessingErr>> + Send + '_>>;
}
