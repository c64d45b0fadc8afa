//! Tests of the SQLite store and queue, in one test binary.

mod conformance;
mod queue;
