//! The one error type of the PIM boundary. Every variant knows whether a later attempt can
//! succeed, which decides between redelivery and the dead-letter queue upstream.

use std::time::Duration;

/// A failed call to the Akeneo PIM.
#[derive(Debug, thiserror::Error)]
pub enum AkeneoError {
    /// Connection refused, reset, DNS failure: the PIM may be back soon.
    #[error("cannot reach the PIM at {url}: {reason}")]
    Unreachable {
        url: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },
    /// No answer within the per-request timeout.
    #[error("the PIM did not answer within {0:?}")]
    Timeout(Duration),
    /// The token route refused our credentials (Akeneo answers 422 there).
    #[error("the PIM refused the credentials: {0}")]
    Credentials(String),
    /// Any non-success status with Akeneo's `message`.
    #[error("the PIM answered {status} on {route}: {message}")]
    Http {
        status: u16,
        route: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The caller's deadline came before the work could finish.
    #[error("deadline reached before the PIM call completed ({0})")]
    Deadline(String),
    /// A response we cannot interpret: the PIM broke its contract.
    #[error("unexpected answer from the PIM: {0}")]
    Protocol(String),
}

impl AkeneoError {
    /// Whether retrying later (redelivery) can succeed. Akeneo's good practices: retry 408, 429
    /// and 5xx; every other 4xx needs a change of input or configuration.
    pub fn is_retriable(&self) -> bool {
        match self {
            AkeneoError::Unreachable { .. }
            | AkeneoError::Timeout(_)
            | AkeneoError::Deadline(_) => true,
            AkeneoError::Http { status, .. } => is_retriable_status(*status),
            AkeneoError::Credentials(_) | AkeneoError::Protocol(_) => false,
        }
    }

    /// Whether the request may have reached the PIM and still be applied there: no answer
    /// came after it was sent (a timeout, a broken connection, our own deadline).
    pub fn outcome_unknown(&self) -> bool {
        match self {
            AkeneoError::Timeout(_) | AkeneoError::Deadline(_) => true,
            AkeneoError::Unreachable { source, .. } => !source.is_connect(),
            _ => false,
        }
    }

    /// The HTTP status, when the PIM answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AkeneoError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Statuses worth another attempt (Akeneo good practices; 501 means the route will never exist).
pub(crate) fn is_retriable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status) && status != 501
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_akeneo_good_practices() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retriable_status(s), "{s} should be retriable");
        }
        for s in [400, 401, 403, 404, 413, 415, 422, 501] {
            assert!(!is_retriable_status(s), "{s} should be permanent");
        }
        assert!(AkeneoError::Timeout(Duration::from_secs(1)).is_retriable());
        assert!(!AkeneoError::Credentials("no".into()).is_retriable());
        let http = AkeneoError::Http {
            status: 404,
            route: "GET x".into(),
            message: "Asset family \"x\" does not exist.".into(),
            retry_after: None,
        };
        assert!(!http.is_retriable());
        assert_eq!(http.status(), Some(404));
    }
}
