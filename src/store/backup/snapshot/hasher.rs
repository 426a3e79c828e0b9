//! Hashes cloned objects on worker threads. A clone costs no copy, so on a
//! filesystem with reflinks reading each new file once to hash it is what a
//! snapshot spends its time on; several are read at once, because the disk
//! and the cores each take more than one reader. The copy waits for the
//! digests at the end of each pass ([`Hasher::finish`]), so the final pass
//! never has the first pass's reading left to do while the services are stopped.

use std::collections::HashMap;
use std::io;
use std::panic::{self, AssertUnwindSafe};
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
    pub(super) fn start() -> io::Result<Hasher> {
        let count =
            thread::available_parallelism().map_or(FEWEST_WORKERS, |n| n.get()).clamp(FEWEST_WORKERS, MOST_WORKERS);
        // A short queue: each waiting job holds an open file.
        let (jobs, queue) = mpsc::sync_channel::<(u64, Incoming)>(count * 2);
        let queue = Arc::new(Mutex::new(queue));
        let (report, done) = mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let workers = (0..count)
            .map(|n| {
                let (queue, report, abandoned) = (Arc::clone(&queue), report.clone(), Arc::clone(&abandoned));
                thread::Builder::new().name(format!("upgraderd-hash-{n}")).spawn(move || loop {
                    let job = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ()));
                    let Ok((ticket, incoming)) = job else { return };
                    if abandoned.load(Ordering::Relaxed) {
                        continue;
                    }
                    // A panic must still report its ticket: `finish` waits for every one.
                    let named = panic::catch_unwind(AssertUnwindSafe(|| objects::name(incoming)))
                        .unwrap_or_else(|_| Err(io::Error::other("hashing the stored copy failed unexpectedly")));
                    if report.send((ticket, named)).is_err() {
                        return;
                    }
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Hasher { jobs: Some(jobs), done, workers, abandoned, outstanding: HashMap::new() })
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use sha2::{Digest as _, Sha256};

    use super::*;

    /// Writes `content` as the temporary object `incoming-<ticket>`, ready to be named.
    fn incoming(objects: &Path, ticket: u64, content: &[u8]) -> Incoming {
        let temporary = objects.join(format!("incoming-{ticket}"));
        fs::write(&temporary, content).unwrap();
        Incoming::written(temporary, content.len() as u64).unwrap()
    }

    fn sha256(content: &[u8]) -> String {
        Sha256::digest(content).iter().map(|b| format!("{b:02x}")).collect()
    }

    fn content(ticket: u64) -> Vec<u8> {
        // Every other ticket holds the same bytes: several workers name one content at once.
        match ticket % 2 {
            0 => vec![7u8; 100_000],
            _ => format!("file {ticket}").repeat(1000).into_bytes(),
        }
    }

    #[test]
    fn every_ticket_comes_back_with_its_contents_sha256_and_each_content_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut hasher = Hasher::start().unwrap();
        for ticket in 0..40 {
            hasher.submit(ticket, incoming(dir.path(), ticket, &content(ticket)), format!("f{ticket}").into()).unwrap();
        }
        let mut digests = hasher.finish().unwrap();
        digests.sort();
        assert_eq!(digests.len(), 40);
        for (ticket, digest) in &digests {
            assert_eq!(*digest, sha256(&content(*ticket)), "ticket {ticket}");
        }
        let mut stored: Vec<String> = Vec::new();
        for shard in fs::read_dir(dir.path()).unwrap() {
            let shard = shard.unwrap().path();
            assert!(shard.is_dir(), "no temporary left: {}", shard.display());
            for object in fs::read_dir(&shard).unwrap() {
                let object = object.unwrap().path();
                assert_eq!(fs::metadata(&object).unwrap().permissions().mode() & 0o777, 0o400);
                stored.push(object.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        assert_eq!(stored.len(), 21, "twenty distinct contents and one shared by twenty tickets: {stored:?}");
        assert!(hasher.finish().unwrap().is_empty(), "nothing is reported twice");
    }

    #[test]
    fn a_failure_names_its_file_once_every_other_ticket_ended() {
        let dir = tempfile::tempdir().unwrap();
        let mut hasher = Hasher::start().unwrap();
        for ticket in 0..10 {
            let job = incoming(dir.path(), ticket, &content(ticket));
            if ticket == 3 {
                // Readable through its handle, but there is nothing left to name.
                fs::remove_file(dir.path().join("incoming-3")).unwrap();
            }
            hasher.submit(ticket, job, format!("/data/file-{ticket}").into()).unwrap();
        }
        let err = hasher.finish().unwrap_err();
        assert!(format!("{err:#}").contains("cannot back up /data/file-3"), "{err:#}");
        assert!(hasher.outstanding.is_empty(), "every ticket was collected");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.iter().all(|n| !n.to_string_lossy().starts_with("incoming-")), "{left:?}");
    }

    #[test]
    fn dropped_with_work_queued_it_waits_for_its_workers_and_reads_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let mut hasher = Hasher::start().unwrap();
        for ticket in 0..30 {
            hasher.submit(ticket, incoming(dir.path(), ticket, &content(ticket)), "f".into()).unwrap();
        }
        drop(hasher);
        // The workers are gone: nothing renames into the directory once it is being removed.
        let before: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let after: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(before, after);
    }
}
