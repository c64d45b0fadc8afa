//! dam-sync core library.
//!
//! Everything the Lambda functions and the CLI do lives here, behind ports named by capability
//! (what the pipeline needs) with adapters named by vendor (Akeneo, Cloudinary, ...). Handlers
//! stay thin: they parse their trigger, call into this crate and map the outcome.
//!
//! The ports (docs/architecture.md has their adapters):
//! - queue: [`queue::ChangeQueue`], [`queue::DeadLetters`], [`queue::QueueAdmin`];
//! - state: [`store::AssetStateStore`], [`store::CursorStore`], [`store::LeaseStore`],
//!   [`akeneo::StructureStore`];
//! - DAM: [`dam::AssetSource`], [`dam::WebhookVerifier`], and for Bynder's SNS
//!   [`dam::bynder::CertificateFetcher`], [`dam::bynder::SubscriptionConfirmer`];
//! - PIM: [`consumer::PimWriter`], [`poller::PimCodes`]; media: [`consumer::MediaSource`].

pub mod akeneo;
pub mod aws;
pub mod consumer;
pub mod dam;
pub mod https;
pub mod ingest;
pub mod mapping;
pub mod net;
pub mod observability;
pub mod poller;
pub mod queue;
pub mod secrets;
pub mod settings;
pub mod store;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;
pub mod time;

/// An underlying error (SDK, SQLite, serde) that a boundary error keeps as its source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A variant of a port's error type (`QueueError::Transient`, `StateError::Permanent`, ...):
/// the message, then the error underneath.
pub type ErrorVariant<T> = fn(String, Option<BoxError>) -> T;

/// A failure underneath a port (SDK, SQLite, serde) as the port's error: the `transient`
/// variant when trying again may help, else `permanent`, with the failure kept as the source.
pub fn port_error<T>(
    retriable: bool,
    message: String,
    source: impl Into<BoxError>,
    transient: ErrorVariant<T>,
    permanent: ErrorVariant<T>,
) -> T {
    let variant = if retriable { transient } else { permanent };
    variant(message, Some(source.into()))
}
