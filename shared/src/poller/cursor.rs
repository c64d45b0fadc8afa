//! The poller's cursor: the stored position and resume point as a run sees them, and the one
//! conditional write that moves them.

use serde::{Deserialize, Serialize};

use super::{PollError, Poller, RunReport};
use crate::dam::PageToken;
use crate::store::{Advance, Cursor};

impl Poller {
    /// Conditional cursor write of `min(max_seen, cap)` (never below the stored position) and
    /// the listing's resume point. Skipped when nothing would change. `false`: another writer
    /// got there first; the caller stops rather than overwrite it.
    pub(super) async fn commit(
        &self,
        name: &str,
        state: &mut CursorState,
        max_seen: Option<i64>,
        cap_ms: i64,
        next: Option<&PageToken>,
        report: &mut RunReport,
    ) -> Result<bool, PollError> {
        let position_ms = match (state.position_ms, max_seen.map(|m| m.min(cap_ms))) {
            (Some(p), Some(seen)) => p.max(seen),
            (Some(p), None) => p,
            (None, Some(seen)) => seen,
            // Nothing seen and no cursor yet: nothing to remember.
            (None, None) => return Ok(true),
        };
        let resume = next.map(|t| Resume {
            cap_ms,
            token: t.0.clone(),
        });
        if state.position_ms == Some(position_ms) && state.resume == resume {
            return Ok(true);
        }
        let new = Cursor {
            position_ms,
            page_token: resume.as_ref().map(Resume::encode),
            version: 0,
        };
        match self.cursors.advance(name, new, state.version).await? {
            Advance::Written { version } => {
                state.version = Some(version);
                state.position_ms = Some(position_ms);
                state.resume = resume;
                report.cursor_after_ms = Some(position_ms);
                Ok(true)
            }
            Advance::Conflict { current } => {
                tracing::warn!(
                    cursor = %name,
                    ours = position_ms,
                    theirs = current.as_ref().map(|c| c.position_ms),
                    "Cursor moved by another writer; stopping without overwriting it."
                );
                Ok(false)
            }
        }
    }
}

/// The stored cursor as this run last read or wrote it: the base of the next conditional write.
#[derive(Debug)]
pub(super) struct CursorState {
    pub(super) position_ms: Option<i64>,
    pub(super) version: Option<u64>,
    pub(super) resume: Option<Resume>,
}

/// Where an unfinished listing resumes, stored in the cursor's `page_token` as JSON: the DAM's
/// page token and the signpost (cap) of the run that started the listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Resume {
    pub(super) cap_ms: i64,
    pub(super) token: String,
}

impl Resume {
    fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An unreadable token (written by another version) restarts the listing: re-reading is
    /// safe, skipping is not.
    pub(super) fn decode(name: &str, raw: &str) -> Option<Self> {
        match serde_json::from_str(raw) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(cursor = %name, error = %e, "Unreadable resume token; restarting the listing.");
                None
            }
        }
    }
}
