//! Loading mapping files: parse errors and static checks point at file:line:column and key.

// Inside `mapping` so that `cargo test -p shared mapping` selects these tests.
mod mapping {
    use shared::mapping::{Mapping, MappingError};

    fn load_err(text: &str) -> MappingError {
        Mapping::from_toml_str(text, "mapping.toml").expect_err("mapping should be rejected")
    }

    const ROUTE: &str = "[[route]]\nfamily = \"packshots\"\n";

    #[test]
    fn a_typo_in_a_value_key_names_file_line_column_and_key() {
        let text = "\
[settings]
create_missing_options = false

[[route]]
family = \"packshots\"

[[route]]
family = \"lifestyle\"

[route.values.alt_text]
field = \"context.custom.alt\"
form = \"x\"
";
        let err = load_err(text);
        let issue = &err.issues()[0];
        assert_eq!(issue.line, Some(12), "{err}");
        assert_eq!(issue.column, Some(1), "{err}");
        assert_eq!(issue.key, "route[1].values.alt_text", "{err}");
        assert!(issue.message.contains("unknown field \"form\""), "{err}");
        assert!(
            issue.message.contains("field"),
            "lists the expected keys: {err}"
        );
        assert!(
            err.to_string()
                .starts_with("mapping.toml:12:1: route[1].values.alt_text: unknown field \"form\""),
            "{err}"
        );
    }

    #[test]
    fn unknown_top_level_and_settings_keys_are_errors() {
        let err = load_err("[setting]\ncreate_missing_options = true\n");
        assert_eq!(err.issues()[0].line, Some(1), "{err}");
        assert!(
            err.to_string().contains("unknown field \"setting\""),
            "{err}"
        );

        let err = load_err(&format!(
            "[settings]\ncreate_missing_option = true\n{ROUTE}"
        ));
        assert_eq!(err.issues()[0].line, Some(2), "{err}");
        assert!(err.to_string().contains("settings"), "{err}");
    }

    #[test]
    fn toml_syntax_errors_have_a_position() {
        let err = load_err("[[route]]\nfamily = \"a\n");
        assert_eq!(err.issues()[0].line, Some(2), "{err}");
        assert!(err.to_string().starts_with("mapping.toml:2:"), "{err}");
    }

    #[test]
    fn a_bad_regex_points_at_its_condition() {
        let text =
            format!("{ROUTE}when = [\n  {{ field = \"public_id\", regex = \"(unclosed\" }},\n]\n");
        let err = load_err(&text);
        let issue = &err.issues()[0];
        assert_eq!(issue.key, "route[0].when[0]", "{err}");
        assert_eq!(issue.line, Some(4), "{err}");
        assert!(issue.message.contains("invalid regex"), "{err}");
    }

    #[test]
    fn a_condition_with_two_operators_is_refused() {
        let text =
            format!("{ROUTE}require = [{{ field = \"sku\", exists = true, regex = \"x\" }}]\n");
        let err = load_err(&text);
        assert_eq!(err.issues()[0].key, "route[0].require[0]", "{err}");
        assert!(err.to_string().contains("exactly one"), "{err}");
    }

    #[test]
    fn empty_or_invalid_families_are_refused() {
        let err = load_err("[[route]]\nfamily = \"\"\n");
        assert_eq!(err.issues()[0].key, "route[0].family", "{err}");
        assert!(err.to_string().contains("empty family"), "{err}");
        assert_eq!(err.issues()[0].line, Some(2));

        let err = load_err("[[route]]\nfamily = \"pack-shots\"\n");
        assert!(
            err.to_string().contains("not an Akeneo family code"),
            "{err}"
        );

        let err = load_err("[[route]]\n");
        assert!(
            err.to_string().contains("missing field \"family\""),
            "{err}"
        );
    }

    #[test]
    fn conflicting_value_sources_are_refused() {
        let text =
            format!("{ROUTE}[route.values.title]\nfield = \"name\"\ntemplate = \"{{{{name}}}}\"\n");
        let err = load_err(&text);
        let issue = &err.issues()[0];
        assert_eq!(issue.key, "route[0].values.title", "{err}");
        assert!(
            issue
                .message
                .contains("conflicting value sources field, template"),
            "{err}"
        );
        assert!(issue.line.is_some());

        let err = load_err(&format!(
            "{ROUTE}[route.values.title]\nlocale = \"en_US\"\n"
        ));
        assert!(err.to_string().contains("no source"), "{err}");

        let text = format!(
            "{ROUTE}[route.values.title]\nlocales = {{ en_US = \"a\" }}\nlocale = \"en_US\"\n"
        );
        assert!(
            load_err(&text)
                .to_string()
                .contains("`locale` and `locales`")
        );

        let text = format!("{ROUTE}[route.values.title]\nvalue = \"x\"\nnull_if_missing = true\n");
        assert!(load_err(&text).to_string().contains("no effect"));
    }

    #[test]
    fn unknown_on_delete_is_refused_with_the_accepted_forms() {
        let err = load_err(&format!("{ROUTE}on_delete = \"remove\"\n"));
        let issue = &err.issues()[0];
        assert_eq!(issue.line, Some(3), "{err}");
        assert_eq!(issue.key, "route[0].on_delete", "{err}");
        assert!(
            issue.message.contains("unknown on_delete \"remove\""),
            "{err}"
        );
        assert!(issue.message.contains("clear"), "{err}");

        let err = load_err(&format!("{ROUTE}on_delete = {{ clear = [] }}\n"));
        assert!(err.to_string().contains("empty list"), "{err}");

        let err = load_err(&format!("{ROUTE}on_delete = {{ wipe = [\"a\"] }}\n"));
        assert!(
            err.to_string().contains("unknown on_delete key \"wipe\""),
            "{err}"
        );
    }

    #[test]
    fn one_family_has_one_delete_policy() {
        let text = format!("{ROUTE}on_delete = \"delete\"\n{ROUTE}on_delete = \"ignore\"\n");
        let err = load_err(&text);
        assert_eq!(err.issues()[0].key, "route[1].on_delete", "{err}");
        assert!(
            err.to_string().contains("one delete policy per family"),
            "{err}"
        );
        // The same policy twice is fine.
        let text = format!("{ROUTE}on_delete = \"ignore\"\n{ROUTE}on_delete = \"ignore\"\n");
        assert!(Mapping::from_toml_str(&text, "mapping.toml").is_ok());
    }

    #[test]
    fn templates_paths_and_codes_are_checked_at_load() {
        let err = load_err(&format!("{ROUTE}code = \"asset\"\n"));
        assert!(
            err.to_string()
                .contains("every asset would get the same code"),
            "{err}"
        );

        let err = load_err(&format!(
            "{ROUTE}[route.values.t]\ntemplate = \"{{{{public_id\"\n"
        ));
        assert!(err.to_string().contains("never closed"), "{err}");

        let err = load_err(&format!("{ROUTE}[route.values.t]\nfield = \"a..b\"\n"));
        assert!(err.to_string().contains("empty segment"), "{err}");

        let err = load_err(&format!(
            "{ROUTE}[route.values.\"alt-text\"]\nfield = \"a\"\n"
        ));
        assert!(
            err.to_string().contains("not an Akeneo attribute code"),
            "{err}"
        );

        let err = load_err(&format!("{ROUTE}[route.values.t]\nvalue = {{ a = 1 }}\n"));
        assert!(err.to_string().contains("fixed `value`"), "{err}");
    }

    #[test]
    fn every_static_problem_is_reported_at_once() {
        let text = "\
[[route]]
family = \"\"
when = [{ field = \"a\", regex = \"[\" }]
";
        let err = load_err(text);
        assert_eq!(err.issues().len(), 2, "{err}");
        assert_eq!(err.to_string().lines().count(), 2, "{err}");
    }

    #[test]
    fn a_mapping_without_routes_is_refused() {
        let err = load_err("[settings]\ncreate_missing_options = true\n");
        assert!(err.to_string().contains("no [[route]]"), "{err}");
    }

    #[test]
    fn from_path_names_the_file() {
        let dir = std::env::temp_dir().join(format!("mapping_load_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(&path, "[[route]]\nfamily = \"a\"\nfamiy = \"b\"\n").unwrap();
        let err = Mapping::from_path(&path).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3:1: route[0]", path.display())),
            "{err}"
        );
        let missing = Mapping::from_path(&dir.join("none.toml")).unwrap_err();
        assert!(matches!(missing, MappingError::Io { .. }), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_example_file_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../examples/production/mapping.toml");
        let mapping = Mapping::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mapping.families(), ["packshots", "lifestyle", "documents"]);
    }
}
