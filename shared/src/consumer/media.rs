//! The `media_file` values: the files downloaded from the DAM (port [`super::MediaSource`])
//! and uploaded into Akeneo, and the pipeline step that transfers them.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use futures::StreamExt;
use tokio::time::Instant;

use super::Consumer;
use super::batch::{Batch, Fate, Pending, TOO_LATE, pim_fate};

/// A downloaded file, ready for the PIM's media upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFile {
    /// The last URL path segment (Akeneo checks `allowed_extensions` against it).
    pub file_name: String,
    pub mime: String,
    pub bytes: Bytes,
}

/// A failed download; knows whether a later attempt can succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Network errors, timeouts, 408/429/5xx.
    #[error("downloading {url}: {reason}")]
    Transient { url: String, reason: String },
    /// Not an http(s) URL, 4xx, larger than the limit: retrying the same URL won't help.
    #[error("downloading {url}: {reason}")]
    Permanent { url: String, reason: String },
    /// 404 or 410: the file is gone, most often because the DAM deleted the asset after the
    /// event was sent. The consumer asks the DAM before deciding anything.
    #[error("downloading {url}: {reason}")]
    NotFound { url: String, reason: String },
}

impl MediaError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, MediaError::Transient { .. })
    }
}

/// Why a file was not transferred.
enum Failed {
    Fate(Fate),
    /// 404/410 from the file's server.
    Missing(String),
}

impl Consumer {
    /// Downloads and uploads the media files the assets need and puts the returned codes into
    /// their values. A file whose source URL already has a code (stored from an earlier write,
    /// or shared with another asset of the batch) is not transferred again. Assets whose files
    /// could not be transferred are settled and dropped.
    pub(super) async fn upload_media(
        &self,
        batch: &mut Batch,
        items: Vec<Pending>,
    ) -> Vec<Pending> {
        let needed: BTreeSet<String> = items
            .iter()
            .flat_map(|p| {
                p.mapped
                    .uploads
                    .iter()
                    .filter(|u| !p.media.contains_key(&u.source_url))
                    .map(|u| u.source_url.clone())
            })
            .collect();
        let (cutoff, deadline) = (batch.cutoff, batch.deadline);
        let max_bytes = self.settings.max_media_bytes;
        let transferred: HashMap<String, Result<String, Failed>> = futures::stream::iter(needed)
            .map(|url| async move {
                if Instant::now() >= cutoff {
                    return (url, Err(Failed::Fate(Fate::Retry(TOO_LATE.into()))));
                }
                let file = match self.media.download(&url, max_bytes, cutoff).await {
                    Ok(file) => file,
                    Err(e) if e.is_retriable() => {
                        return (url, Err(Failed::Fate(Fate::Retry(e.to_string()))));
                    }
                    Err(e @ MediaError::NotFound { .. }) => {
                        return (url, Err(Failed::Missing(e.to_string())));
                    }
                    Err(e) => return (url, Err(Failed::Fate(Fate::Dead(e.to_string())))),
                };
                let code = self
                    .pim
                    .upload_media(file, deadline)
                    .await
                    .map_err(|e| Failed::Fate(pim_fate(&e)));
                (url, code)
            })
            .buffer_unordered(self.settings.media_in_flight.max(1))
            .collect()
            .await;
        batch.media_uploaded += transferred.values().filter(|r| r.is_ok()).count() as u64;
        let mut kept = Vec::with_capacity(items.len());
        'items: for mut p in items {
            for upload in std::mem::take(&mut p.mapped.uploads) {
                let code = match p.media.get(&upload.source_url) {
                    Some(code) => code.clone(),
                    None => match transferred.get(&upload.source_url) {
                        Some(Ok(code)) => {
                            p.media.insert(upload.source_url.clone(), code.clone());
                            code.clone()
                        }
                        Some(Err(Failed::Missing(why))) => {
                            // Decided once the writes are done: a file that vanished with its
                            // asset is that asset's deletion, not a failure.
                            batch.media_missing.push((
                                p.idx,
                                format!("media_file attribute `{}`: {why}", upload.attribute),
                            ));
                            continue 'items;
                        }
                        Some(Err(Failed::Fate(fate))) => {
                            let fate = match fate {
                                Fate::Dead(why) => Fate::Dead(format!(
                                    "media_file attribute `{}`: {why}",
                                    upload.attribute
                                )),
                                other => other.clone(),
                            };
                            batch.settle(p.idx, fate);
                            continue 'items;
                        }
                        None => {
                            batch.settle(p.idx, Fate::Retry("media file not transferred".into()));
                            continue 'items;
                        }
                    },
                };
                p.mapped.complete_upload(&upload, code);
                p.mapped.uploads.push(upload);
            }
            kept.push(p);
        }
        kept
    }
}
