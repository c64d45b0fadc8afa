//! Tests of the SQLite store and queue, in one test binary.

mod conformance;
mod queue;
// The state-port conformance suite, shared with the in-memory and DynamoDB adapters.
#[path = "../../../shared/tests/it/store_conformance.rs"]
mod store_conformance;
