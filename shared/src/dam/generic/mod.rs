//! Generic DAM adapter: Standard Webhooks deliveries and the REST contract in docs/generic-dam.md.

pub mod api;
pub mod webhook;
