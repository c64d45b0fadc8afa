//! The store's one error type, which knows whether trying again can help, and its conversions
//! into the ports' errors.

use std::path::PathBuf;

use rusqlite::ErrorCode;
use shared::akeneo::StoreError;
use shared::queue::QueueError;
use shared::store::StateError;

/// A failure of the SQLite store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Another process held the write lock past the busy timeout, or the disk is full:
    /// trying again later may work.
    #[error("SQLite store busy or out of space: {0}")]
    Busy(String),
    /// Corruption, a read-only file, a bug: retrying will not help.
    #[error("SQLite store failed: {0}")]
    Other(String),
}

impl DbError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, DbError::Busy(_))
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        let transient = matches!(
            error.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull)
        );
        if transient {
            DbError::Busy(error.to_string())
        } else {
            DbError::Other(error.to_string())
        }
    }
}

impl From<serde_json::Error> for DbError {
    fn from(error: serde_json::Error) -> Self {
        DbError::Other(format!("stored JSON unreadable: {error}"))
    }
}

impl From<DbError> for QueueError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Busy(m) => QueueError::Transient(m),
            DbError::Other(m) => QueueError::Permanent(m),
        }
    }
}

impl From<DbError> for StateError {
    fn from(error: DbError) -> Self {
        match error {
            DbError::Busy(m) => StateError::Transient(m),
            DbError::Other(m) => StateError::Permanent(m),
        }
    }
}

impl From<DbError> for StoreError {
    fn from(error: DbError) -> Self {
        StoreError {
            retriable: error.is_retriable(),
            message: error.to_string(),
        }
    }
}

/// The store file could not be opened: names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[error("SQLite store {}: {reason}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub reason: String,
}
