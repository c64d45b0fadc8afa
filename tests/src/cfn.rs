//! An evaluator of the AWS SAM template (`infra/template.yaml`) for the template tests: the
//! YAML read into JSON with its short-form intrinsics, parameters, conditions and rules
//! resolved as CloudFormation would, and the environment, secrets and IAM statements each
//! function ends up with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json, json};

use crate::GENERIC_SECRET;

// The functions' logical ids in the template.
pub const INGEST: &str = "WebhookIngestFunction";
pub const CONSUMER: &str = "AssetConsumerFunction";
pub const POLLER: &str = "ReconcilePollerFunction";

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// YAML with the short-form intrinsics (`!Ref`, `!GetAtt`, ...) rewritten to their long JSON
/// form, so one resolver handles both spellings.
fn load_template() -> Json {
    let path = repo_path("infra/template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let yaml: serde_norway::Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
    to_json(yaml)
}

fn to_json(value: serde_norway::Value) -> Json {
    use serde_norway::Value as Y;
    match value {
        Y::Null => Json::Null,
        Y::Bool(b) => Json::Bool(b),
        Y::Number(n) => serde_json::to_value(n).unwrap(),
        Y::String(s) => Json::String(s),
        Y::Sequence(items) => Json::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Json::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Y::String(s) => s,
                        other => serde_norway::to_string(&other).unwrap().trim().to_owned(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(tagged.value);
            match name {
                "Ref" | "Condition" => json!({ name: inner }),
                "GetAtt" => {
                    let parts = match inner {
                        Json::String(s) => {
                            let (id, attr) = s.split_once('.').expect("!GetAtt Resource.Attribute");
                            json!([id, attr])
                        }
                        other => other,
                    };
                    json!({ "Fn::GetAtt": parts })
                }
                other => json!({ format!("Fn::{other}"): inner }),
            }
        }
    }
}

/// Evaluates the template for one set of parameter values, as CloudFormation would.
pub struct Stack {
    pub template: Json,
    pub params: BTreeMap<String, String>,
}

/// A resolved `Ref` to a resource or a `GetAtt`: a placeholder naming what it points at.
pub fn ref_to(id: &str) -> String {
    format!("ref:{id}")
}

pub fn getatt(id: &str, attr: &str) -> String {
    format!("getatt:{id}.{attr}")
}

impl Stack {
    /// Defaults overlaid with `overrides`; every parameter must end up with a value.
    pub fn new(overrides: &[(&str, &str)]) -> Stack {
        let template = load_template();
        let mut params = BTreeMap::new();
        for (name, spec) in template["Parameters"].as_object().unwrap() {
            if let Some(default) = spec.get("Default") {
                params.insert(name.clone(), scalar(default));
            }
        }
        for (name, value) in overrides {
            assert!(
                template["Parameters"].get(*name).is_some(),
                "no parameter {name} in the template"
            );
            params.insert((*name).to_owned(), (*value).to_owned());
        }
        for name in template["Parameters"].as_object().unwrap().keys() {
            assert!(params.contains_key(name), "parameter {name} has no value");
        }
        Stack { template, params }
    }

    pub fn resource(&self, id: &str) -> &Json {
        self.template["Resources"]
            .get(id)
            .unwrap_or_else(|| panic!("no resource {id} in the template"))
    }

    pub fn resource_ids(&self, kind: &str) -> Vec<String> {
        self.template["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Type"] == kind)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn props(&self, id: &str) -> Json {
        self.resolve(&self.resource(id)["Properties"])
            .unwrap_or(Json::Null)
    }

    pub fn condition(&self, name: &str) -> bool {
        let spec = &self.template["Conditions"][name];
        assert!(!spec.is_null(), "no condition {name}");
        self.truth(spec)
    }

    fn truth(&self, value: &Json) -> bool {
        let (key, arg) = single(value).unwrap_or_else(|| panic!("not a condition: {value}"));
        let args = || arg.as_array().unwrap().clone();
        match key {
            "Fn::Equals" => {
                let a = args();
                self.resolve(&a[0]) == self.resolve(&a[1])
            }
            "Fn::Not" => !self.truth(&args()[0]),
            "Fn::And" => args().iter().all(|c| self.truth(c)),
            "Fn::Or" => args().iter().any(|c| self.truth(c)),
            "Condition" => self.condition(arg.as_str().unwrap()),
            other => panic!("unsupported condition function {other}"),
        }
    }

    /// Every rule's assertions hold for these parameters (what CloudFormation checks first).
    pub fn rules_hold(&self) -> Result<(), String> {
        let Some(rules) = self.template.get("Rules").and_then(Json::as_object) else {
            return Ok(());
        };
        for (name, rule) in rules {
            for assertion in rule["Assertions"].as_array().unwrap() {
                if !self.truth(&assertion["Assert"]) {
                    return Err(format!("{name}: {}", assertion["AssertDescription"]));
                }
            }
        }
        Ok(())
    }

    /// `None` is `AWS::NoValue`: the enclosing key or item disappears.
    pub fn resolve(&self, value: &Json) -> Option<Json> {
        if let Some((key, arg)) = single(value) {
            match key {
                "Ref" => return self.reference(arg.as_str().unwrap()),
                "Fn::GetAtt" => {
                    let parts = arg.as_array().unwrap();
                    return Some(Json::String(getatt(
                        parts[0].as_str().unwrap(),
                        parts[1].as_str().unwrap(),
                    )));
                }
                "Fn::If" => {
                    let parts = arg.as_array().unwrap();
                    let chosen = if self.condition(parts[0].as_str().unwrap()) {
                        &parts[1]
                    } else {
                        &parts[2]
                    };
                    return self.resolve(chosen);
                }
                "Fn::Join" => {
                    let parts = arg.as_array().unwrap();
                    let items = self.resolve(&parts[1]).unwrap();
                    let joined: Vec<String> =
                        items.as_array().unwrap().iter().map(scalar).collect();
                    return Some(Json::String(joined.join(parts[0].as_str().unwrap())));
                }
                "Fn::Sub" => return Some(Json::String(self.sub(arg))),
                "Fn::FindInMap" => {
                    let parts: Vec<String> = arg
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| scalar(&self.resolve(p).unwrap()))
                        .collect();
                    let found = &self.template["Mappings"][&parts[0]][&parts[1]][&parts[2]];
                    assert!(!found.is_null(), "no mapping entry {parts:?}");
                    return Some(found.clone());
                }
                _ => {}
            }
        }
        match value {
            Json::Object(map) => Some(Json::Object(
                map.iter()
                    .filter_map(|(k, v)| Some((k.clone(), self.resolve(v)?)))
                    .collect(),
            )),
            Json::Array(items) => Some(Json::Array(
                items.iter().filter_map(|v| self.resolve(v)).collect(),
            )),
            other => Some(other.clone()),
        }
    }

    fn reference(&self, name: &str) -> Option<Json> {
        let pseudo = match name {
            "AWS::NoValue" => return None,
            "AWS::Region" => Some("us-east-1"),
            "AWS::AccountId" => Some("123456789012"),
            "AWS::Partition" => Some("aws"),
            "AWS::URLSuffix" => Some("amazonaws.com"),
            "AWS::StackName" => Some("dam-sync"),
            _ => None,
        };
        if let Some(value) = pseudo {
            return Some(Json::String(value.to_owned()));
        }
        if let Some(value) = self.params.get(name) {
            return Some(Json::String(value.clone()));
        }
        assert!(
            self.template["Resources"].get(name).is_some(),
            "Ref {name}: no such parameter or resource"
        );
        Some(Json::String(ref_to(name)))
    }

    fn sub(&self, arg: &Json) -> String {
        let (text, vars) = match arg {
            Json::String(s) => (s.clone(), Map::new()),
            Json::Array(parts) => (
                parts[0].as_str().unwrap().to_owned(),
                parts[1].as_object().unwrap().clone(),
            ),
            other => panic!("bad Fn::Sub {other}"),
        };
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').expect("unclosed ${") + start;
            let name = &rest[start + 2..end];
            let value = if let Some(var) = vars.get(name) {
                scalar(&self.resolve(var).unwrap())
            } else if let Some((id, attr)) = name.split_once('.') {
                getatt(id, attr)
            } else {
                scalar(&self.reference(name).expect("NoValue in Fn::Sub"))
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// A function's environment after conditions.
    pub fn env(&self, function: &str) -> BTreeMap<String, String> {
        let props = self.props(function);
        props["Environment"]["Variables"]
            .as_object()
            .map(|vars| vars.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
            .unwrap_or_default()
    }

    /// The secrets a function's `SECRETS_ARN` names (comma-separated), by logical id.
    pub fn secrets_of(&self, function: &str) -> Vec<String> {
        let env = self.env(function);
        let Some(list) = env.get(shared::secrets::SECRETS_ARN) else {
            return Vec::new();
        };
        list.split(',')
            .map(|arn| {
                arn.strip_prefix("ref:")
                    .unwrap_or_else(|| panic!("{function}: SECRETS_ARN item {arn} is not a Ref"))
                    .to_owned()
            })
            .collect()
    }

    /// The keys a secret is created with (its values are set after deployment).
    pub fn secret_keys(&self, id: &str) -> Vec<String> {
        let props = self.props(id);
        assert_eq!(self.resource(id)["Type"], "AWS::SecretsManager::Secret");
        let text = props["SecretString"].as_str().expect("SecretString");
        let object: Map<String, Json> = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{id}: SecretString is not a JSON object: {e}"));
        object.keys().cloned().collect()
    }

    /// What a function can look up: its environment, then (what the code will read through
    /// `SECRETS_ARN`) the keys of its secrets with sample values.
    pub fn available(&self, function: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for secret in self.secrets_of(function) {
            for key in self.secret_keys(&secret) {
                out.insert(key.clone(), sample_secret(&key));
            }
        }
        out.extend(self.env(function));
        out
    }

    /// The statements of a function's role (actions and resources, resolved): one role and
    /// one inline policy per function.
    pub fn statements(&self, function: &str) -> Vec<(Vec<String>, Vec<String>)> {
        let props = self.props(function);
        assert!(
            props.get("Policies").is_none(),
            "{function}: permissions belong in its role"
        );
        let role = scalar(&props["Role"]);
        let role = role
            .strip_prefix("getatt:")
            .and_then(|r| r.strip_suffix(".Arn"))
            .unwrap_or_else(|| panic!("{function}: Role {role} is not one of the stack's roles"));
        assert_eq!(self.resource(role)["Type"], "AWS::IAM::Role");
        let role_props = self.props(role);
        assert!(
            role_props.get("ManagedPolicyArns").is_none(),
            "{role}: managed policies are not scoped to the stack"
        );
        let policies = role_props["Policies"].as_array().unwrap();
        assert_eq!(policies.len(), 1, "{role}: one policy per function");
        let mut out = Vec::new();
        for statement in policies[0]["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap()
        {
            assert_eq!(statement["Effect"], "Allow");
            out.push((
                strings(&statement["Action"]),
                strings(&statement["Resource"]),
            ));
        }
        out
    }

    pub fn actions_on(&self, function: &str, resource: &str) -> BTreeSet<String> {
        self.statements(function)
            .into_iter()
            .filter(|(_, resources)| resources.iter().any(|r| r == resource))
            .flat_map(|(actions, _)| actions)
            .collect()
    }
}

fn single(value: &Json) -> Option<(&str, &Json)> {
    let map = value.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (k, v) = map.iter().next()?;
    (k == "Ref" || k == "Condition" || k.starts_with("Fn::")).then_some((k.as_str(), v))
}

pub fn scalar(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other}"),
    }
}

pub fn number(value: &Json) -> f64 {
    scalar(value)
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {value}"))
}

pub fn strings(value: &Json) -> Vec<String> {
    match value {
        Json::Array(items) => items.iter().map(scalar).collect(),
        other => vec![scalar(other)],
    }
}

/// Plausible values for the secrets' keys (the template creates them empty).
pub fn sample_secret(key: &str) -> String {
    match key {
        "GENERIC_WEBHOOK_SECRETS" => GENERIC_SECRET.to_owned(),
        "CLOUDINARY_API_KEY" => "123456789012345".to_owned(),
        "AKENEO_CLIENT_ID"
        | "AKENEO_CLIENT_SECRET"
        | "AKENEO_USERNAME"
        | "AKENEO_PASSWORD"
        | "CLOUDINARY_API_SECRET"
        | "BYNDER_TOKEN"
        | "GENERIC_API_TOKEN"
        | "GENERIC_DAM_TOKEN" => {
            format!("sample-{}", key.to_ascii_lowercase())
        }
        other => panic!("secret key {other} has no sample value in this test: add one"),
    }
}

/// Template parameter values.
pub type Params<'a> = &'a [(&'a str, &'a str)];

/// Parameters enabling every DAM.
pub const ALL_DAMS: Params<'static> = &[
    ("AkeneoBaseUrl", "https://pim.example.com"),
    ("CloudinaryCloudName", "acme"),
    ("BynderPortalUrl", "https://acme.bynder.com"),
    (
        "BynderTopicArns",
        "arn:aws:sns:eu-west-1:123456789012:bynder-acme-asset-events",
    ),
    ("GenericApiUrl", "https://dam.example.com/api"),
];
