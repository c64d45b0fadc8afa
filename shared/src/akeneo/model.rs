//! Akeneo Asset Manager JSON shapes (asset, value, family, attribute, option).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An asset as written to the PIM: only `code` and `values` (Akeneo's write schema rejects
/// read-only properties such as `_links`, `created`, `updated`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    pub code: String,
    #[serde(default)]
    pub values: BTreeMap<String, Vec<AssetValue>>,
}

/// One value of an attribute for a (locale, channel) pair; `data: null` erases it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetValue {
    pub locale: Option<String>,
    pub channel: Option<String>,
    pub data: serde_json::Value,
}

/// An asset as read from the PIM (extra read-only fields kept aside).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoredAsset {
    pub code: String,
    #[serde(default)]
    pub values: BTreeMap<String, Vec<StoredValue>>,
    #[serde(default)]
    pub updated: Option<String>,
}

/// A value as read back: may carry `_links`/`attribute_type`, which are not written back.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StoredValue {
    pub locale: Option<String>,
    pub channel: Option<String>,
    pub data: serde_json::Value,
}

impl From<StoredAsset> for Asset {
    fn from(s: StoredAsset) -> Self {
        Asset {
            code: s.code,
            values: s
                .values
                .into_iter()
                .map(|(k, vs)| {
                    let vs = vs
                        .into_iter()
                        .map(|v| AssetValue {
                            locale: v.locale,
                            channel: v.channel,
                            data: v.data,
                        })
                        .collect();
                    (k, vs)
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetFamily {
    pub code: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub attribute_as_main_media: Option<String>,
}

/// Attribute types of the Asset Manager (`single_option`, not `option`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributeType {
    Text,
    Number,
    Boolean,
    Date,
    SingleOption,
    MultipleOptions,
    MediaLink,
    MediaFile,
    Record,
    AutoTagging,
    /// A type added to Akeneo after this release: read, never written.
    #[serde(other)]
    Unknown,
}

impl AttributeType {
    pub fn has_options(self) -> bool {
        matches!(
            self,
            AttributeType::SingleOption | AttributeType::MultipleOptions
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssetAttribute {
    pub code: String,
    #[serde(rename = "type")]
    pub kind: AttributeType,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub value_per_locale: bool,
    #[serde(default)]
    pub value_per_channel: bool,
    #[serde(default)]
    pub is_required_for_completeness: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_characters: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation_regexp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decimals_allowed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeOption {
    pub code: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Everything the mapping needs to know about one family, fetched together and cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyStructure {
    pub family: AssetFamily,
    pub attributes: Vec<AssetAttribute>,
    /// Option codes per option attribute.
    pub options: BTreeMap<String, Vec<AttributeOption>>,
}

impl FamilyStructure {
    pub fn attribute(&self, code: &str) -> Option<&AssetAttribute> {
        self.attributes.iter().find(|a| a.code == code)
    }

    pub fn has_option(&self, attribute: &str, option: &str) -> bool {
        self.options
            .get(attribute)
            .is_some_and(|os| os.iter().any(|o| o.code.eq_ignore_ascii_case(option)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_attribute_list() {
        // Fixture from Akeneo's PHP client (ListAllAssetFamilyAttributesIntegration).
        let json = r#"[{"code": "model_is_wearing_size", "labels": {"en_US": "Model is wearing size"}, "type": "single_option",
  "value_per_locale": false, "value_per_channel": false, "is_required_for_completeness": true},
 {"code": "media_preview", "labels": {"en_US": "Media preview"}, "type": "media_link", "value_per_locale": false,
  "value_per_channel": false, "is_required_for_completeness": false, "prefix": "dam.com/my_assets/", "suffix": null,
  "media_type": "image"},
 {"code": "warning_mention", "labels": {"en_US": "Warning mention"}, "type": "text", "value_per_locale": true,
  "value_per_channel": false, "is_required_for_completeness": false, "max_characters": 50, "is_textarea": false,
  "is_rich_text_editor": null, "validation_rule": null, "validation_regexp": null},
 {"code": "tags", "type": "some_future_type"}]"#;
        let attrs: Vec<AssetAttribute> = serde_json::from_str(json).unwrap();
        assert_eq!(attrs[0].kind, AttributeType::SingleOption);
        assert_eq!(attrs[1].prefix.as_deref(), Some("dam.com/my_assets/"));
        assert_eq!(attrs[2].max_characters, Some(50));
        assert!(attrs[2].value_per_locale);
        assert_eq!(attrs[3].kind, AttributeType::Unknown);
    }

    #[test]
    fn write_shape_rejects_read_only_fields() {
        let read_back = r#"{"code":"a","values":{},"created":"2021-05-31T09:23:34+00:00"}"#;
        assert!(serde_json::from_str::<Asset>(read_back).is_err());
        let stored: StoredAsset = serde_json::from_str(
            r#"{"code":"a","_links":{},"values":{"t":[{"locale":null,"channel":null,"data":"x","attribute_type":"text"}]}}"#,
        )
        .unwrap();
        let asset = Asset::from(stored);
        assert_eq!(
            serde_json::to_string(&asset).unwrap(),
            r#"{"code":"a","values":{"t":[{"locale":null,"channel":null,"data":"x"}]}}"#
        );
    }
}
