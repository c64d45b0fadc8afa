//! Work done under a named lease, so two holders (a scheduler retry overlapping the next
//! schedule) never run it at once.

use std::future::Future;
use std::time::Duration;

use super::{LeaseStore, StateError};

/// Takes the lease `name` for `owner`, runs `work`, then gives the lease up.
///
/// `Ok(None)`: another owner holds an unexpired lease, and `work` did not run. The only error
/// is a failed acquire. A failed release is logged and otherwise ignored: the lease then
/// expires after `ttl`, and `work`'s result is returned as if it had been released.
pub async fn with_lease<T, F, Fut>(
    leases: &dyn LeaseStore,
    name: &str,
    owner: &str,
    ttl: Duration,
    work: F,
) -> Result<Option<T>, StateError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T>,
{
    if !leases.acquire(name, owner, ttl).await? {
        return Ok(None);
    }
    let out = work().await;
    if let Err(error) = leases.release(name, owner).await {
        tracing::warn!(lease = %name, %error, "Lease release failed; it will expire.");
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;

    /// A lease store that answers as told and records the calls it got.
    struct Scripted {
        held: bool,
        /// Whether the release call fails (throttled).
        release_fails: bool,
        calls: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(held: bool, release_fails: bool) -> Self {
            Self {
                held,
                release_fails,
                calls: Mutex::default(),
            }
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl LeaseStore for Scripted {
        async fn acquire(&self, name: &str, owner: &str, _: Duration) -> Result<bool, StateError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("acquire {name} {owner}"));
            Ok(!self.held)
        }

        async fn release(&self, name: &str, owner: &str) -> Result<bool, StateError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("release {name} {owner}"));
            if self.release_fails {
                return Err(StateError::Transient("throttled".into(), None));
            }
            Ok(true)
        }
    }

    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn the_work_runs_between_acquire_and_release() {
        let leases = Scripted::new(false, false);
        let out = with_lease(&leases, "poll", "me", TTL, || async {
            leases.calls.lock().unwrap().push("work".into());
            7
        })
        .await;
        assert_eq!(out.unwrap(), Some(7));
        assert_eq!(
            leases.calls(),
            ["acquire poll me", "work", "release poll me"]
        );
    }

    #[tokio::test]
    async fn a_held_lease_skips_the_work_and_releases_nothing() {
        let leases = Scripted::new(true, false);
        let out = with_lease(&leases, "poll", "me", TTL, || async {
            panic!("the work ran under a held lease")
        })
        .await;
        assert_eq!(out.unwrap(), None::<()>);
        assert_eq!(leases.calls(), ["acquire poll me"]);
    }

    #[tokio::test]
    async fn a_failed_release_still_returns_the_work() {
        let leases = Scripted::new(false, true);
        let out = with_lease(&leases, "poll", "me", TTL, || async { "done" }).await;
        assert_eq!(out.unwrap(), Some("done"));
        assert_eq!(leases.calls(), ["acquire poll me", "release poll me"]);
    }
}
