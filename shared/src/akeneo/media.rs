//! Media-file upload and attribute-option creation.

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::client::AkeneoClient;
use super::error::AkeneoError;
use super::transport::Payload;

const UPLOAD_ROUTE: &str = "POST /asset-media-files";
const OPTION_ROUTE: &str = "PATCH /asset-families/{family}/attributes/{attribute}/options/{code}";

impl AkeneoClient {
    /// Uploads a file (multipart part `file`) and returns the media-file code to put in a
    /// `media_file` value. The upload alone attaches nothing.
    pub async fn upload_media_file(
        &self,
        file_name: &str,
        mime: &str,
        bytes: Bytes,
        deadline: Instant,
    ) -> Result<String, AkeneoError> {
        let payload = Payload::Multipart {
            file_name: file_name.to_string(),
            mime: mime.to_string(),
            bytes,
        };
        let reply = self
            .call(
                Method::POST,
                self.url(&["asset-media-files"]),
                UPLOAD_ROUTE,
                payload,
                deadline,
            )
            .await?;
        if reply.status != StatusCode::CREATED {
            return Err(reply.into_error(UPLOAD_ROUTE));
        }
        // Header names are case-insensitive; Akeneo's casing varies between versions.
        reply
            .headers
            .get("asset-media-file-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| {
                AkeneoError::Protocol("upload answered 201 without Asset-media-file-code".into())
            })
    }

    /// Creates the option codes of `attribute` that the PIM does not have yet, at most
    /// `option_writes_per_second` (Akeneo caps option PATCH at 3 per second per instance).
    /// Returns the codes created. The family's cached structure is refreshed afterwards.
    pub async fn ensure_options(
        &self,
        family: &str,
        attribute: &str,
        codes: &[String],
        deadline: Instant,
    ) -> Result<Vec<String>, AkeneoError> {
        let Some(structure) = self.family_structure(family, deadline).await? else {
            return Err(AkeneoError::Http {
                status: 404,
                route: "GET /asset-families/{family}".into(),
                message: format!("Asset family \"{family}\" does not exist."),
                retry_after: None,
            });
        };
        let mut missing: Vec<&String> = codes
            .iter()
            .filter(|c| !structure.has_option(attribute, c))
            .collect();
        missing.sort();
        missing.dedup();
        let mut created = Vec::new();
        for code in missing {
            tokio::time::timeout_at(deadline, self.inner.option_writes.until_ready())
                .await
                .map_err(|_| {
                    AkeneoError::Deadline(format!("creating option {code:?} of {attribute}"))
                })?;
            let body = serde_json::json!({ "code": code, "labels": {} }).to_string();
            let url = self.url(&[
                "asset-families",
                family,
                "attributes",
                attribute,
                "options",
                code,
            ]);
            let reply = self
                .send_json(Method::PATCH, url, OPTION_ROUTE, body.into(), deadline)
                .await?;
            match reply.status {
                StatusCode::CREATED | StatusCode::NO_CONTENT => created.push(code.clone()),
                _ => return Err(reply.into_error(OPTION_ROUTE)),
            }
        }
        if !created.is_empty() {
            self.invalidate_structure(family).await;
        }
        Ok(created)
    }
}
