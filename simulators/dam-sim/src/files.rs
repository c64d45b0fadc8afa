//! The DAM's file CDN: `GET /files/{id}/{name}` serves the bytes of a live asset's file, so
//! `media_file` uploads can be tested end to end. No auth, like a public rendition URL.
//!
//! The bytes come from the asset's fields: `file_content` (a string, served as is) or else
//! `file_bytes` deterministic pseudo-random bytes (default 1,024) seeded by the asset id and
//! `file_version` (default 0), so a test changes the file by bumping `file_version`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::Shared;
use crate::catalogue::SimAsset;

/// Largest generated file, so a typo in `file_bytes` cannot exhaust memory.
const MAX_GENERATED: u64 = 256 * 1024 * 1024;

/// Where the simulator serves an asset's file: `{base_url}/files/{id}/{name}`.
pub fn file_url(base_url: &str, id: &str, name: &str) -> String {
    format!("{base_url}/files/{id}/{name}")
}

/// The bytes served for `asset`'s file.
pub fn file_bytes(asset: &SimAsset) -> Vec<u8> {
    if let Some(text) = asset.str_field("file_content") {
        return text.as_bytes().to_vec();
    }
    let len = asset
        .fields
        .get("file_bytes")
        .and_then(Value::as_u64)
        .unwrap_or(1024)
        .min(MAX_GENERATED);
    let version = asset
        .fields
        .get("file_version")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let seed = Sha256::digest(format!("{}:{version}", asset.id));
    let mut rng = fastrand::Rng::with_seed(u64::from_le_bytes(
        seed[..8].try_into().expect("8 bytes of a sha256"),
    ));
    let mut out = vec![0u8; len as usize];
    rng.fill(&mut out);
    out
}

fn mime(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("tif" | "tiff") => "image/tiff",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
}

pub(crate) async fn get_file(
    State(shared): State<Arc<Shared>>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    let bytes = {
        let cat = shared.catalogue.lock().expect("catalogue lock");
        cat.live(&id).map(file_bytes)
    };
    match bytes {
        Some(bytes) => ([(header::CONTENT_TYPE, mime(&name))], bytes).into_response(),
        None => (StatusCode::NOT_FOUND, "dam-sim: no such file").into_response(),
    }
}
