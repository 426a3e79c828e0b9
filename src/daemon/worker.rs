//! The worker: the one upgrade at a time, run on its own thread through the
//! same pipeline as `upgraderd upgrade`, reaped when it ends, and the queue's
//! bookkeeping around it (requests settled, interrupted ones queued again).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Result;

use super::bookkeeping::{after_restart, ended_before_restart, settle, Settled};
use super::{Daemon, Worker, LOCK_RETRY};
use crate::engine::{pipeline, Request};
use crate::states::{RequestState, Status};
use crate::version::Target;

impl Daemon {
    /// Starts the oldest queued request when nothing runs.
    pub(super) fn start_next(&mut self) {
        if self.worker.is_some() || Instant::now() < self.start_after {
            return;
        }
        let queued = match self.db.next_queued() {
            Ok(Some(queued)) => queued,
            Ok(None) => return,
            Err(e) => return self.ui.warn(format!("cannot read the request queue: {e:#}")),
        };
        if let Err(e) = self.db.set_request_state(&queued.upgrade_id, RequestState::Running, None) {
            return self.ui.warn(format!("cannot update the request queue: {e:#}"));
        }
        let request = Request {
            target: match Target::parse(&queued.version) {
                Ok(target) => target,
                Err(why) => {
                    // Taken in when it was read; a queue from another upgraderd may hold anything.
                    self.ui.warn(format!("upgrade {} cannot run: {why}", queued.upgrade_id));
                    let _ = self.db.set_request_state(&queued.upgrade_id, RequestState::Done, Some(&why));
                    return;
                }
            },
            backup: queued.backup,
            force: queued.force,
            dry_run: false,
            initiated_by: queued.source.clone(),
            strategy: self.config.strategy,
            upgrade_id: Some(queued.upgrade_id.clone()),
            shutdown: Some(self.shutdown.clone()),
        };
        self.notifier.status(&format!("upgrading to {} (upgrade {})", queued.version, queued.upgrade_id));
        let result = Arc::new(Mutex::new(None));
        let (config, ui, waker, slot) = (self.config.clone(), self.ui.clone(), self.waker.clone(), result.clone());
        let thread = std::thread::Builder::new()
            .name("upgrade".into())
            // Room for walking data trees up to their depth limit.
            .stack_size(16 << 20)
            .spawn(move || {
                let outcome = pipeline::run(&config, &ui, &request);
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                waker.wake();
            })
            .expect("spawning the upgrade thread");
        self.worker = Some(Worker { upgrade_id: queued.upgrade_id, result, thread });
    }

    /// Collects a finished upgrade and records what became of its request.
    pub(super) fn reap_worker(&mut self) {
        let finished = self.worker.as_ref().is_some_and(|w| w.result.lock().map(|r| r.is_some()).unwrap_or(true));
        if !finished {
            return;
        }
        let worker = self.worker.take().expect("checked above");
        let _ = worker.thread.join();
        let result = worker.result.lock().unwrap_or_else(|e| e.into_inner()).take();
        let id = worker.upgrade_id;
        let settled = settle(&id, result);
        match &settled {
            Settled::Ended(terminal) => self.ui.info(format!("upgrade {id} ended {terminal}")),
            Settled::WaitForLock(why) => {
                self.ui.info(format!("another upgrader holds the lock; upgrade {id} waits ({why})"));
                self.start_after = Instant::now() + LOCK_RETRY;
            }
            Settled::WaitForEngine(why) => {
                self.ui.warn(format!("upgrade {id} waits for the Docker engine: {why}"));
                self.start_after = Instant::now() + LOCK_RETRY;
                self.unrecovered = true;
            }
            Settled::Interrupted(why) => {
                self.ui.warn(format!("upgrade {id}: {why}"));
                // Every unfinished upgrade is recovered at the next pass, not only stale ones.
                self.unrecovered = true;
            }
            Settled::CouldNotRun(reason) => {
                self.ui.warn(format!("upgrade {id} could not run: {reason}"));
                self.write_status(&id, Status::Failed, "Upgrade could not start", Some(reason));
            }
        }
        let (state, reason) = settled.request_state();
        if let Err(e) = self.db.set_request_state(&id, state, reason.as_deref()) {
            self.ui.warn(format!("cannot update the request queue: {e:#}"));
        }
        self.notifier.status(&self.idle_status());
    }

    /// Requests a killed daemon left `running` although their upgrade had ended:
    /// the daemon died between the end and its bookkeeping. They are done.
    pub(super) fn settle_finished_requests(&mut self) -> Result<()> {
        for request in self.db.requests()?.into_iter().filter(|r| r.state == RequestState::Running) {
            if let Some((state, reason)) = ended_before_restart(self.db.get(&request.upgrade_id)?.as_ref()) {
                self.db.set_request_state(&request.upgrade_id, state, reason.as_deref())?;
            }
        }
        Ok(())
    }

    /// Requests a killed daemon left `running`: done when their upgrade got past
    /// its switch (recovery has rolled it back), queued again when it had changed nothing.
    pub(super) fn requeue_interrupted_requests(&mut self) -> Result<()> {
        for request in self.db.requests()?.into_iter().filter(|r| r.state == RequestState::Running) {
            let row = self.db.get(&request.upgrade_id)?;
            let (state, reason) = after_restart(row.as_ref());
            if state == RequestState::Queued {
                self.ui.info(format!(
                    "upgrade {} was interrupted before its switch; running it again",
                    request.upgrade_id
                ));
            }
            self.db.set_request_state(&request.upgrade_id, state, reason.as_deref())?;
        }
        Ok(())
    }
}
