//! Everything upgraderd keeps on disk: the state database, the lock, backup
//! archives and the files it shares with the app.

pub mod backup;
pub mod db;
pub mod disk;
pub mod edited;
pub mod files;
pub mod fsat;
pub mod lock;
pub mod reserve;
pub mod shared_dir;
