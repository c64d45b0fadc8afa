//! dam-sync on one machine: the change queue, dead letters and state ports on one SQLite file.
//!
//! [`SqliteStore`] implements the same ports as SQS and DynamoDB ([`ChangeQueue`],
//! [`DeadLetters`], [`AssetStateStore`], [`CursorStore`], [`LeaseStore`], [`StructureStore`],
//! [`QueueAdmin`]) with the same semantics, so `dam-sync serve` runs the Lambda code unchanged:
//!
//! - the queue has SQS's consumer side: [`SqliteStore::receive`] hides messages for a
//!   visibility timeout and counts receives, [`SqliteStore::ack`] deletes them, anything not
//!   acknowledged comes back after the timeout, and a message received `max_receives` times
//!   without success moves to the dead-letter table (SQS's redrive policy);
//! - every write is one transaction, committed with `synchronous=FULL` in WAL mode before the
//!   call returns, so a webhook answered 2xx survives `kill -9` and power loss;
//! - conditional writes (versions, cursors, leases) run in `BEGIN IMMEDIATE` transactions, so
//!   two processes on one file (`serve` and an operator command) never both win.
//!
//! Calls run on tokio's blocking pool behind one connection per store; several processes may
//! open the same file (a busy timeout absorbs their short write locks).

mod error;
mod queue;
mod schema;
mod state;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use shared::store::{Clock, system_clock};

pub use error::{DbError, OpenError};
pub use queue::{QueueSettings, Received};

/// How long a writer waits for another process's write lock before giving up (transient).
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The embedded store: one SQLite file, cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Mutex<Connection>,
    path: PathBuf,
    clock: Clock,
    queue: QueueSettings,
    structure_ttl: Duration,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Why the store file cannot be opened for writing, and what to do.
fn open_problem(kind: std::io::ErrorKind, path: &Path) -> String {
    use std::io::ErrorKind;
    match kind {
        ErrorKind::IsADirectory => format!(
            "is a directory, not a file; point --store / [store] path at a file inside it, e.g. {}",
            path.join("state.db").display()
        ),
        ErrorKind::PermissionDenied => "permission denied: the user running dam-sync cannot \
             read and write it; fix its owner or mode (chmod u+rw) or choose another path"
            .into(),
        ErrorKind::ReadOnlyFilesystem => {
            "on a read-only file system; choose a path on a writable volume".into()
        }
        ErrorKind::NotFound => {
            "its directory does not exist; create it or change [store] path".into()
        }
        other => format!("cannot open it for writing ({other}); check the path and its directory"),
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file and its tables when missing (the parent
    /// directory must exist).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path.as_ref(), true)
    }

    /// Opens a store that must already exist (operator commands: a typo in the path must not
    /// create an empty store and report "all is well").
    pub fn open_existing(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path.as_ref(), false)
    }

    fn open_with(path: &Path, create: bool) -> Result<Self, OpenError> {
        let fail = |reason: String| OpenError {
            path: path.to_path_buf(),
            reason,
        };
        if !create && !path.exists() {
            return Err(fail(
                "no such file; start `dam-sync serve` once to create it, or point --store / \
                 [store] path at the right file"
                    .into(),
            ));
        }
        if create
            && let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.is_dir()
        {
            return Err(fail(format!(
                "directory {} does not exist; create it or change [store] path",
                parent.display()
            )));
        }
        // SQLite says "unable to open database file" for every one of these; the file system
        // tells them apart.
        if path.is_dir() {
            return Err(fail(open_problem(std::io::ErrorKind::IsADirectory, path)));
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(|e| {
                let read_only = path.metadata().is_ok_and(|m| m.permissions().readonly());
                fail(
                    if read_only && e.kind() == std::io::ErrorKind::PermissionDenied {
                        "the file is read-only; make it writable (chmod u+w) or choose another path"
                            .into()
                    } else {
                        open_problem(e.kind(), path)
                    },
                )
            })?;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let mut conn = Connection::open_with_flags(path, flags).map_err(|e| fail(e.to_string()))?;
        schema::prepare(&mut conn).map_err(|e| {
            fail(format!(
                "{e}; is it a dam-sync store, and is the directory writable?"
            ))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                path: path.to_path_buf(),
                clock: system_clock(),
                queue: QueueSettings::default(),
                structure_ttl: Duration::from_secs(300),
            }),
        })
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.inner).expect("configure the store before cloning it")
    }

    /// The clock used for visibility timeouts, leases and the structure TTL (tests inject one).
    /// Call before cloning the store.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.inner_mut().clock = clock;
        self
    }

    /// Queue behaviour (visibility timeout, receives before dead-lettering). Call before
    /// cloning the store.
    pub fn with_queue_settings(mut self, settings: QueueSettings) -> Self {
        self.inner_mut().queue = settings;
        self
    }

    /// How long a cached family structure stays fresh. Call before cloning the store.
    pub fn with_structure_ttl(mut self, ttl: Duration) -> Self {
        self.inner_mut().structure_ttl = ttl;
        self
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn queue_settings(&self) -> QueueSettings {
        self.inner.queue
    }

    fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    /// Runs `f` on the blocking pool with the connection and the current time.
    async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection, i64) -> Result<T, DbError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let now = self.now();
        tokio::task::spawn_blocking(move || {
            let mut conn = inner.conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn, now)
        })
        .await
        .map_err(DbError::Task)?
    }
}

fn random_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;

    use super::*;

    #[test]
    fn a_directory_or_a_missing_folder_is_named_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let e = SqliteStore::open(dir.path()).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "SQLite store {}: is a directory",
                dir.path().display()
            )),
            "{e}"
        );
        let e = SqliteStore::open_existing(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
        let missing = dir.path().join("nope").join("state.db");
        let e = SqliteStore::open(&missing).unwrap_err().to_string();
        assert!(e.contains("does not exist; create it"), "{e}");
    }

    #[test]
    fn permission_and_read_only_problems_say_what_to_do() {
        // Run as root, chmod does not refuse: the file system's answers are checked directly.
        let p = Path::new("/srv/state.db");
        assert!(open_problem(ErrorKind::PermissionDenied, p).starts_with("permission denied"));
        assert!(
            open_problem(ErrorKind::ReadOnlyFilesystem, p)
                .starts_with("on a read-only file system")
        );
        assert!(open_problem(ErrorKind::NotFound, p).contains("directory does not exist"));
    }
}
