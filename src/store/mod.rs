//! Everything upgraderd keeps on disk: the state database, the lock, backup
//! archives and the files it shares with the app.

pub(crate) mod backup;
pub(crate) mod db;
pub(crate) mod disk;
pub(crate) mod edited;
pub(crate) mod files;
pub(crate) mod fsat;
pub(crate) mod lock;
pub(crate) mod metrics;
pub(crate) mod reserve;
pub(crate) mod shared_dir;
