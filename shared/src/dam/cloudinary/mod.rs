//! Cloudinary adapter: signed notification webhooks and the Admin/Search API.

pub mod api;
pub mod webhook;
