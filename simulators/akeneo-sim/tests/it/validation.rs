use serde_json::{Value, json};

use crate::common::*;

fn v(data: Value) -> Value {
    json!([{"locale": null, "channel": null, "data": data}])
}

async fn one(api: &Api, code: &str, values: Value) -> Value {
    api.upsert_one(json!({"code": code, "values": values}))
        .await
}

#[tokio::test]
async fn code_must_be_a_valid_string() {
    let api = start().await;
    let (_, body) = api
        .bulk(
            "packshot",
            json!([
                {"code": 42, "values": {}},
                {"values": {}},
                {"code": "has-dash"},
                {"code": "x".repeat(256)},
                {"code": ""},
                {"code": "x".repeat(255)},
            ]),
        )
        .await;
    assert_eq!(body[0]["code"], 42);
    assert_item_error(
        &body[0],
        INVALID,
        "code",
        "Integer value found, but a string is required",
    );
    assert_eq!(body[1]["code"], "");
    assert_item_error(&body[1], INVALID, "code", "The property code is required");
    assert_item_error(&body[2], RULES, "code", "letters, numbers and underscores");
    assert_item_error(&body[3], RULES, "code", "255 characters or less");
    assert_item_error(&body[4], RULES, "code", "should not be blank");
    assert_eq!(body[5]["status_code"], 201);
}

#[tokio::test]
async fn asset_shape_is_checked_as_a_json_schema() {
    let api = start().await;
    let (_, body) = api
        .bulk(
            "packshot",
            json!([
                {"code": "a", "created": "2021-01-01T00:00:00+00:00"},
                {"code": "b", "values": []},
                {"code": "c", "values": {"alt_text": {"locale": "fr_FR", "channel": null, "data": "x"}}},
                {"code": "d", "values": {"alt_text": [{"locale": "fr_FR", "data": "x"}]}},
                {"code": "e", "values": {"alt_text": [{"locale": "fr_FR", "channel": null, "data": "x", "extra": 1}]}},
                {"code": "f", "_links": {"self": {"href": "x"}}, "values": {}},
            ]),
        )
        .await;
    assert_item_error(&body[0], INVALID, "", "The property created is not defined");
    assert_item_error(
        &body[1],
        INVALID,
        "values",
        "Array value found, but an object is required",
    );
    assert_item_error(
        &body[2],
        INVALID,
        "values.alt_text",
        "Object value found, but an array is required",
    );
    assert_item_error(
        &body[3],
        INVALID,
        "values.alt_text[0].channel",
        "The property channel is required",
    );
    assert_item_error(
        &body[4],
        INVALID,
        "values.alt_text[0]",
        "The property extra is not defined",
    );
    assert_eq!(
        body[5]["status_code"], 201,
        "_links is tolerated: {}",
        body[5]
    );
}

#[tokio::test]
async fn unknown_attribute_is_named_in_the_error() {
    let api = start().await;
    let r = one(&api, "a", json!({"foo": v(json!("x"))})).await;
    assert_eq!(r["status_code"], 422);
    assert_eq!(r["message"], RULES);
    assert_eq!(
        r["errors"],
        json!([{"property": "values.foo", "message": "The attribute \"foo\" does not exist for the asset family \"packshot\"."}])
    );
    // The same attribute exists in no other family than its own.
    let (_, body) = api
        .bulk(
            "user_instructions",
            json!([{"code": "b", "values": {"alt_text": v(json!("x"))}}]),
        )
        .await;
    assert_item_error(
        &body[0],
        RULES,
        "values.alt_text",
        "asset family \"user_instructions\"",
    );
}

#[tokio::test]
async fn locale_and_channel_must_match_the_attribute() {
    let api = start().await;
    let val = |l: Value, c: Value| json!([{"locale": l, "channel": c, "data": "x"}]);
    let cases = [
        (
            json!({"alt_text": val(json!("en_AU"), Value::Null)}),
            "The locale \"en_AU\" is not activated.",
        ),
        (
            json!({"alt_text": val(Value::Null, Value::Null)}),
            "a locale is required",
        ),
        (
            json!({"media_preview": val(json!("en_US"), Value::Null)}),
            "the locale must be null",
        ),
        (
            json!({"description": val(json!("en_US"), Value::Null)}),
            "a channel is required",
        ),
        (
            json!({"description": val(json!("en_US"), json!("mobile"))}),
            "The channel \"mobile\" does not exist.",
        ),
        (
            json!({"alt_text": val(json!("en_US"), json!("print"))}),
            "the channel must be null",
        ),
    ];
    for (i, (values, needle)) in cases.into_iter().enumerate() {
        let prop = format!(
            "values.{}",
            values.as_object().unwrap().keys().next().unwrap()
        );
        let r = one(&api, &format!("a{i}"), values).await;
        assert_item_error(&r, RULES, &prop, needle);
    }
    let ok = one(
        &api,
        "ok",
        json!({
            "description": [{"locale": "de_DE", "channel": "print", "data": "Text"}],
            "alt_text": val(json!("fr_FR"), Value::Null),
        }),
    )
    .await;
    assert_eq!(ok["status_code"], 201, "{ok}");
}

#[tokio::test]
async fn option_codes_must_exist() {
    let api = start().await;
    let r = one(&api, "a", json!({"shot_type": v(json!("side"))})).await;
    assert_item_error(
        &r,
        RULES,
        "values.shot_type",
        "The option \"side\" does not exist for the attribute \"shot_type\"",
    );
    let r = one(
        &api,
        "b",
        json!({"main_colors": v(json!(["red", "purple"]))}),
    )
    .await;
    assert_item_error(
        &r,
        RULES,
        "values.main_colors",
        "\"purple\" does not exist for the attribute \"main_colors\"",
    );
    assert_eq!(r["errors"].as_array().unwrap().len(), 1);
    let r = one(&api, "c", json!({"main_colors": v(json!("red"))})).await;
    assert_item_error(
        &r,
        INVALID,
        "values.main_colors[0].data",
        "but an array or a null is required",
    );
    let ok = one(
        &api,
        "d",
        json!({"main_colors": v(json!(["red", "blue"])), "shot_type": v(json!("back"))}),
    )
    .await;
    assert_eq!(ok["status_code"], 201, "{ok}");
}

#[tokio::test]
async fn text_length_and_regexp_rules() {
    let api = start().await;
    let alt = |s: String| json!({"alt_text": [{"locale": "en_US", "channel": null, "data": s}]});
    let r = one(&api, "a", alt("x".repeat(256))).await;
    assert_item_error(&r, RULES, "values.alt_text", "255 characters or less");
    // Length counts characters, not bytes.
    assert_eq!(
        one(&api, "b", alt("é".repeat(255))).await["status_code"],
        201
    );
    let r = one(&api, "c", json!({"product_ref": v(json!("abc"))})).await;
    assert_item_error(
        &r,
        RULES,
        "values.product_ref",
        "does not match the regular expression",
    );
    assert_eq!(
        one(&api, "d", json!({"product_ref": v(json!("AB-12"))})).await["status_code"],
        201
    );
    let r = one(&api, "e", json!({"product_ref": v(json!(12))})).await;
    assert_item_error(
        &r,
        INVALID,
        "values.product_ref[0].data",
        "Integer value found",
    );
}

#[tokio::test]
async fn numbers_travel_as_strings() {
    let api = start().await;
    let r = one(&api, "a", json!({"width_px": v(json!(12))})).await;
    assert_item_error(
        &r,
        INVALID,
        "values.width_px[0].data",
        "Integer value found, but a string or a null is required",
    );
    let r = one(&api, "b", json!({"width_px": v(json!("1.5"))})).await;
    assert_item_error(&r, RULES, "values.width_px", "should be an integer");
    let r = one(&api, "c", json!({"weight_kg": v(json!("heavy"))})).await;
    assert_item_error(&r, RULES, "values.weight_kg", "is not a number");
    let ok = one(
        &api,
        "d",
        json!({"width_px": v(json!("-12")), "weight_kg": v(json!("1.5"))}),
    )
    .await;
    assert_eq!(ok["status_code"], 201, "{ok}");
}

#[tokio::test]
async fn booleans_and_dates() {
    let api = start().await;
    let r = one(&api, "a", json!({"is_public": v(json!("true"))})).await;
    assert_item_error(
        &r,
        INVALID,
        "values.is_public[0].data",
        "String value found, but a boolean or a null is required",
    );
    let r = one(&api, "b", json!({"shot_date": v(json!("2021-13-01"))})).await;
    assert_item_error(&r, RULES, "values.shot_date", "not a valid ISO 8601 date");
    let r = one(&api, "c", json!({"shot_date": v(json!(20210101))})).await;
    assert_item_error(
        &r,
        INVALID,
        "values.shot_date[0].data",
        "Integer value found",
    );
    let ok = one(
        &api,
        "d",
        json!({"is_public": v(json!(false)), "shot_date": v(json!("2021-05-31T09:23:34+00:00"))}),
    )
    .await;
    assert_eq!(ok["status_code"], 201, "{ok}");
    let ok = one(&api, "e", json!({"shot_date": v(json!("2021-05-31"))})).await;
    assert_eq!(ok["status_code"], 201, "{ok}");
}

#[tokio::test]
async fn media_links_must_be_public_http_urls() {
    let api = start().await;
    let pdf =
        |code: &str, data: &str| json!({"code": code, "values": {"pdf_link": v(json!(data))}});
    let (_, body) = api
        .bulk(
            "user_instructions",
            json!([
                pdf("a", "http://localhost/manual.pdf"),
                pdf("b", "ftp://files.example.com/manual.pdf"),
                pdf("c", "http://10.0.0.8/manual.pdf"),
                pdf("d", "http://elasticsearch:9200/_cat"),
                pdf("e", "https://files.example.com/manual.pdf"),
                pdf("f", "manuals/manual.pdf"),
                pdf("g", "http://127.0.0.1:8080/x"),
            ]),
        )
        .await;
    assert_item_error(
        &body[0],
        RULES,
        "values.pdf_link",
        "\"localhost\" is not allowed",
    );
    assert_item_error(
        &body[1],
        RULES,
        "values.pdf_link",
        "protocol \"ftp\" is not allowed",
    );
    assert_item_error(
        &body[2],
        RULES,
        "values.pdf_link",
        "\"10.0.0.8\" is not allowed",
    );
    assert_item_error(
        &body[3],
        RULES,
        "values.pdf_link",
        "\"elasticsearch\" is not allowed",
    );
    assert_eq!(body[4]["status_code"], 201, "{}", body[4]);
    assert_eq!(
        body[5]["status_code"], 201,
        "relative links are accepted: {}",
        body[5]
    );
    assert_item_error(
        &body[6],
        RULES,
        "values.pdf_link",
        "\"127.0.0.1\" is not allowed",
    );
    // With a prefix, prefix + data is what is checked.
    let r = one(&api, "p", json!({"media_preview": v(json!("sku_1.jpg"))})).await;
    assert_eq!(r["status_code"], 201, "{r}");
    let r = one(&api, "q", json!({"media_preview": v(json!(5))})).await;
    assert_item_error(
        &r,
        INVALID,
        "values.media_preview[0].data",
        "Integer value found",
    );
}

#[tokio::test]
async fn media_files_must_have_been_uploaded() {
    let api = start().await;
    let r = one(
        &api,
        "a",
        json!({"source_file": v(json!("0/0/0/0/unknown.png"))}),
    )
    .await;
    assert_item_error(&r, RULES, "values.source_file", "does not exist");
    let upload = |name: &'static str| {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(b"bytes".to_vec()).file_name(name),
        );
        api.http
            .post(api.url("/api/rest/v1/asset-media-files"))
            .bearer_auth(&api.token)
            .multipart(form)
            .send()
    };
    let png = upload("photo.png").await.unwrap();
    let png_code = png.headers()["asset-media-file-code"]
        .to_str()
        .unwrap()
        .to_string();
    let r = one(&api, "b", json!({"source_file": v(json!(png_code))})).await;
    assert_eq!(r["status_code"], 201, "{r}");
    // `document` only takes pdf files.
    let (_, body) = api
        .bulk(
            "user_instructions",
            json!([{"code": "c", "values": {"document": v(json!(png_code))}}]),
        )
        .await;
    assert_item_error(
        &body[0],
        RULES,
        "values.document",
        "extension \"png\" is not allowed",
    );
    let pdf = upload("manual.pdf").await.unwrap();
    let pdf_code = pdf.headers()["asset-media-file-code"]
        .to_str()
        .unwrap()
        .to_string();
    let (_, body) = api
        .bulk(
            "user_instructions",
            json!([{"code": "d", "values": {"document": v(json!(pdf_code))}}]),
        )
        .await;
    assert_eq!(body[0]["status_code"], 201, "{}", body[0]);
}
