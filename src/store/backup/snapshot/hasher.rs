//! Hashes cloned objects on worker threads. A clone costs no copy, so on a
//! filesystem with reflinks reading each new file once to hash it is what a
//! snapshot spends its time on; several are read at once, because the disk
//! and the cores each take more than one reader. The copy waits for the
//! digests at the end of each pass ([`Hasher::finish`]), so the final pass
//! never has the first pass's reading left to do while the services are stopped.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use super::objects::{self, Incoming};

/// At least this many readers, however few the cores: a disk serves several
/// reads at once faster than one after the other.
const FEWEST_WORKERS: usize = 4;
/// At most this many, whatever the machine: beyond it the disk, not the CPU, decides.
const MOST_WORKERS: usize = 8;

/// The digests being computed, by ticket.
pub(super) struct Hasher {
    jobs: Option<SyncSender<(u64, Incoming)>>,
    done: Receiver<(u64, io::Result<String>)>,
    workers: Vec<JoinHandle<()>>,
    /// Set when the snapshot is dropped unfinished: what is still queued is not read.
    abandoned: Arc<AtomicBool>,
    /// Tickets handed out and not collected, with the file each is for (for the error).
    outstanding: HashMap<u64, PathBuf>,
}

impl Hasher {
    pub(super) fn start() -> Hasher {
        let count =
            thread::available_parallelism().map_or(FEWEST_WORKERS, |n| n.get()).clamp(FEWEST_WORKERS, MOST_WORKERS);
        // A short queue: each waiting job holds an open file.
        let (jobs, queue) = mpsc::sync_channel::<(u64, Incoming)>(count * 2);
        let queue = Arc::new(Mutex::new(queue));
        let (report, done) = mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let workers = (0..count)
            .map(|_| {
                let (queue, report, abandoned) = (Arc::clone(&queue), report.clone(), Arc::clone(&abandoned));
                thread::spawn(move || loop {
                    let job = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ()));
                    let Ok((ticket, incoming)) = job else { return };
                    if abandoned.load(Ordering::Relaxed) {
                        continue;
                    }
                    if report.send((ticket, objects::name(incoming))).is_err() {
                        return;
                    }
                })
            })
            .collect();
        Hasher { jobs: Some(jobs), done, workers, abandoned, outstanding: HashMap::new() }
    }

    /// Hands a cloned object to the workers (waits while the queue is full);
    /// `shown` names its file in an error.
    pub(super) fn submit(&mut self, ticket: u64, incoming: Incoming, shown: PathBuf) -> io::Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(|| io::Error::other("the hashing workers are stopped"))?;
        jobs.send((ticket, incoming)).map_err(|_| io::Error::other("the hashing workers stopped"))?;
        self.outstanding.insert(ticket, shown);
        Ok(())
    }

    /// Every digest handed out since the last call, by ticket; the first
    /// failure, naming its file, once all have ended.
    pub(super) fn finish(&mut self) -> anyhow::Result<Vec<(u64, String)>> {
        let mut digests = Vec::with_capacity(self.outstanding.len());
        let mut failure = None;
        while !self.outstanding.is_empty() {
            let (ticket, named) =
                self.done.recv().map_err(|_| anyhow::anyhow!("the hashing workers ended before their work"))?;
            let shown = self.outstanding.remove(&ticket).unwrap_or_default();
            match named {
                Ok(sha256) => digests.push((ticket, sha256)),
                Err(e) if failure.is_none() => {
                    failure = Some(anyhow::Error::new(e).context(format!("cannot back up {}", shown.display())))
                }
                Err(_) => {}
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(digests),
        }
    }
}

impl Drop for Hasher {
    /// Waits for the workers (what is still queued of an unfinished
    /// snapshot is dropped unread): nothing may still write into a snapshot
    /// that is being removed.
    fn drop(&mut self) {
        if !self.outstanding.is_empty() {
            self.abandoned.store(true, Ordering::Relaxed);
        }
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}
