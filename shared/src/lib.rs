//! dam-sync core library.
//!
//! Everything the Lambda functions and the CLI do lives here, behind ports named by capability
//! (what the pipeline needs) with adapters named by vendor (Akeneo, Cloudinary, ...). Handlers
//! stay thin: they parse their trigger, call into this crate and map the outcome.

pub mod akeneo;
pub mod consumer;
pub mod dam;
pub mod ingest;
pub mod mapping;
pub mod observability;
pub mod poller;
pub mod queue;
pub mod secrets;
pub mod settings;
pub mod store;
pub mod time;
