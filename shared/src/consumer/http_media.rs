//! [`HttpMedia`], the HTTP(S) adapter of [`MediaSource`]: fetches a rendition URL streamed
//! chunk by chunk and refused as soon as it passes the size limit, so a huge or endless body
//! never sits whole in memory.

use async_trait::async_trait;
use bytes::BytesMut;
use reqwest::StatusCode;
use tokio::time::Instant;
use url::Url;

use super::MediaSource;
use super::media::{MediaError, MediaFile};

/// Plain HTTP(S) downloads of public rendition URLs (Cloudinary `secure_url`, Bynder
/// derivatives, a generic DAM's file URL).
#[derive(Debug, Clone)]
pub struct HttpMedia {
    client: Result<reqwest::Client, String>,
}

impl Default for HttpMedia {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpMedia {
    pub fn new() -> Self {
        // A client that cannot be built (no TLS roots) fails each download with the reason
        // rather than the whole consumer at start: only media_file values need it.
        let client = crate::https::client_builder()
            .redirect(reqwest::redirect::Policy::limited(5))
            .build()
            .map_err(|e| format!("HTTP client for media downloads: {e}"));
        Self { client }
    }
}

#[async_trait]
impl MediaSource for HttpMedia {
    async fn download(
        &self,
        url: &str,
        max_bytes: u64,
        deadline: Instant,
    ) -> Result<MediaFile, MediaError> {
        let permanent = |reason: String| MediaError::Permanent {
            url: url.to_string(),
            reason,
        };
        let transient = |reason: String| MediaError::Transient {
            url: url.to_string(),
            reason,
        };
        let parsed = Url::parse(url).map_err(|e| permanent(format!("not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(permanent(format!(
                "scheme `{}` is not downloadable, expected http or https",
                parsed.scheme()
            )));
        }
        let client = self.client.as_ref().map_err(|e| transient(e.clone()))?;
        let work = async {
            let mut response = client
                .get(parsed.clone())
                .send()
                .await
                .map_err(|e| transient(e.to_string()))?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
                return Err(MediaError::NotFound {
                    url: url.to_string(),
                    reason: format!("the server answered {status}"),
                });
            }
            if !status.is_success() {
                let reason = format!("the server answered {status}");
                return Err(
                    if status == StatusCode::REQUEST_TIMEOUT
                        || status == StatusCode::TOO_MANY_REQUESTS
                        || status.is_server_error()
                    {
                        transient(reason)
                    } else {
                        permanent(reason)
                    },
                );
            }
            let too_big = |n: u64| {
                permanent(format!(
                    "the file has {n} bytes or more, over the {max_bytes}-byte limit"
                ))
            };
            if let Some(len) = response.content_length()
                && len > max_bytes
            {
                return Err(too_big(len));
            }
            let mime = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("application/octet-stream")
                .to_string();
            let mut body = BytesMut::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| transient(e.to_string()))?
            {
                if (body.len() + chunk.len()) as u64 > max_bytes {
                    return Err(too_big((body.len() + chunk.len()) as u64));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(MediaFile {
                file_name: file_name(&parsed),
                mime,
                bytes: body.freeze(),
            })
        };
        tokio::time::timeout_at(deadline, work)
            .await
            .map_err(|_| transient("deadline reached".into()))?
    }
}

/// The URL's last path segment, percent-decoded, with characters a file name should not carry
/// replaced; `file` when there is none.
fn file_name(url: &Url) -> String {
    let last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    let decoded = percent_decode(last);
    let cleaned: String = decoded
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.trim_matches(['.', '_']).is_empty() {
        "file".into()
    } else {
        cleaned
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("n={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_come_from_the_last_path_segment() {
        let name = |u: &str| file_name(&Url::parse(u).unwrap());
        assert_eq!(
            name("https://cdn.example/a/b/shoe%20red.jpg?x=1"),
            "shoe_red.jpg"
        );
        assert_eq!(name("https://cdn.example/v1/x+y.png"), "x_y.png");
        assert_eq!(name("https://cdn.example/"), "file");
        assert_eq!(name("https://cdn.example/a/..."), "file");
    }

    #[tokio::test]
    async fn only_http_urls_are_downloaded() {
        let media = HttpMedia::new();
        let later = Instant::now() + std::time::Duration::from_secs(5);
        for url in ["file:///etc/passwd", "not a url", "ftp://host/x.jpg"] {
            let error = media.download(url, 10, later).await.unwrap_err();
            assert!(!error.is_retriable(), "{url}: {error}");
        }
    }
}
