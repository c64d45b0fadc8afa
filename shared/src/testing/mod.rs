//! Fakes of the ports, the DynamoDB table set-up and the state conformance suite, for tests and
//! benchmarks. Behind the `test-util` feature (the crate's own unit tests always have it), so
//! none of it ships in the Lambdas or the CLI.

pub mod conformance;
mod dynamodb;
mod queue;
mod source;
mod store;

pub use conformance::TestClock;
pub use dynamodb::create_table;
pub use queue::{MemoryChangeQueue, MemoryDeadLetters};
pub use source::MemorySource;
pub use store::MemoryStore;
