//! What a poller Lambda invocation asks for, read from its trigger event.

use super::Mode;

impl Mode {
    /// The mode an invocation asks for: `{"mode":"backfill"}` or `{"mode":"incremental"}`;
    /// anything without a `mode` (an EventBridge scheduled event, `{}`) is incremental.
    pub fn from_event(event: &serde_json::Value) -> Result<Self, UnknownMode> {
        match event.get("mode") {
            None | Some(serde_json::Value::Null) => Ok(Mode::Incremental),
            Some(m) => match m.as_str() {
                Some("incremental") => Ok(Mode::Incremental),
                Some("backfill") => Ok(Mode::Backfill),
                _ => Err(UnknownMode(m.to_string())),
            },
        }
    }
}

/// What one invocation of the poller Lambda does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// A poll run of this mode.
    Poll(Mode),
    /// The deletion sweep (its own schedule: `{"mode":"sweep"}`).
    Sweep,
}

impl Task {
    /// `{"mode":"sweep"}` is the sweep; anything else is read by [`Mode::from_event`].
    pub fn from_event(event: &serde_json::Value) -> Result<Self, UnknownMode> {
        match event.get("mode").and_then(serde_json::Value::as_str) {
            Some("sweep") => Ok(Task::Sweep),
            _ => Mode::from_event(event).map(Task::Poll),
        }
    }
}

/// An invocation asked for a mode the poller does not have.
#[derive(Debug, thiserror::Error)]
#[error("unknown poller mode {0}; expected \"incremental\", \"backfill\" or \"sweep\"")]
pub struct UnknownMode(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_events_poll_and_backfill_is_asked_for() {
        let scheduled = serde_json::json!({
            "version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}
        });
        assert_eq!(Mode::from_event(&scheduled).unwrap(), Mode::Incremental);
        let backfill = serde_json::json!({ "mode": "backfill" });
        assert_eq!(Mode::from_event(&backfill).unwrap(), Mode::Backfill);
        assert!(Mode::from_event(&serde_json::json!({ "mode": "full" })).is_err());
        assert_eq!(
            Task::from_event(&serde_json::json!({ "mode": "sweep" })).unwrap(),
            Task::Sweep
        );
        assert_eq!(
            Task::from_event(&scheduled).unwrap(),
            Task::Poll(Mode::Incremental)
        );
        assert!(Task::from_event(&serde_json::json!({ "mode": "full" })).is_err());
    }
}
