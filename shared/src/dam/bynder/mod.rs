//! Bynder adapter: notifications delivered through Amazon SNS, and the v4 media API.

pub mod api;
pub mod sns;
pub mod webhook;
