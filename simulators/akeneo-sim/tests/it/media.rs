use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use crate::common::*;

const MEDIA: &str = "/api/rest/v1/asset-media-files";

#[tokio::test]
async fn upload_then_download_returns_the_same_bytes() {
    let api = start().await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(11_255).collect();
    let form = Form::new().part(
        "file",
        Part::bytes(bytes.clone())
            .file_name("unicorn.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let resp = api
        .http
        .post(api.url(MEDIA))
        .bearer_auth(&api.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let code = resp.headers()["asset-media-file-code"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(code.ends_with("_unicorn.png"), "{code}");
    assert!(
        code.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_./".contains(&b)),
        "{code}"
    );
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, api.url(&format!("{MEDIA}/{code}")));
    assert!(resp.bytes().await.unwrap().is_empty());

    let dl = api
        .http
        .get(&location)
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(dl.status(), StatusCode::OK);
    assert_eq!(dl.headers()["content-type"], "image/png");
    assert!(
        dl.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("unicorn.png")
    );
    assert_eq!(dl.bytes().await.unwrap().to_vec(), bytes);

    let (status, _) = api.get_json(&format!("{MEDIA}/0/0/0/0/missing.png")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn upload_needs_a_file_part_and_multipart() {
    let api = start().await;
    let form = Form::new().text("other", "x");
    let resp = api
        .http
        .post(api.url(MEDIA))
        .bearer_auth(&api.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["message"], "Property \"file\" is required.");
    let resp = api
        .http
        .post(api.url(MEDIA))
        .bearer_auth(&api.token)
        .header("Content-Type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .ends_with("Only 'multipart/form-data' is allowed.")
    );
}
