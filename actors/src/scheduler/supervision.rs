//! What the scheduler supervises: one `NodeLink` per worker (never
//! restarted: its end is the lost-node path of the core) and the
//! `AdminActor` (restarted with the same arguments, at most
//! [`ADMIN_MAX_RESTARTS`](super::ADMIN_MAX_RESTARTS) times in
//! [`ADMIN_RESTART_WINDOW`](super::ADMIN_RESTART_WINDOW); then the
//! scheduler stops itself).

use ractor::{ActorProcessingErr, ActorRef, SupervisionEvent};

use super::driver::{clock, last_heard, SchedulerState};
use super::SchedulerMsg;
use crate::now_ms;

impl SchedulerState {
    pub(super) async fn spawn_admin(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(args) = self.admin_args.clone() {
            self.admin = Some(args.spawn(myself.clone()).await?);
        }
        Ok(())
    }

    pub(super) async fn supervision_event(
        &mut self,
        myself: &ActorRef<SchedulerMsg>,
        evt: SupervisionEvent,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match &evt {
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell.clone(),
                reason.clone().unwrap_or_else(|| "stopped".into()),
            ),
            SupervisionEvent::ActorFailed(cell, err) => (cell.clone(), format!("failed: {err}")),
            _ => return Ok(()),
        };
        let id = cell.get_id();
        if let Some(link) = self.by_actor.remove(&id) {
            let heard = self
                .links
                .remove(&link)
                .map(|s| last_heard(&s))
                .unwrap_or(0);
            // The core acts only if this link is still the node's current one.
            let r = self.core.link_ended(link, heard, &why, clock());
            return self.settle(myself, r).await;
        }
        if self.admin.as_ref().map(|a| a.cell.get_id()) == Some(id) {
            self.admin = None;
            if self.admin_restarts.record_restart(now_ms()) {
                tracing::error!("HTTP API actor ended ({why}); restarting it");
                self.spawn_admin(myself).await?;
            } else {
                tracing::error!("HTTP API actor ended ({why}) too often; stopping the scheduler");
                myself.stop(Some(format!("admin restart intensity exceeded: {why}")));
            }
        }
        Ok(())
    }
}
