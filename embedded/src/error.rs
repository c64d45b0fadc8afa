//! The store's one error type, which knows whether trying again can help, and its conversions
//! into the ports' errors.

use std::path::PathBuf;

use rusqlite::ErrorCode;
use shared::ErrorVariant;
use shared::queue::QueueError;
use shared::store::StateError;

/// A failure of the SQLite store, with the error underneath it as its source.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Another process held the write lock past the busy timeout, or the disk is full:
    /// trying again later may work.
    #[error("SQLite store busy or out of space: {0}")]
    Busy(#[source] rusqlite::Error),
    /// Corruption, a read-only file, a bug: retrying will not help.
    #[error("SQLite store failed: {0}")]
    Other(#[source] rusqlite::Error),
    /// A JSON column that does not convert (written by another release, or corrupt).
    #[error("SQLite store failed: {}", self.detail())]
    Json(#[source] serde_json::Error),
    /// The blocking task running the call panicked or was cancelled.
    #[error("SQLite store failed: {}", self.detail())]
    Task(#[source] tokio::task::JoinError),
}

impl DbError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, DbError::Busy(_))
    }

    /// What went wrong, without the "SQLite store ..." prefix: the ports' errors add their own.
    fn detail(&self) -> String {
        match self {
            DbError::Busy(e) | DbError::Other(e) => e.to_string(),
            DbError::Json(e) => format!("stored JSON unreadable: {e}"),
            DbError::Task(e) => format!("store task failed: {e}"),
        }
    }

    /// This error as a port's (`Busy` as its transient variant), keeping it as the source.
    fn into_port<T>(self, transient: ErrorVariant<T>, permanent: ErrorVariant<T>) -> T {
        shared::port_error(
            self.is_retriable(),
            self.detail(),
            self,
            transient,
            permanent,
        )
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(error: rusqlite::Error) -> Self {
        let transient = matches!(
            error.sqlite_error_code(),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull)
        );
        if transient {
            DbError::Busy(error)
        } else {
            DbError::Other(error)
        }
    }
}

impl From<serde_json::Error> for DbError {
    fn from(error: serde_json::Error) -> Self {
        DbError::Json(error)
    }
}

impl From<DbError> for QueueError {
    fn from(error: DbError) -> Self {
        error.into_port(QueueError::Transient, QueueError::Permanent)
    }
}

impl From<DbError> for StateError {
    fn from(error: DbError) -> Self {
        error.into_port(StateError::Transient, StateError::Permanent)
    }
}

/// The store file could not be opened: names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[error("SQLite store {}: {reason}", path.display())]
pub struct OpenError {
    pub path: PathBuf,
    pub reason: String,
}
