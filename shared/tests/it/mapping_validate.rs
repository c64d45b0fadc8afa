//! Checking a mapping against the PIM structure.

// Inside `mapping` so that `cargo test -p shared mapping` selects these tests.
mod mapping {
    use std::collections::{BTreeMap, HashMap};

    use crate::mapping_common::{attr, by_family, example_structures, structure};
    use serde_json::json;
    use shared::akeneo::FamilyStructure;
    use shared::mapping::{Mapping, Severity, ValidationIssue};

    fn mapping(text: &str) -> Mapping {
        Mapping::from_toml_str(text, "test.toml").unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(issues: &[ValidationIssue]) -> Vec<&ValidationIssue> {
        issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .collect()
    }

    fn family_f() -> HashMap<String, FamilyStructure> {
        by_family(vec![structure(
            "f",
            vec![
                attr("title", "text", json!({"value_per_locale": true})),
                attr("sku", "text", json!({})),
                attr("caption", "text", json!({"value_per_channel": true})),
                attr("color", "single_option", json!({})),
                attr("count", "number", json!({"decimals_allowed": false})),
                attr("tags", "auto_tagging", json!({})),
            ],
            &[("color", &["red", "blue"])],
        )])
    }

    #[test]
    fn the_example_file_is_valid_against_its_structure() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/production/mapping.toml");
        let m = Mapping::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
        let s = example_structures();
        let issues = m.validate_against(&s);
        assert!(errors(&issues).is_empty(), "{issues:#?}");
        // And with a structure missing an attribute, the problem is found.
        let mut broken = s.clone();
        broken
            .get_mut("lifestyle")
            .unwrap()
            .attributes
            .retain(|a| a.code != "caption");
        let issues = m.validate_against(&broken);
        assert_eq!(errors(&issues).len(), 1, "{issues:#?}");
        assert_eq!(issues[0].attribute.as_deref(), Some("caption"));
    }

    #[test]
    fn unknown_families_and_attributes_are_named() {
        let m = mapping(
            "[[route]]\nfamily = \"f\"\n[route.values.alt_text]\nfield = \"a\"\n[[route]]\nfamily = \"ghost\"\n",
        );
        let issues = m.validate_against(&family_f());
        let errs = errors(&issues);
        assert_eq!(errs.len(), 2, "{issues:#?}");
        let attr_issue = errs.iter().find(|i| i.attribute.is_some()).unwrap();
        assert_eq!(attr_issue.family, "f");
        assert_eq!(attr_issue.attribute.as_deref(), Some("alt_text"));
        assert_eq!(attr_issue.key, "route[0].values.alt_text");
        assert!(
            attr_issue.message.contains("`alt_text`") && attr_issue.message.contains("family `f`"),
            "{attr_issue}"
        );
        let fam_issue = errs.iter().find(|i| i.attribute.is_none()).unwrap();
        assert_eq!(fam_issue.family, "ghost");
        assert!(
            fam_issue.message.contains("`ghost` does not exist"),
            "{fam_issue}"
        );
    }

    #[test]
    fn locale_and_channel_misuse_is_reported() {
        let m = mapping(
            r#"
[[route]]
family = "f"
[route.values.title]
field = "t"
[route.values.sku]
field = "s"
locale = "en_US"
[route.values.caption]
field = "c"
locale = "en_US"
"#,
        );
        let issues = m.validate_against(&family_f());
        let msg = |a: &str| {
            issues
                .iter()
                .filter(|i| i.attribute.as_deref() == Some(a))
                .map(|i| i.message.clone())
                .collect::<Vec<_>>()
        };
        assert!(msg("title")[0].contains("is per locale"), "{issues:#?}");
        assert!(msg("sku")[0].contains("not per locale"), "{issues:#?}");
        let caption = msg("caption");
        assert_eq!(
            caption.len(),
            2,
            "locale given and channel missing: {caption:?}"
        );
        assert!(caption.iter().any(|m| m.contains("not per locale")));
        assert!(caption.iter().any(|m| m.contains("is per channel")));
        assert_eq!(errors(&issues).len(), 4);

        let ok = mapping(
            "[[route]]\nfamily = \"f\"\n[route.values.title]\nlocales = { en_US = \"a\", fr_FR = \"b\" }\n[route.values.caption]\nfield = \"c\"\nchannel = \"print\"\n",
        );
        assert!(ok.validate_against(&family_f()).is_empty());
    }

    #[test]
    fn missing_fixed_options_are_errors_unless_they_will_be_created() {
        let text = |create: bool| {
            format!(
                "[settings]\ncreate_missing_options = {create}\n[[route]]\nfamily = \"f\"\n[route.values.color]\nvalue = \"Green\"\n"
            )
        };
        let issues = mapping(&text(false)).validate_against(&family_f());
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert_eq!(issues[0].severity, Severity::Error);
        assert!(
            issues[0]
                .message
                .contains("option `green` does not exist for attribute `color`"),
            "{}",
            issues[0]
        );
        let issues = mapping(&text(true)).validate_against(&family_f());
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert_eq!(issues[0].severity, Severity::Info);
        assert!(issues[0].message.contains("will be created"));
        // Existing options, any case: nothing to say.
        let ok = mapping("[[route]]\nfamily = \"f\"\n[route.values.color]\nvalue = \"RED\"\n");
        assert!(ok.validate_against(&family_f()).is_empty());
        // Map targets are option codes too.
        let mapped = mapping(
            "[[route]]\nfamily = \"f\"\n[route.values.color]\nfield = \"c\"\nmap = { Rouge = \"red\", Vert = \"green\" }\n",
        );
        let issues = mapped.validate_against(&family_f());
        assert_eq!(errors(&issues).len(), 1, "{issues:#?}");
        assert!(issues[0].message.contains("`green`"));
    }

    #[test]
    fn type_incompatible_fixed_values_and_unwritable_types_are_errors() {
        let m = mapping(
            "[[route]]\nfamily = \"f\"\non_delete = { clear = [\"nope\"] }\n[route.values.count]\nvalue = 2.5\n[route.values.tags]\nfield = \"tags\"\n[route.values.sku]\nvalue = \"ok\"\nsplit = \",\"\n",
        );
        let issues = m.validate_against(&family_f());
        let find = |a: &str| {
            issues
                .iter()
                .find(|i| i.attribute.as_deref() == Some(a))
                .unwrap_or_else(|| panic!("{a}: {issues:#?}"))
        };
        let count = find("count");
        assert_eq!(count.severity, Severity::Error);
        assert!(
            count
                .message
                .contains("fixed value 2.5 does not fit attribute `count`"),
            "{count}"
        );
        assert!(find("tags").message.contains("cannot be written"));
        assert_eq!(find("sku").severity, Severity::Warning);
        assert!(find("nope").message.contains("to clear does not exist"));
        assert_eq!(issues[0].severity, Severity::Error, "errors first");
        assert_eq!(issues.last().unwrap().severity, Severity::Warning);
    }

    #[test]
    fn structures_can_come_from_maps_or_closures() {
        let m = mapping("[[route]]\nfamily = \"f\"\n[route.values.sku]\nfield = \"s\"\n");
        let s = family_f();
        let tree: BTreeMap<String, FamilyStructure> = s.clone().into_iter().collect();
        assert!(m.validate_against(&s).is_empty());
        assert!(m.validate_against(&tree).is_empty());
        assert!(m.validate_against(|f: &str| s.get(f)).is_empty());
        assert_eq!(m.validate_against(|_: &str| None).len(), 1);
        let shown = m.validate_against(|_: &str| None)[0].to_string();
        assert_eq!(
            shown,
            "error: route[0].family: asset family `f` does not exist in the PIM"
        );
    }
}
