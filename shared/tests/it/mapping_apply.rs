//! Mapping DAM assets: routing, filters, codes, coercions, uploads, hashes, delete policies.

// Inside `mapping` so that `cargo test -p shared mapping` selects these tests.
mod mapping {
    use std::collections::HashMap;

    use crate::mapping_common::{
        attr, by_family, cloudinary_packshot, example_structures, structure,
    };
    use serde_json::{Value, json};
    use shared::akeneo::{AssetValue, FamilyStructure};
    use shared::mapping::{
        DeletePolicy, MapOutcome, MapStats, MappedAsset, Mapping, PendingUpload, SkipReason,
    };

    fn mapping(text: &str) -> Mapping {
        Mapping::from_toml_str(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn run(m: &Mapping, s: &HashMap<String, FamilyStructure>, fields: &Value) -> MapOutcome {
        m.map_asset("dam-1", fields, |f| s.get(f))
    }

    fn mapped(m: &Mapping, s: &HashMap<String, FamilyStructure>, fields: &Value) -> MappedAsset {
        match run(m, s, fields) {
            MapOutcome::Mapped(a) => a,
            other => panic!("expected Mapped, got {other:?}"),
        }
    }

    fn invalid(m: &Mapping, s: &HashMap<String, FamilyStructure>, fields: &Value) -> String {
        match run(m, s, fields) {
            MapOutcome::Invalid { reason, .. } => reason,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn data<'a>(a: &'a MappedAsset, attr: &str) -> &'a Value {
        &a.asset.values[attr][0].data
    }

    /// One family `f` whose attributes are given, with a rule per attribute written by the caller.
    fn single(
        attrs: Vec<shared::akeneo::AssetAttribute>,
        options: &[(&str, &[&str])],
    ) -> HashMap<String, FamilyStructure> {
        by_family(vec![structure("f", attrs, options)])
    }

    const ROUTE_F: &str = "[[route]]\nfamily = \"f\"\n";

    #[test]
    fn first_matching_route_wins_and_unrouted_assets_are_skipped() {
        let m = mapping(
            r#"
[[route]]
family = "videos"
when = [{ field = "resource_type", equals = "video" }]

[[route]]
family = "packshots"
when = [{ field = "resource_type", equals = "image" }, { field = "tags", contains = "packshot" }]

[[route]]
family = "images"
when = [{ field = "resource_type", equals = "image" }]
"#,
        );
        let s = by_family(vec![
            structure("videos", vec![], &[]),
            structure("packshots", vec![], &[]),
            structure("images", vec![], &[]),
        ]);
        let family = |fields: Value| match run(&m, &s, &fields) {
            MapOutcome::Mapped(a) => a.family,
            other => format!("{other:?}"),
        };
        assert_eq!(
            family(json!({"resource_type": "image", "tags": ["packshot"]})),
            "packshots"
        );
        assert_eq!(
            family(json!({"resource_type": "image", "tags": ["lifestyle"]})),
            "images"
        );
        assert_eq!(
            family(json!({"resource_type": "video", "tags": ["packshot"]})),
            "videos"
        );

        let batch = [
            json!({"resource_type": "image"}),
            json!({"resource_type": "raw"}),
            json!({"format": "pdf"}),
            json!({"resource_type": "video"}),
        ];
        let mut stats = MapStats::default();
        for fields in &batch {
            let outcome = run(&m, &s, fields);
            if let MapOutcome::Skipped { reason } = &outcome {
                assert_eq!(reason, &SkipReason::NoRoute);
            }
            stats.record(&outcome);
        }
        assert_eq!(
            stats,
            MapStats {
                mapped: 2,
                skipped: 2,
                invalid: 0
            }
        );
    }

    #[test]
    fn the_product_filter_skips_with_a_reason() {
        let m = mapping(
            r#"
[[route]]
family = "packshots"
require = [{ field = "context.custom.sku", regex = '^[A-Z0-9-]+$' }]
"#,
        );
        let s = by_family(vec![structure("packshots", vec![], &[])]);
        assert!(matches!(
            run(&m, &s, &json!({"context": {"custom": {"sku": "AM-90"}}})),
            MapOutcome::Mapped(_)
        ));
        for fields in [
            json!({"context": {"custom": {"sku": "am 90"}}}),
            json!({"id": "x"}),
        ] {
            match run(&m, &s, &fields) {
                MapOutcome::Skipped {
                    reason: SkipReason::Filtered { family, condition },
                } => {
                    assert_eq!(family, "packshots");
                    assert!(condition.contains("context.custom.sku"), "{condition}");
                }
                other => panic!("expected a filtered skip, got {other:?}"),
            }
        }
    }

    #[test]
    fn codes_are_normalised_and_collision_safe() {
        let m = mapping(&format!("{ROUTE_F}code = \"{{{{public_id}}}}\"\n"));
        let s = single(vec![], &[]);
        let code = |id: &str| mapped(&m, &s, &json!({"public_id": id})).code;
        assert_eq!(code("abc_123"), "abc_123");
        let dashed = code("a-b");
        assert!(dashed.starts_with("a_b_") && dashed.len() == 14, "{dashed}");
        assert_ne!(dashed, code("a_b"));
        let long = "x-".repeat(150);
        let c = code(&long);
        assert!(
            c.len() <= 255 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{c}"
        );
        assert_eq!(c, code(&long), "stable");
        assert_eq!(
            mapped(&m, &s, &json!({"public_id": "a-b"})).asset.code,
            dashed
        );
        // The code's field missing is permanent for this asset.
        assert!(invalid(&m, &s, &json!({})).contains("code"));
    }

    #[test]
    fn the_default_code_is_the_dam_id() {
        let m = mapping(ROUTE_F);
        let s = single(vec![], &[]);
        match m.map_asset("uuid_1", &json!({}), |f| s.get(f)) {
            MapOutcome::Mapped(a) => assert_eq!(a.code, "uuid_1"),
            other => panic!("{other:?}"),
        }
        match m.map_asset("0A3C-4C32", &json!({"asset_id": "z"}), |f| s.get(f)) {
            MapOutcome::Mapped(a) => assert!(a.code.starts_with("0A3C_4C32_"), "{}", a.code),
            other => panic!("{other:?}"),
        }
        match m.map_asset("ignored", &json!({"id": "gen_42"}), |f| s.get(f)) {
            MapOutcome::Mapped(a) => assert_eq!(a.code, "gen_42"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn text_stringifies_scalars_and_joins_lists() {
        let m = mapping(&format!(
            "{ROUTE_F}[route.values.title]\nfield = \"name\"\n[route.values.size]\nfield = \"bytes\"\n[route.values.keywords]\nfield = \"tags\"\nseparator = \" | \"\n[route.values.flags]\nfield = \"flags\"\n"
        ));
        let s = single(
            vec![
                attr("title", "text", json!({"max_characters": 10})),
                attr("size", "text", json!({})),
                attr("keywords", "text", json!({})),
                attr("flags", "text", json!({})),
            ],
            &[],
        );
        let a = mapped(
            &m,
            &s,
            &json!({"name": "Shoe", "bytes": 1024, "tags": ["a", "b", 3], "flags": true}),
        );
        assert_eq!(data(&a, "title"), "Shoe");
        assert_eq!(data(&a, "size"), "1024");
        assert_eq!(data(&a, "keywords"), "a | b | 3");
        assert_eq!(data(&a, "flags"), "true");
        let reason = invalid(&m, &s, &json!({"name": "A very long name"}));
        assert!(
            reason.contains("attribute `title`") && reason.contains("max_characters 10"),
            "{reason}"
        );
        let reason = invalid(&m, &s, &json!({"name": {"nested": 1}}));
        assert!(
            reason.contains("attribute `title`") && reason.contains("object"),
            "{reason}"
        );
    }

    #[test]
    fn numbers_are_strings_and_integers_only_without_decimals() {
        let m = mapping(&format!(
            "{ROUTE_F}[route.values.count]\nfield = \"count\"\n[route.values.ratio]\nfield = \"ratio\"\n"
        ));
        let s = single(
            vec![
                attr("count", "number", json!({"decimals_allowed": false})),
                attr("ratio", "number", json!({"decimals_allowed": true})),
            ],
            &[],
        );
        let a = mapped(&m, &s, &json!({"count": 42, "ratio": 2.5}));
        assert_eq!(data(&a, "count"), "42");
        assert_eq!(data(&a, "ratio"), "2.5");
        let a = mapped(&m, &s, &json!({"count": " 7 ", "ratio": "-0.75"}));
        assert_eq!(data(&a, "count"), "7");
        assert_eq!(data(&a, "ratio"), "-0.75");
        assert_eq!(
            data(&mapped(&m, &s, &json!({"count": "3.00"})), "count"),
            "3"
        );
        assert_eq!(data(&mapped(&m, &s, &json!({"count": 3.0})), "count"), "3");
        let reason = invalid(&m, &s, &json!({"count": "2.5"}));
        assert!(
            reason.contains("attribute `count`") && reason.contains("decimals are not allowed"),
            "{reason}"
        );
        let reason = invalid(&m, &s, &json!({"ratio": "12kg"}));
        assert!(
            reason.contains("attribute `ratio`") && reason.contains("not a number"),
            "{reason}"
        );
        assert!(invalid(&m, &s, &json!({"ratio": "1e5"})).contains("not a number"));
        assert!(invalid(&m, &s, &json!({"ratio": true})).contains("expected a number"));
    }

    #[test]
    fn booleans_accept_words_and_digits() {
        let m = mapping(&format!("{ROUTE_F}[route.values.on]\nfield = \"v\"\n"));
        let s = single(vec![attr("on", "boolean", json!({}))], &[]);
        for (v, want) in [
            (json!(true), true),
            (json!("yes"), true),
            (json!("1"), true),
            (json!(1), true),
            (json!("TRUE"), true),
            (json!(false), false),
            (json!("no"), false),
            (json!("0"), false),
        ] {
            assert_eq!(
                data(&mapped(&m, &s, &json!({"v": v})), "on"),
                &json!(want),
                "{v}"
            );
        }
        let reason = invalid(&m, &s, &json!({"v": "maybe"}));
        assert!(
            reason.contains("attribute `on`") && reason.contains("not a boolean"),
            "{reason}"
        );
    }

    #[test]
    fn dates_accept_rfc3339_and_plain_dates() {
        let m = mapping(&format!("{ROUTE_F}[route.values.d]\nfield = \"v\"\n"));
        let s = single(vec![attr("d", "date", json!({}))], &[]);
        let date = |v: &str| data(&mapped(&m, &s, &json!({"v": v})), "d").clone();
        assert_eq!(date("2026-11-02"), "2026-11-02T00:00:00+00:00");
        assert_eq!(date("2026-11-02T10:15:00Z"), "2026-11-02T10:15:00+00:00");
        assert_eq!(
            date("2026-11-02T10:15:00.123+02:00"),
            "2026-11-02T10:15:00+02:00"
        );
        assert_eq!(date("2024-02-29"), "2024-02-29T00:00:00+00:00");
        for bad in [
            "2025-02-29",
            "02/11/2026",
            "2026-13-01",
            "2026-11-02T25:00:00Z",
            "2026-11-02T10:15:00",
        ] {
            let reason = invalid(&m, &s, &json!({"v": bad}));
            assert!(
                reason.contains("attribute `d`") && reason.contains("not a date"),
                "{bad}: {reason}"
            );
        }
    }

    #[test]
    fn toml_dates_work_as_fixed_values_and_in_conditions() {
        let m = mapping(
            "[[route]]\nfamily = \"f\"\nwhen = [{ field = \"day\", equals = 2026-11-02 }]\n[route.values.d]\nvalue = 2026-11-02T10:15:00Z\n",
        );
        let s = single(vec![attr("d", "date", json!({}))], &[]);
        let a = mapped(&m, &s, &json!({"day": "2026-11-02"}));
        assert_eq!(data(&a, "d"), "2026-11-02T10:15:00+00:00");
        assert!(matches!(
            run(&m, &s, &json!({"day": "2026-11-03"})),
            MapOutcome::Skipped { .. }
        ));
    }

    #[test]
    fn options_are_normalised_mapped_and_checked() {
        let text = |create: bool| {
            format!(
                "[settings]\ncreate_missing_options = {create}\n{ROUTE_F}[route.values.color]\nfield = \"color\"\nmap = {{ \"Off White\" = \"ecru\" }}\n[route.values.tags]\nfield = \"tags\"\n[route.values.sizes]\nfield = \"sizes\"\nsplit = \",\"\n"
            )
        };
        let s = single(
            vec![
                attr("color", "single_option", json!({})),
                attr("tags", "multiple_options", json!({})),
                attr("sizes", "multiple_options", json!({})),
            ],
            &[
                ("color", &["dark_blue", "ecru", "Red"]),
                ("tags", &["summer", "sale"]),
                ("sizes", &["s", "m", "l"]),
            ],
        );
        let strict = mapping(&text(false));
        let a = mapped(
            &strict,
            &s,
            &json!({"color": "Dark Blue", "tags": ["Summer", "sale", "SUMMER"], "sizes": "S, m ,L"}),
        );
        assert_eq!(data(&a, "color"), "dark_blue");
        assert_eq!(data(&a, "tags"), &json!(["summer", "sale"]), "deduplicated");
        assert_eq!(data(&a, "sizes"), &json!(["s", "m", "l"]));
        assert_eq!(
            data(
                &mapped(&strict, &s, &json!({"color": "Off White"})),
                "color"
            ),
            "ecru"
        );
        // The PIM's spelling wins over the normalised one.
        assert_eq!(
            data(&mapped(&strict, &s, &json!({"color": "red"})), "color"),
            "Red"
        );
        let reason = invalid(&strict, &s, &json!({"color": "Neon Pink"}));
        assert!(
            reason.contains("attribute `color`") && reason.contains("\"neon_pink\" does not exist"),
            "{reason}"
        );
        assert!(invalid(&strict, &s, &json!({"color": ["a", "b"]})).contains("attribute `color`"));

        let lenient = mapping(&text(true));
        let a = mapped(
            &lenient,
            &s,
            &json!({"color": "Neon Pink", "tags": ["winter", "sale"]}),
        );
        assert_eq!(data(&a, "color"), "neon_pink");
        assert_eq!(
            a.missing_options,
            [
                ("color".to_string(), "neon_pink".to_string()),
                ("tags".to_string(), "winter".to_string())
            ]
        );
    }

    #[test]
    fn locale_fan_out_writes_one_value_per_locale() {
        let m = mapping(&format!(
            "{ROUTE_F}[route.values.title]\nlocales = {{ en_US = \"metadata.title_en\", fr_FR = \"metadata.title_fr\", de_DE = \"{{{{public_id}}}} (de)\" }}\nchannel = \"ecommerce\"\n"
        ));
        let s = single(
            vec![attr(
                "title",
                "text",
                json!({"value_per_locale": true, "value_per_channel": true}),
            )],
            &[],
        );
        let a = mapped(
            &m,
            &s,
            &json!({"public_id": "p1", "metadata": {"title_en": "Shoe", "title_fr": "Chaussure"}}),
        );
        let v = |l: &str, d: &str| AssetValue {
            locale: Some(l.into()),
            channel: Some("ecommerce".into()),
            data: json!(d),
        };
        assert_eq!(
            a.asset.values["title"],
            [
                v("de_DE", "p1 (de)"),
                v("en_US", "Shoe"),
                v("fr_FR", "Chaussure")
            ]
        );
        // A missing locale source yields no value for that locale only.
        let a = mapped(
            &m,
            &s,
            &json!({"public_id": "p1", "metadata": {"title_en": "Shoe"}}),
        );
        assert_eq!(a.asset.values["title"].len(), 2);
    }

    #[test]
    fn templates_fixed_values_and_scoped_values() {
        let m = mapping(&format!(
            "{ROUTE_F}[route.values.file_name]\ntemplate = \"{{{{public_id}}}}.{{{{format}}}}\"\n[route.values.source]\nvalue = \"cloudinary\"\n[route.values.caption]\nfield = \"context.custom.caption\"\nlocale = \"en_US\"\nchannel = \"print\"\n[route.values.first_tag]\nfield = \"tags.0\"\n"
        ));
        let s = single(
            vec![
                attr("file_name", "text", json!({})),
                attr("source", "text", json!({})),
                attr(
                    "caption",
                    "text",
                    json!({"value_per_locale": true, "value_per_channel": true}),
                ),
                attr("first_tag", "text", json!({})),
            ],
            &[],
        );
        let a = mapped(&m, &s, &cloudinary_packshot_with_caption());
        assert_eq!(data(&a, "file_name"), "shoes/air-max_front.jpg");
        assert_eq!(data(&a, "source"), "cloudinary");
        assert_eq!(data(&a, "first_tag"), "packshot");
        assert_eq!(
            a.asset.values["caption"],
            [AssetValue {
                locale: Some("en_US".into()),
                channel: Some("print".into()),
                data: json!("Hi")
            }]
        );
        // A template with a missing field gives no value at all.
        let a = mapped(&m, &s, &json!({"public_id": "p"}));
        assert!(!a.asset.values.contains_key("file_name"));
        assert_eq!(data(&a, "source"), "cloudinary");
    }

    fn cloudinary_packshot_with_caption() -> Value {
        let mut v = cloudinary_packshot();
        v["context"]["custom"]["caption"] = json!("Hi");
        v
    }

    #[test]
    fn media_links_strip_the_attribute_prefix_and_suffix() {
        let m = mapping(&format!(
            "{ROUTE_F}[route.values.full]\nfield = \"secure_url\"\n[route.values.middle]\ntemplate = \"{{{{public_id}}}}\"\n[route.values.bare]\nfield = \"secure_url\"\n"
        ));
        let s = single(
            vec![
                attr(
                    "full",
                    "media_link",
                    json!({"prefix": "https://res.cloudinary.com/acme/image/upload/", "suffix": ".jpg"}),
                ),
                attr(
                    "middle",
                    "media_link",
                    json!({"prefix": "https://res.cloudinary.com/acme/image/upload/", "suffix": ".jpg"}),
                ),
                attr(
                    "bare",
                    "media_link",
                    json!({"prefix": null, "suffix": null}),
                ),
            ],
            &[],
        );
        let a = mapped(
            &m,
            &s,
            &json!({"secure_url": "https://res.cloudinary.com/acme/image/upload/v17/shoes/a.jpg", "public_id": "v17/shoes/a"}),
        );
        assert_eq!(data(&a, "full"), "v17/shoes/a");
        assert_eq!(data(&a, "middle"), "v17/shoes/a", "already the middle part");
        assert_eq!(
            data(&a, "bare"),
            "https://res.cloudinary.com/acme/image/upload/v17/shoes/a.jpg"
        );
    }

    #[test]
    fn media_files_become_pending_uploads() {
        let m = mapping(&format!(
            "{ROUTE_F}[route.values.original]\nfield = \"secure_url\"\n[route.values.thumb]\nfield = \"thumbnails.webimage\"\nlocale = \"en_US\"\n"
        ));
        let s = single(
            vec![
                attr("original", "media_file", json!({"media_type": "image"})),
                attr(
                    "thumb",
                    "media_file",
                    json!({"media_type": "image", "value_per_locale": true}),
                ),
            ],
            &[],
        );
        let mut a = mapped(
            &m,
            &s,
            &json!({"secure_url": "https://x/a.jpg", "thumbnails": {"webimage": "https://x/t.jpg"}}),
        );
        assert!(a.asset.values.is_empty(), "no data until uploaded");
        assert_eq!(
            a.uploads,
            [
                PendingUpload {
                    attribute: "original".into(),
                    locale: None,
                    channel: None,
                    source_url: "https://x/a.jpg".into()
                },
                PendingUpload {
                    attribute: "thumb".into(),
                    locale: Some("en_US".into()),
                    channel: None,
                    source_url: "https://x/t.jpg".into()
                },
            ]
        );
        let first = a.uploads[0].clone();
        a.complete_upload(&first, "a/b/c/abc_a.jpg".into());
        assert_eq!(data(&a, "original"), "a/b/c/abc_a.jpg");
        // The upload source is part of the content: a new rendition URL changes the hash.
        let h1 = mapped(&m, &s, &json!({"secure_url": "https://x/a.jpg"})).content_hash;
        let h2 = mapped(&m, &s, &json!({"secure_url": "https://x/a2.jpg"})).content_hash;
        assert_ne!(h1, h2);
    }

    #[test]
    fn missing_fields_give_no_value_unless_null_if_missing() {
        let m = mapping(&format!(
            "{ROUTE_F}[route.values.alt]\nfield = \"context.custom.alt\"\nnull_if_missing = true\n[route.values.note]\nfield = \"context.custom.note\"\n"
        ));
        let s = single(
            vec![
                attr("alt", "text", json!({})),
                attr("note", "text", json!({})),
            ],
            &[],
        );
        let a = mapped(&m, &s, &json!({"context": {"custom": {"alt": null}}}));
        assert_eq!(
            a.asset.values["alt"],
            [AssetValue {
                locale: None,
                channel: None,
                data: Value::Null
            }]
        );
        assert!(!a.asset.values.contains_key("note"), "no value, not null");
        let a = mapped(
            &m,
            &s,
            &json!({"context": {"custom": {"alt": "A", "note": "N"}}}),
        );
        assert_eq!(data(&a, "alt"), "A");
        assert_eq!(data(&a, "note"), "N");
    }

    #[test]
    fn unknown_families_and_attributes_at_map_time_are_invalid() {
        let m = mapping(&format!("{ROUTE_F}[route.values.alt]\nfield = \"a\"\n"));
        let none: HashMap<String, FamilyStructure> = HashMap::new();
        match run(&m, &none, &json!({"a": "x"})) {
            MapOutcome::Invalid { family, reason } => {
                assert_eq!(family, "f");
                assert!(reason.contains("not known"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let s = single(vec![], &[]);
        let reason = invalid(&m, &s, &json!({"a": "x"}));
        assert!(
            reason.contains("attribute `alt` does not exist in family `f`"),
            "{reason}"
        );
    }

    #[test]
    fn content_hash_is_stable_and_follows_the_content() {
        let m = mapping(&format!(
            "{ROUTE_F}[route.values.title]\nfield = \"t\"\n[route.values.tags]\nfield = \"tags\"\n[route.values.n]\nfield = \"n\"\n"
        ));
        let s = single(
            vec![
                attr("title", "text", json!({})),
                attr("tags", "text", json!({})),
                attr("n", "number", json!({})),
            ],
            &[],
        );
        let a: Value = serde_json::from_str(
            r#"{"t": "Shoe", "tags": ["a", "b"], "n": 3, "extra": {"x": 1, "y": 2}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"extra": {"y": 2, "x": 1}, "n": 3, "tags": ["a", "b"], "t": "Shoe"}"#,
        )
        .unwrap();
        let h = mapped(&m, &s, &a).content_hash;
        assert_eq!(h.len(), 64);
        assert!(h.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(h, mapped(&m, &s, &a).content_hash, "same input, same hash");
        assert_eq!(
            h,
            mapped(&m, &s, &b).content_hash,
            "key order is irrelevant"
        );
        assert_eq!(
            h,
            mapped(&m, &s, &json!({"t": "Shoe", "tags": ["a", "b"], "n": "3"})).content_hash,
            "same written data"
        );
        assert_ne!(
            h,
            mapped(&m, &s, &json!({"t": "Shoe!", "tags": ["a", "b"], "n": 3})).content_hash
        );
        assert_ne!(
            h,
            mapped(&m, &s, &json!({"t": "Shoe", "tags": ["b", "a"], "n": 3})).content_hash
        );
        // Pinned: the hash must not drift between releases or platforms, or every asset resyncs.
        let pinned = mapped(&m, &s, &json!({"t": "x"})).content_hash;
        assert_eq!(pinned, sha256_hex(br#"{"family":"f","values":{"title":[{"locale":null,"channel":null,"data":"x"}]},"uploads":[]}"#));
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::{Digest, Sha256};
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn delete_policies_per_family() {
        let m = mapping(
            r#"
[[route]]
family = "a"
on_delete = "delete"
[[route]]
family = "b"
on_delete = "ignore"
[[route]]
family = "c"
on_delete = { clear = ["media_url", "alt"] }
[route.values.alt]
locales = { en_US = "alt_en", fr_FR = "alt_fr" }
[[route]]
family = "d"
"#,
        );
        assert_eq!(m.delete_policy("a"), DeletePolicy::Delete);
        assert_eq!(m.delete_policy("b"), DeletePolicy::Ignore);
        assert_eq!(
            m.delete_policy("c"),
            DeletePolicy::Clear(vec!["media_url".into(), "alt".into()])
        );
        assert_eq!(
            m.delete_policy("d"),
            DeletePolicy::Delete,
            "routed family without a policy"
        );
        assert_eq!(m.delete_policy("other"), DeletePolicy::Ignore, "not ours");
        assert!(m.clear_values("a", "x").is_none());
        let cleared = m.clear_values("c", "code1").unwrap();
        assert_eq!(cleared.code, "code1");
        let null = |l: Option<&str>| AssetValue {
            locale: l.map(Into::into),
            channel: None,
            data: Value::Null,
        };
        assert_eq!(cleared.values["media_url"], [null(None)]);
        assert_eq!(
            cleared.values["alt"],
            [null(Some("en_US")), null(Some("fr_FR"))]
        );
    }

    #[test]
    fn the_example_maps_a_cloudinary_packshot() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/production/mapping.toml");
        let m = Mapping::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
        let s = example_structures();
        let a = mapped(&m, &s, &cloudinary_packshot());
        assert_eq!(a.family, "packshots");
        assert_eq!(a.code, "3f2a9c0b8d7e6f5a4b3c2d1e0f9a8b7c");
        assert_eq!(data(&a, "media_url"), "shoes/air-max_front.jpg");
        assert_eq!(a.asset.values["alt_text"].len(), 2);
        assert_eq!(data(&a, "colors"), &json!(["red", "white"]));
        assert_eq!(data(&a, "season"), "fw26");
        assert_eq!(data(&a, "published"), &json!(true));
        assert_eq!(data(&a, "shot_date"), "2026-11-02T10:15:00+00:00");
        assert_eq!(data(&a, "file_size"), "482113");
        assert_eq!(data(&a, "keywords"), "packshot | red");
        assert_eq!(a.uploads.len(), 1);
        assert!(a.missing_options.is_empty());
        // No SKU: filtered. A plain image elsewhere: no route.
        let mut no_sku = cloudinary_packshot();
        no_sku["context"]["custom"]
            .as_object_mut()
            .unwrap()
            .remove("sku");
        assert!(matches!(
            run(&m, &s, &no_sku),
            MapOutcome::Skipped {
                reason: SkipReason::Filtered { .. }
            }
        ));
        let other = json!({"asset_id": "x", "resource_type": "image", "public_id": "misc/a", "format": "png", "tags": []});
        assert!(matches!(
            run(&m, &s, &other),
            MapOutcome::Skipped {
                reason: SkipReason::NoRoute
            }
        ));
    }

    #[test]
    fn bynder_and_generic_dam_shapes_map_too() {
        let m = mapping(
            r#"
[[route]]
family = "bynder_images"
when = [{ field = "type", equals = "image" }, { field = "property_Channel", contains = "web" }]
[route.values.title]
field = "name"
[route.values.colors]
field = "property_Color"
[route.values.preview]
field = "thumbnails.webimage"

[[route]]
family = "generic"
when = [{ field = "fields.kind", in = ["photo", "render"] }]
code = "gen_{{id}}_v{{version}}"
[route.values.title]
field = "fields.title"
[route.values.updated]
field = "modified_at"
"#,
        );
        let s = by_family(vec![
            structure(
                "bynder_images",
                vec![
                    attr("title", "text", json!({})),
                    attr("colors", "multiple_options", json!({})),
                    attr(
                        "preview",
                        "media_link",
                        json!({"prefix": "https://cdn.example.com/m/"}),
                    ),
                ],
                &[("colors", &["navy", "sky_blue"])],
            ),
            structure(
                "generic",
                vec![
                    attr("title", "text", json!({})),
                    attr("updated", "date", json!({})),
                ],
                &[],
            ),
        ]);
        let bynder = json!({
            "id": "A1B2C3D4-E5F6-4711-8899-AABBCCDDEEFF", "name": "Navy jacket", "type": "image",
            "property_Channel": ["web", "print"], "property_Color": ["Navy", "Sky Blue"],
            "thumbnails": {"webimage": "https://cdn.example.com/m/abc/webimage-jacket.png"}
        });
        let a = mapped(&m, &s, &bynder);
        assert_eq!(a.family, "bynder_images");
        assert!(
            a.code.starts_with("A1B2C3D4_E5F6_4711_8899_AABBCCDDEEFF_"),
            "{}",
            a.code
        );
        assert_eq!(data(&a, "colors"), &json!(["navy", "sky_blue"]));
        assert_eq!(data(&a, "preview"), "abc/webimage-jacket.png");

        let generic = json!({"id": "42", "version": 7, "modified_at": "2026-11-27", "fields": {"kind": "render", "title": "Chair"}});
        let a = mapped(&m, &s, &generic);
        assert_eq!(
            (a.family.as_str(), a.code.as_str()),
            ("generic", "gen_42_v7")
        );
        assert_eq!(data(&a, "updated"), "2026-11-27T00:00:00+00:00");
    }
}
