//! HTTP tests of the simulator (real sockets, reqwest client).

mod accounting;
mod assets;
mod auth;
mod common;
mod faults;
mod listing;
mod media;
mod structure;
mod validation;
