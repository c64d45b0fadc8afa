//! Connection settings and tables.

use rusqlite::{Connection, TransactionBehavior};

use crate::BUSY_TIMEOUT;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queue (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id     TEXT NOT NULL UNIQUE,
    body           TEXT NOT NULL,
    enqueued_at_ms INTEGER NOT NULL,
    visible_at_ms  INTEGER NOT NULL,
    receive_count  INTEGER NOT NULL DEFAULT 0,
    receipt        TEXT,
    last_error     TEXT
);
CREATE INDEX IF NOT EXISTS queue_visible ON queue (visible_at_ms, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id    TEXT NOT NULL,
    body          TEXT NOT NULL,
    reason        TEXT NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_at_ms    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS asset_state (
    dam            TEXT NOT NULL,
    asset_id       TEXT NOT NULL,
    modified_at_ms INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    content_hash   TEXT NOT NULL,
    family         TEXT NOT NULL,
    pim_code       TEXT NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    -- JSON object: source URL -> Akeneo media-file code.
    media_files    TEXT NOT NULL DEFAULT '{}',
    -- 1: a tombstone (the DAM deleted the asset; its PIM asset was retired).
    deleted        INTEGER NOT NULL DEFAULT 0,
    -- The DAM asset's fingerprint; '' when unknown.
    source_hash    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (dam, asset_id)
) WITHOUT ROWID;
-- Versions the consumer dead-lettered: the poller does not queue them again.
CREATE TABLE IF NOT EXISTS parked (
    dam            TEXT NOT NULL,
    asset_id       TEXT NOT NULL,
    modified_at_ms INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    PRIMARY KEY (dam, asset_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cursors (
    name          TEXT PRIMARY KEY,
    position_ms   INTEGER NOT NULL,
    page_token    TEXT,
    version       INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS structures (
    family        TEXT PRIMARY KEY,
    structure     TEXT NOT NULL,
    expires_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS errors (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms   INTEGER NOT NULL,
    source  TEXT NOT NULL,
    message TEXT NOT NULL
);
";

/// Columns added to `asset_state` after its first release: a file created before them gets
/// them (with the defaults that read as "live, no fingerprint") when it is opened.
const ASSET_STATE_COLUMNS: [(&str, &str); 2] = [
    ("deleted", "INTEGER NOT NULL DEFAULT 0"),
    ("source_hash", "TEXT NOT NULL DEFAULT ''"),
];

/// The reverse index (PIM code → DAM asset) for the deletion sweep; created after the
/// migration, since it names a migrated column's table.
const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS asset_state_code ON asset_state (family, pim_code);
";

/// In one write transaction, so two processes opening an old file do not both add a column.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing = {
        let mut select = tx.prepare("SELECT name FROM pragma_table_info('asset_state')")?;
        select
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?
    };
    for (column, definition) in ASSET_STATE_COLUMNS {
        if !existing.iter().any(|c| c == column) {
            tx.execute_batch(&format!(
                "ALTER TABLE asset_state ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    tx.execute_batch(INDEXES)?;
    tx.commit()
}

/// WAL lets readers (operator commands) run beside the writer; `synchronous=FULL` syncs the
/// WAL on every commit, so a committed enqueue survives power loss, not only a crash.
pub fn prepare(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(SCHEMA)?;
    migrate(conn)
}
