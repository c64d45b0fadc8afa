//! The AWS SAM template (`infra/template.yaml`) against the code: environment variable names
//! (recorded from the functions' own settings readers), the table's key schema and TTL
//! attribute, the queue and DLQ rules of reliability.md §1, the PIM concurrency budget, routes
//! and schedules. The last tests create the template's queue, DLQ, table and secret in moto
//! from the template's own properties and run the project's adapters against them; they need a
//! moto server at `AWS_ENDPOINT_URL` and fail without one.

use crate::support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, PointInTimeRecoverySpecification,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::{Map, Value as Json, json};
use shared::akeneo::AkeneoConfig;
use shared::akeneo::config::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_OPTION_WRITES_PER_SECOND, DEFAULT_REQUESTS_PER_SECOND,
};
use shared::dam::{ChangeEvent, ChangeKind, DamKind, Version};
use shared::ingest::{IngestConfig, route, route_name};
use shared::mapping::Mapping;
use shared::poller::{Mode, PollerSettings};
use shared::queue::ChangeQueue;
use shared::queue::dlq::{ATTR_REASON, DeadLetters, SqsDeadLetters};
use shared::queue::sqs::SqsChangeQueue;
use shared::store::dynamodb::{
    self, DynamoStore, PARTITION_KEY, SORT_KEY, TABLE_NAME_ENV, TTL_ATTRIBUTE,
};
use shared::store::{
    Advance, Applied, AssetState, AssetStateStore, Cursor, CursorStore, LeaseStore,
};
use support::{GENERIC_SECRET, moto_config};

const INGEST: &str = "WebhookIngestFunction";
const CONSUMER: &str = "AssetConsumerFunction";
const POLLER: &str = "ReconcilePollerFunction";

// ------------------------------------------------------------------ the template

fn repo_path(relative: &str) -> PathBuf {
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
struct Stack {
    template: Json,
    params: BTreeMap<String, String>,
}

/// A resolved `Ref` to a resource or a `GetAtt`: a placeholder naming what it points at.
fn ref_to(id: &str) -> String {
    format!("ref:{id}")
}

fn getatt(id: &str, attr: &str) -> String {
    format!("getatt:{id}.{attr}")
}

impl Stack {
    /// Defaults overlaid with `overrides`; every parameter must end up with a value.
    fn new(overrides: &[(&str, &str)]) -> Stack {
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

    fn resource(&self, id: &str) -> &Json {
        self.template["Resources"]
            .get(id)
            .unwrap_or_else(|| panic!("no resource {id} in the template"))
    }

    fn resource_ids(&self, kind: &str) -> Vec<String> {
        self.template["Resources"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, r)| r["Type"] == kind)
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn props(&self, id: &str) -> Json {
        self.resolve(&self.resource(id)["Properties"])
            .unwrap_or(Json::Null)
    }

    fn condition(&self, name: &str) -> bool {
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
    fn rules_hold(&self) -> Result<(), String> {
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
    fn resolve(&self, value: &Json) -> Option<Json> {
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
    fn env(&self, function: &str) -> BTreeMap<String, String> {
        let props = self.props(function);
        props["Environment"]["Variables"]
            .as_object()
            .map(|vars| vars.iter().map(|(k, v)| (k.clone(), scalar(v))).collect())
            .unwrap_or_default()
    }

    /// The secrets a function's `SECRETS_ARN` names (comma-separated), by logical id.
    fn secrets_of(&self, function: &str) -> Vec<String> {
        let env = self.env(function);
        let Some(list) = env.get(shared::ingest::env::SECRETS_ARN) else {
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
    fn secret_keys(&self, id: &str) -> Vec<String> {
        let props = self.props(id);
        assert_eq!(self.resource(id)["Type"], "AWS::SecretsManager::Secret");
        let text = props["SecretString"].as_str().expect("SecretString");
        let object: Map<String, Json> = serde_json::from_str(text)
            .unwrap_or_else(|e| panic!("{id}: SecretString is not a JSON object: {e}"));
        object.keys().cloned().collect()
    }

    /// What a function can look up: its environment, then (what the code will read through
    /// `SECRETS_ARN`) the keys of its secrets with sample values.
    fn available(&self, function: &str) -> BTreeMap<String, String> {
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
    fn statements(&self, function: &str) -> Vec<(Vec<String>, Vec<String>)> {
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

    fn actions_on(&self, function: &str, resource: &str) -> BTreeSet<String> {
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

fn scalar(value: &Json) -> String {
    match value {
        Json::String(s) => s.clone(),
        Json::Number(n) => n.to_string(),
        Json::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other}"),
    }
}

fn number(value: &Json) -> f64 {
    scalar(value)
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {value}"))
}

fn strings(value: &Json) -> Vec<String> {
    match value {
        Json::Array(items) => items.iter().map(scalar).collect(),
        other => vec![scalar(other)],
    }
}

/// Plausible values for the secrets' keys (the template creates them empty).
fn sample_secret(key: &str) -> String {
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
type Params<'a> = &'a [(&'a str, &'a str)];

/// Parameters enabling every DAM.
const ALL_DAMS: Params<'static> = &[
    ("AkeneoBaseUrl", "https://pim.example.com"),
    ("CloudinaryCloudName", "acme"),
    ("BynderPortalUrl", "https://acme.bynder.com"),
    (
        "BynderTopicArns",
        "arn:aws:sns:eu-west-1:123456789012:bynder-acme-asset-events",
    ),
    ("GenericApiUrl", "https://dam.example.com/api"),
];

/// Runs a settings reader over `available` and records every name it asks for.
fn record<T>(
    available: &BTreeMap<String, String>,
    read: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> T,
) -> (T, BTreeSet<String>) {
    let asked = RefCell::new(BTreeSet::new());
    let lookup = |name: &str| {
        asked.borrow_mut().insert(name.to_owned());
        available.get(name).cloned()
    };
    let out = read(&lookup);
    (out, asked.into_inner())
}

/// Names the consumer reads, and its settings for `stack`.
fn consumer_reads(
    stack: &Stack,
) -> (
    Result<(asset_consumer::Settings, AkeneoConfig), String>,
    BTreeSet<String>,
) {
    let available = stack.available(CONSUMER);
    let (settings, mut names) = record(&available, |get| {
        asset_consumer::Settings::from_lookup(get, PathBuf::from("mapping.toml"))
    });
    let (akeneo, akeneo_names) = record(&available, |get| AkeneoConfig::from_lookup(get));
    names.extend(akeneo_names);
    names.insert(TABLE_NAME_ENV.to_owned());
    // Read by `SecretSettings::load` before the rest.
    names.insert(shared::secrets::SECRETS_ARN.to_owned());
    let both = settings.and_then(|s| Ok((s, akeneo.map_err(|e| e.to_string())?)));
    (both, names)
}

/// Names the ingest function reads, and its configuration for `stack`.
fn ingest_reads(stack: &Stack) -> (Result<IngestConfig, String>, BTreeSet<String>) {
    let available = stack.available(INGEST);
    let (config, mut names) = record(&available, |get| {
        IngestConfig::from_lookup(get).map_err(|e| e.to_string())
    });
    // Read by `webhook_ingest::load_config` before the rest.
    names.insert(shared::ingest::env::SECRETS_ARN.to_owned());
    (config, names)
}

/// Names the poller reads: its settings reader, the table, and the upper-case string literals
/// of its `main.rs` (where `QUEUE_URL` and the DAM's settings are read).
fn poller_reads(stack: &Stack) -> (Result<PollerSettings, String>, BTreeSet<String>) {
    let available = stack.available(POLLER);
    let (settings, mut names) = record(&available, |get| {
        PollerSettings::from_lookup(get).map_err(|e| e.to_string())
    });
    names.insert(TABLE_NAME_ENV.to_owned());
    names.insert(shared::secrets::SECRETS_ARN.to_owned());
    names.extend(poller_main_names());
    // The deletion sweep's PIM client.
    let (_, akeneo_names) = record(&available, |get| AkeneoConfig::from_lookup(get));
    names.extend(akeneo_names);
    (settings, names)
}

fn poller_main_names() -> BTreeSet<String> {
    let main = include_str!("../../../functions/reconcile-poller/src/main.rs");
    main.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 3
                && s.contains('_')
                && !s.ends_with('_')
                && s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect()
}

fn assert_only_read_names(stack: &Stack, function: &str, read: &BTreeSet<String>) {
    for name in stack.env(function).keys() {
        assert!(
            read.contains(name),
            "{function}: the template sets {name}, which the code never reads (read: {read:?})"
        );
    }
}

// ------------------------------------------------------------------ environment

#[test]
fn every_variable_the_template_sets_is_read_by_its_function() {
    let stack = Stack::new(ALL_DAMS);
    let (_, ingest) = ingest_reads(&stack);
    assert_only_read_names(&stack, INGEST, &ingest);
    let (_, consumer) = consumer_reads(&stack);
    assert_only_read_names(&stack, CONSUMER, &consumer);
    let (_, poller) = poller_reads(&stack);
    assert_only_read_names(&stack, POLLER, &poller);

    // Every secret key is read by a function allowed to read that secret.
    for secret in stack.resource_ids("AWS::SecretsManager::Secret") {
        let readers: Vec<(&str, &BTreeSet<String>)> =
            [(INGEST, &ingest), (CONSUMER, &consumer), (POLLER, &poller)]
                .into_iter()
                .filter(|(f, _)| stack.secrets_of(f).contains(&secret))
                .collect();
        assert!(!readers.is_empty(), "{secret} is read by no function");
        for key in stack.secret_keys(&secret) {
            assert!(
                readers.iter().any(|(_, names)| names.contains(&key)),
                "{secret} holds {key}, which none of its readers ({:?}) asks for",
                readers.iter().map(|(f, _)| *f).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn the_template_and_its_secrets_configure_every_function_fully() {
    let stack = Stack::new(ALL_DAMS);
    stack.rules_hold().unwrap();

    let (ingest, _) = ingest_reads(&stack);
    let ingest = ingest.unwrap();
    assert_eq!(ingest.queue_url, ref_to("ChangeQueue"));
    assert!(ingest.cloudinary.is_some() && ingest.bynder.is_some() && ingest.generic.is_some());
    assert_eq!(
        number(&json!(stack.params["MaxWebhookBodyBytes"])) as usize,
        ingest.settings.max_body_bytes
    );

    let (consumer, _) = consumer_reads(&stack);
    let (settings, akeneo) = consumer.unwrap();
    let dams: Vec<DamKind> = settings.sources.iter().map(|s| s.dam()).collect();
    for dam in [DamKind::Cloudinary, DamKind::Bynder, DamKind::Generic] {
        assert!(dams.contains(&dam), "{dam:?} not configured: {settings:?}");
    }
    assert_eq!(settings.dlq_url, ref_to("DeadLetterQueue"));
    assert_eq!(akeneo.base_url.as_str(), "https://pim.example.com/");

    let (poller, poller_names) = poller_reads(&stack);
    let poller = poller.unwrap();
    let available = stack.available(POLLER);
    // The other DAMs' settings are read only when `DAM_KIND` names them.
    let kind = stack.env(POLLER)["DAM_KIND"].clone();
    for name in poller_main_names() {
        let other_dam = ["CLOUDINARY_", "BYNDER_", "GENERIC_"]
            .iter()
            .any(|prefix| name.starts_with(prefix) && !name.starts_with(&kind.to_uppercase()));
        // Optional: a reserve with a default, and the names of earlier releases.
        if other_dam || name == "CLOUDINARY_POLL_RESERVE" || name.starts_with("GENERIC_DAM_") {
            continue;
        }
        assert!(
            available.contains_key(&name),
            "the poller reads {name}; neither its environment nor its secrets provide it"
        );
    }
    assert!(poller_names.contains("QUEUE_URL"));
    assert_eq!(stack.env(POLLER)["QUEUE_URL"], ref_to("ChangeQueue"));
    // The lease must outlive a run, or a slow run loses it to the next schedule.
    let timeout = number(&stack.props(POLLER)["Timeout"]);
    assert!(poller.lease_ttl.as_secs_f64() >= timeout, "{poller:?}");

    for function in [CONSUMER, POLLER] {
        assert_eq!(stack.env(function)[TABLE_NAME_ENV], ref_to("StateTable"));
    }
}

#[test]
fn the_template_refuses_a_deployment_without_a_dam_exactly_when_the_consumer_would() {
    let base = ("AkeneoBaseUrl", "https://pim.example.com");
    let cases: &[(Params<'_>, Option<DamKind>)] = &[
        (&[base], None),
        (
            &[base, ("CloudinaryCloudName", "acme")],
            Some(DamKind::Cloudinary),
        ),
        (
            &[base, ("BynderPortalUrl", "https://acme.bynder.com")],
            Some(DamKind::Bynder),
        ),
        (
            &[base, ("GenericApiUrl", "https://dam.example.com/api")],
            Some(DamKind::Generic),
        ),
    ];
    for (params, dam) in cases {
        let stack = Stack::new(params);
        let (consumer, _) = consumer_reads(&stack);
        match dam {
            None => {
                assert!(stack.rules_hold().is_err(), "{params:?}");
                let err = consumer.expect_err("no DAM: the consumer must refuse");
                assert!(err.contains("no DAM configured"), "{err}");
            }
            Some(dam) => {
                stack.rules_hold().unwrap();
                let (settings, _) = consumer.unwrap();
                let dams: Vec<DamKind> = settings.sources.iter().map(|s| s.dam()).collect();
                assert_eq!(dams, [*dam], "{params:?}");
            }
        }
        // The poller only knows the generic contract so far: its schedules and its staleness
        // alarm are on exactly when that DAM is configured.
        let generic = *dam == Some(DamKind::Generic);
        assert_eq!(stack.env(POLLER).contains_key("GENERIC_API_URL"), generic);
        for event in ["Poll", "Sweep"] {
            let state = &stack.props(POLLER)["Events"][event]["Properties"]["State"];
            assert_eq!(state, if generic { "ENABLED" } else { "DISABLED" });
        }
        assert_eq!(stack.condition("HasGenericApi"), generic);
    }
}

// ------------------------------------------------------------------ reliability rules

#[test]
fn queue_dlq_and_event_source_follow_the_reliability_rules() {
    let stack = Stack::new(ALL_DAMS);
    let queue = stack.props("ChangeQueue");
    let dlq = stack.props("DeadLetterQueue");
    let consumer = stack.props(CONSUMER);
    let event = &consumer["Events"]["Changes"];
    assert_eq!(event["Type"], "SQS");
    let source = &event["Properties"];
    assert_eq!(source["Queue"], getatt("ChangeQueue", "Arn"));

    // Standard queues (a FIFO event source caps batches at 10).
    for props in [&queue, &dlq] {
        assert!(props.get("FifoQueue").is_none(), "{props}");
    }

    // Visibility >= 6 x timeout + the largest batching window the parameter allows.
    let timeout = number(&consumer["Timeout"]);
    let window_spec = &stack.template["Parameters"]["ConsumerBatchingWindowSeconds"];
    let max_window = number(&window_spec["MaxValue"]);
    let visibility = number(&queue["VisibilityTimeout"]);
    assert!(
        visibility >= 6.0 * timeout + max_window,
        "visibility {visibility} < 6 x {timeout} + {max_window}"
    );
    // Batches above 10 need a window of at least 1 s.
    let batch_max = number(&stack.template["Parameters"]["ConsumerBatchSize"]["MaxValue"]);
    if batch_max > 10.0 {
        assert!(number(&window_spec["MinValue"]) >= 1.0);
    }
    assert_eq!(source["BatchSize"], stack.params["ConsumerBatchSize"]);
    assert_eq!(
        source["MaximumBatchingWindowInSeconds"],
        stack.params["ConsumerBatchingWindowSeconds"]
    );

    // Redrive into the DLQ after >= 5 receives; the DLQ keeps messages longer than the queue.
    let redrive = &queue["RedrivePolicy"];
    assert_eq!(
        redrive["deadLetterTargetArn"],
        getatt("DeadLetterQueue", "Arn")
    );
    assert!(number(&redrive["maxReceiveCount"]) >= 5.0, "{redrive}");
    assert!(
        number(&dlq["MessageRetentionPeriod"]) > number(&queue["MessageRetentionPeriod"]),
        "DLQ retention must exceed the queue's"
    );
    // The consumer parks messages in the same DLQ the redrive policy uses.
    assert_eq!(stack.env(CONSUMER)["DLQ_URL"], ref_to("DeadLetterQueue"));

    // Partial batch responses: without them one failure replays the whole batch.
    assert!(
        strings(&source["FunctionResponseTypes"]).contains(&"ReportBatchItemFailures".into()),
        "{source}"
    );
}

#[test]
fn the_pim_never_sees_more_than_its_limits_per_connection() {
    let stack = Stack::new(ALL_DAMS);
    let source = &stack.props(CONSUMER)["Events"]["Changes"]["Properties"];
    let instances = number(&source["ScalingConfig"]["MaximumConcurrency"]) as usize;
    assert!(
        (2..=1000).contains(&instances),
        "MaximumConcurrency {instances} outside 2..=1000"
    );
    // Limits are per process (one semaphore and rate limiter per client); one batch runs per
    // instance, so the PIM sees instances x the per-process limits.
    let (consumer, _) = consumer_reads(&stack);
    let (_, akeneo) = consumer.unwrap();
    let limits = &akeneo.limits;
    assert!(
        instances * limits.max_in_flight <= DEFAULT_MAX_IN_FLIGHT,
        "{instances} x {} calls in flight > Akeneo's {DEFAULT_MAX_IN_FLIGHT}",
        limits.max_in_flight
    );
    let rps = limits
        .requests_per_second
        .expect("request pacing must stay on");
    assert!(instances as u32 * rps <= DEFAULT_REQUESTS_PER_SECOND);
    assert!(instances as u32 * limits.option_writes_per_second <= DEFAULT_OPTION_WRITES_PER_SECOND);
    // Three attempts of one call fit the function's timeout.
    let timeout = Duration::from_secs_f64(number(&stack.props(CONSUMER)["Timeout"]));
    assert!(limits.request_timeout * 3 <= timeout, "{limits:?}");
    // The poller's deletion sweep reads the PIM with a Connection of its own (Akeneo's limits
    // are per Connection): its credentials come from a secret the consumer cannot read, and
    // its own client stays within the per-Connection bound.
    let akeneo_secret = |function: &str| -> Vec<String> {
        stack
            .secrets_of(function)
            .into_iter()
            .filter(|secret| {
                stack
                    .secret_keys(secret)
                    .iter()
                    .any(|k| k == "AKENEO_CLIENT_ID")
            })
            .collect()
    };
    let (poller_secret, consumer_secret) = (akeneo_secret(POLLER), akeneo_secret(CONSUMER));
    assert_eq!(poller_secret.len(), 1, "the poller's Akeneo Connection");
    assert!(
        !consumer_secret.contains(&poller_secret[0]),
        "the sweep must not share the consumer's Connection"
    );
    let available = stack.available(POLLER);
    let sweep = AkeneoConfig::from_lookup(|k| available.get(k).cloned()).expect("sweep settings");
    assert!(sweep.limits.max_in_flight <= DEFAULT_MAX_IN_FLIGHT);
}

#[test]
fn the_table_matches_the_dynamodb_adapter() {
    let stack = Stack::new(ALL_DAMS);
    let table = stack.props("StateTable");
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        table["KeySchema"],
        json!([
            { "AttributeName": PARTITION_KEY, "KeyType": "HASH" },
            { "AttributeName": SORT_KEY, "KeyType": "RANGE" },
        ])
    );
    assert_eq!(
        table["AttributeDefinitions"],
        json!([
            { "AttributeName": PARTITION_KEY, "AttributeType": "S" },
            { "AttributeName": SORT_KEY, "AttributeType": "S" },
        ])
    );
    assert_eq!(
        table["TimeToLiveSpecification"],
        json!({ "AttributeName": TTL_ATTRIBUTE, "Enabled": true })
    );
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
}

#[test]
fn each_function_has_its_own_least_privilege_policy() {
    let stack = Stack::new(ALL_DAMS);
    let table = getatt("StateTable", "Arn");
    let queue = getatt("ChangeQueue", "Arn");
    let dlq = getatt("DeadLetterQueue", "Arn");
    let set = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();

    for function in [INGEST, CONSUMER, POLLER] {
        for (actions, resources) in stack.statements(function) {
            for action in &actions {
                assert!(
                    !action.contains('*'),
                    "{function}: wildcard action {action}"
                );
            }
            for resource in &resources {
                assert!(
                    resource.starts_with("ref:") || resource.starts_with("getatt:"),
                    "{function}: resource {resource} is not one of the stack's own"
                );
            }
        }
        // Secrets: exactly the ones it is told to read.
        let readable: BTreeSet<String> = stack
            .statements(function)
            .into_iter()
            .filter(|(a, _)| a.contains(&"secretsmanager:GetSecretValue".to_owned()))
            .flat_map(|(_, r)| r)
            .collect();
        let told: BTreeSet<String> = stack
            .secrets_of(function)
            .iter()
            .map(|s| ref_to(s))
            .collect();
        assert_eq!(readable, told, "{function}");
    }
    assert_eq!(stack.actions_on(INGEST, &queue), set(&["sqs:SendMessage"]));
    assert!(stack.actions_on(INGEST, &table).is_empty());
    // SendMessageBatch is authorised by sqs:SendMessage.
    assert_eq!(stack.actions_on(POLLER, &queue), set(&["sqs:SendMessage"]));
    assert_eq!(
        stack.actions_on(POLLER, &table),
        set(&[
            "dynamodb:GetItem",
            "dynamodb:BatchGetItem",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem"
        ])
    );
    assert_eq!(stack.actions_on(CONSUMER, &dlq), set(&["sqs:SendMessage"]));
    assert_eq!(
        stack.actions_on(CONSUMER, &table),
        set(&[
            "dynamodb:GetItem",
            "dynamodb:BatchGetItem",
            "dynamodb:PutItem",
            "dynamodb:DeleteItem"
        ])
    );
    // What the SQS event source needs to poll for the consumer.
    assert_eq!(
        stack.actions_on(CONSUMER, &queue),
        set(&[
            "sqs:ReceiveMessage",
            "sqs:DeleteMessage",
            "sqs:GetQueueAttributes"
        ])
    );
    // Each function writes its own log group only.
    for (function, logs) in [
        (INGEST, "WebhookIngestLogs"),
        (CONSUMER, "AssetConsumerLogs"),
        (POLLER, "ReconcilePollerLogs"),
    ] {
        assert_eq!(
            stack.props(function)["LoggingConfig"]["LogGroup"],
            ref_to(logs)
        );
        assert_eq!(
            stack.actions_on(function, &getatt(logs, "Arn")),
            set(&["logs:CreateLogStream", "logs:PutLogEvents"])
        );
    }
}

#[test]
fn routes_schedules_outputs_and_mapping_agree_with_the_code() {
    let stack = Stack::new(ALL_DAMS);
    let ingest = stack.props(INGEST);
    let mut routes = BTreeSet::new();
    for event in ingest["Events"].as_object().unwrap().values() {
        assert_eq!(event["Type"], "HttpApi");
        let props = &event["Properties"];
        assert_eq!(props["Method"], "POST");
        assert_eq!(props["ApiId"], ref_to("WebhookApi"));
        assert_eq!(props["PayloadFormatVersion"], "2.0");
        routes.insert(props["Path"].as_str().unwrap().to_owned());
    }
    let expected: BTreeSet<String> = [DamKind::Cloudinary, DamKind::Bynder, DamKind::Generic]
        .into_iter()
        .map(|dam| format!("/webhooks/{}", route_name(dam)))
        .collect();
    assert_eq!(routes, expected);
    for path in &routes {
        let dam = route(path).unwrap();
        let output = stack.template["Outputs"]
            .as_object()
            .unwrap()
            .values()
            .map(|o| stack.resolve(&o["Value"]).unwrap())
            .find(|v| v.as_str().is_some_and(|s| s.ends_with(path.as_str())));
        let url = output.unwrap_or_else(|| panic!("no output with the URL of {path}"));
        assert_eq!(
            url,
            format!("https://ref:WebhookApi.execute-api.us-east-1.amazonaws.com/webhooks/{dam}")
        );
    }
    let api = stack.props("WebhookApi");
    let throttling = &api["DefaultRouteSettings"];
    assert!(number(&throttling["ThrottlingRateLimit"]) >= 1.0);
    assert!(number(&throttling["ThrottlingBurstLimit"]) >= 1.0);

    let poller = stack.props(POLLER);
    let poll = &poller["Events"]["Poll"]["Properties"];
    let input: Json = serde_json::from_str(poll["Input"].as_str().unwrap()).unwrap();
    assert_eq!(Mode::from_event(&input).unwrap(), Mode::Incremental);
    assert_eq!(
        poll["ScheduleExpression"],
        format!("rate({} minutes)", stack.params["PollIntervalMinutes"])
    );
    let sweep = &poller["Events"]["Sweep"]["Properties"];
    let input: Json = serde_json::from_str(sweep["Input"].as_str().unwrap()).unwrap();
    assert_eq!(input, json!({ "mode": "sweep" }));

    // Staleness: three poll intervals without a successful run.
    let alarm = stack.props("PollerStalenessAlarm");
    let minutes: f64 = stack.params["PollIntervalMinutes"].parse().unwrap();
    assert_eq!(number(&alarm["Period"]), minutes * 60.0);
    assert_eq!(number(&alarm["EvaluationPeriods"]), 3.0);
    assert_eq!(alarm["TreatMissingData"], "breaching");
    for allowed in stack.template["Parameters"]["PollIntervalMinutes"]["AllowedValues"]
        .as_array()
        .unwrap()
    {
        let at = Stack::new(
            &[
                ALL_DAMS,
                &[("PollIntervalMinutes", allowed.as_str().unwrap())],
            ]
            .concat(),
        );
        let period = number(&at.props("PollerStalenessAlarm")["Period"]);
        assert_eq!(period, number(&json!(allowed)) * 60.0, "interval {allowed}");
    }

    // The mapping ships as a layer mounted at /opt and compiles.
    let consumer = stack.props(CONSUMER);
    assert_eq!(consumer["Layers"], json!([ref_to("MappingLayer")]));
    let layer = stack.props("MappingLayer");
    let dir = repo_path("infra").join(layer["ContentUri"].as_str().unwrap());
    let mapped = stack.env(CONSUMER)["MAPPING_PATH"].clone();
    let relative = mapped.strip_prefix("/opt/").expect("layers mount at /opt");
    let _mapping =
        Mapping::from_path(&dir.join(relative)).unwrap_or_else(|e| panic!("shipped mapping: {e}"));

    // Every function is an arm64 cargo-lambda build of the binary of the same crate.
    for (function, binary) in [
        (INGEST, "webhook-ingest"),
        (CONSUMER, "asset-consumer"),
        (POLLER, "reconcile-poller"),
    ] {
        let meta = &stack.resource(function)["Metadata"];
        assert_eq!(meta["BuildMethod"], "rust-cargolambda");
        assert_eq!(meta["BuildProperties"]["Binary"], binary);
        let code = repo_path("infra").join(stack.props(function)["CodeUri"].as_str().unwrap());
        assert!(
            code.join("functions")
                .join(binary)
                .join("Cargo.toml")
                .is_file()
        );
    }
    let globals = &stack.template["Globals"]["Function"];
    assert_eq!(globals["Architectures"], json!(["arm64"]));
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["LoggingConfig"]["LogFormat"], "JSON");
}

// ------------------------------------------------------------------ in moto

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// The queue's template properties as CreateQueue attributes. A property this test does not
/// know fails the test, so a new one is translated here before it can drift.
fn queue_attributes(props: &Json, dlq_arn: Option<&str>) -> HashMap<QueueAttributeName, String> {
    let mut out = HashMap::new();
    for (name, value) in props.as_object().unwrap() {
        let text = match name.as_str() {
            "VisibilityTimeout"
            | "MessageRetentionPeriod"
            | "ReceiveMessageWaitTimeSeconds"
            | "DelaySeconds"
            | "MaximumMessageSize"
            | "SqsManagedSseEnabled" => scalar(value),
            "RedrivePolicy" => {
                let mut policy = value.clone();
                assert_eq!(
                    policy["deadLetterTargetArn"],
                    getatt("DeadLetterQueue", "Arn")
                );
                policy["deadLetterTargetArn"] = json!(dlq_arn.expect("the DLQ's ARN"));
                policy["maxReceiveCount"] = json!(number(&value["maxReceiveCount"]) as u64);
                policy.to_string()
            }
            other => panic!("queue property {other} has no CreateQueue translation here"),
        };
        out.insert(QueueAttributeName::from(name.as_str()), text);
    }
    out
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    props: &Json,
    dlq_arn: Option<&str>,
) -> (String, String) {
    let url = sqs
        .create_queue()
        .queue_name(unique("infra"))
        .set_attributes(Some(queue_attributes(props, dlq_arn)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}", aws_sdk_sqs::error::DisplayErrorContext(&e)))
        .queue_url()
        .unwrap()
        .to_owned();
    let arn = queue_attribute(sqs, &url, QueueAttributeName::QueueArn).await;
    (url, arn)
}

async fn queue_attribute(sqs: &aws_sdk_sqs::Client, url: &str, name: QueueAttributeName) -> String {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .unwrap()
        .attributes()
        .and_then(|a| a.get(&name))
        .cloned()
        .unwrap_or_else(|| panic!("queue attribute {name:?} missing"))
}

async fn receive(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    visibility: i32,
) -> Vec<aws_sdk_sqs::types::Message> {
    sqs.receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .visibility_timeout(visibility)
        // The queue long-polls for 20 s by default; these reads must not wait.
        .wait_time_seconds(0)
        .send()
        .await
        .unwrap()
        .messages()
        .to_vec()
}

fn event(id: &str) -> ChangeEvent {
    ChangeEvent {
        dam: DamKind::Generic,
        asset_id: id.to_owned(),
        kind: ChangeKind::Upsert,
        version: Some(Version {
            modified_at_ms: 1_700_000_000_000,
            seq: 1,
        }),
        asset: None,
        dedupe_key: format!("generic:{id}:1"),
        received_at_ms: 1_700_000_000_500,
    }
}

#[tokio::test]
async fn the_templates_queues_carry_the_adapters_and_redrive_to_the_dlq() {
    let stack = Stack::new(ALL_DAMS);
    let sqs = aws_sdk_sqs::Client::new(&moto_config().await);
    let queue_props = stack.props("ChangeQueue");
    let (dlq_url, dlq_arn) = create_queue(&sqs, &stack.props("DeadLetterQueue"), None).await;
    let (queue_url, _) = create_queue(&sqs, &queue_props, Some(&dlq_arn)).await;

    // What SQS stored is what the template says.
    for name in ["VisibilityTimeout", "MessageRetentionPeriod"] {
        assert_eq!(
            queue_attribute(&sqs, &queue_url, QueueAttributeName::from(name)).await,
            scalar(&queue_props[name]),
            "{name}"
        );
    }
    let stored: Json = serde_json::from_str(
        &queue_attribute(&sqs, &queue_url, QueueAttributeName::RedrivePolicy).await,
    )
    .unwrap();
    assert_eq!(stored["deadLetterTargetArn"], dlq_arn);
    let max_receives = number(&stored["maxReceiveCount"]) as usize;
    assert_eq!(
        max_receives as f64,
        number(&queue_props["RedrivePolicy"]["maxReceiveCount"])
    );

    // Ingest and the poller enqueue through SqsChangeQueue.
    let changes = SqsChangeQueue::new(sqs.clone(), queue_url.clone());
    changes.enqueue(&[event("a1"), event("a2")]).await.unwrap();

    // A message that keeps failing is moved to the DLQ after maxReceiveCount receives.
    let mut receives: HashMap<String, usize> = HashMap::new();
    for _ in 0..max_receives {
        for message in receive(&sqs, &queue_url, 0).await {
            let body: ChangeEvent = serde_json::from_str(message.body().unwrap()).unwrap();
            *receives.entry(body.asset_id).or_default() += 1;
        }
    }
    assert_eq!(receives.len(), 2, "{receives:?}");
    assert!(
        receive(&sqs, &queue_url, 0).await.is_empty(),
        "not redriven after {max_receives}"
    );
    let redriven: BTreeSet<String> = receive(&sqs, &dlq_url, 300)
        .await
        .iter()
        .map(|m| {
            serde_json::from_str::<ChangeEvent>(m.body().unwrap())
                .unwrap()
                .asset_id
        })
        .collect();
    assert_eq!(redriven, BTreeSet::from(["a1".to_owned(), "a2".to_owned()]));

    // The consumer parks messages in the same DLQ, with their reason.
    let letters = SqsDeadLetters::new(sqs.clone(), dlq_url.clone());
    letters
        .send(
            "m-1",
            &serde_json::to_string(&event("a3")).unwrap(),
            "mapping: no family",
        )
        .await
        .unwrap();
    let parked = receive(&sqs, &dlq_url, 300).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        support::attribute(&parked[0], ATTR_REASON),
        "mapping: no family"
    );
}

#[tokio::test]
async fn the_templates_table_serves_the_dynamodb_store() {
    let stack = Stack::new(ALL_DAMS);
    let ddb = aws_sdk_dynamodb::Client::new(&moto_config().await);
    let props = stack.props("StateTable");
    let name = unique("infra-state");

    let mut create = ddb.create_table().table_name(&name);
    for (key, value) in props.as_object().unwrap() {
        create = match key.as_str() {
            "BillingMode" => create.billing_mode(BillingMode::from(value.as_str().unwrap())),
            "AttributeDefinitions" => value.as_array().unwrap().iter().fold(create, |c, d| {
                c.attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(scalar(&d["AttributeName"]))
                        .attribute_type(ScalarAttributeType::from(
                            d["AttributeType"].as_str().unwrap(),
                        ))
                        .build()
                        .unwrap(),
                )
            }),
            "KeySchema" => value.as_array().unwrap().iter().fold(create, |c, k| {
                c.key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(scalar(&k["AttributeName"]))
                        .key_type(KeyType::from(k["KeyType"].as_str().unwrap()))
                        .build()
                        .unwrap(),
                )
            }),
            // Applied after creation below, as CloudFormation does.
            "TimeToLiveSpecification" | "PointInTimeRecoverySpecification" => create,
            other => panic!("table property {other} has no CreateTable translation here"),
        };
    }
    create.send().await.unwrap();
    let ttl = &props["TimeToLiveSpecification"];
    ddb.update_time_to_live()
        .table_name(&name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(scalar(&ttl["AttributeName"]))
                .enabled(ttl["Enabled"] == true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let pitr = &props["PointInTimeRecoverySpecification"];
    ddb.update_continuous_backups()
        .table_name(&name)
        .point_in_time_recovery_specification(
            PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(pitr["PointInTimeRecoveryEnabled"] == true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    // Same schema as the one the code creates for tests and the CLI.
    let reference = unique("infra-reference");
    dynamodb::create_table(&ddb, &reference).await.unwrap();
    let describe = |table: String| {
        let ddb = ddb.clone();
        async move {
            let t = ddb.describe_table().table_name(table).send().await.unwrap();
            let t = t.table().unwrap().clone();
            let mut attrs = t.attribute_definitions().to_vec();
            attrs.sort_by(|a, b| a.attribute_name().cmp(b.attribute_name()));
            (t.key_schema().to_vec(), attrs)
        }
    };
    assert_eq!(describe(name.clone()).await, describe(reference).await);
    let ttl = ddb
        .describe_time_to_live()
        .table_name(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some(TTL_ATTRIBUTE)
    );

    // The adapters work on it: versions, cursors, leases.
    let store = DynamoStore::new(ddb.clone(), &name);
    let state = AssetState {
        dam: DamKind::Generic,
        asset_id: "a1".into(),
        applied_version: Version {
            modified_at_ms: 1_700_000_000_000,
            seq: 1,
        },
        content_hash: "h".into(),
        family: "packshot".into(),
        pim_code: "a1".into(),
        updated_at_ms: 1_700_000_000_100,
        media_files: Default::default(),
    };
    assert_eq!(
        store.record_applied(&state).await.unwrap(),
        Applied::Written
    );
    assert_eq!(store.record_applied(&state).await.unwrap(), Applied::Stale);
    let got = store
        .get_many(DamKind::Generic, &["a1".into()])
        .await
        .unwrap();
    assert_eq!(got.get("a1"), Some(&state));
    let cursor = Cursor {
        position_ms: 1_000,
        page_token: None,
        version: 0,
    };
    assert_eq!(
        store.advance("reconcile", cursor, None).await.unwrap(),
        Advance::Written { version: 1 }
    );
    assert!(
        store
            .acquire("reconcile", "run-1", Duration::from_secs(900))
            .await
            .unwrap()
    );
    assert!(
        !store
            .acquire("reconcile", "run-2", Duration::from_secs(900))
            .await
            .unwrap()
    );
    // The lease carries the attribute the table's TTL deletes on, in epoch seconds.
    let items = ddb.scan().table_name(&name).send().await.unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let expiries: Vec<u64> = items
        .items()
        .iter()
        .filter_map(|item| item.get(TTL_ATTRIBUTE))
        .map(|v| v.as_n().unwrap().parse().unwrap())
        .collect();
    assert_eq!(expiries.len(), 1, "{items:?}");
    assert!(
        expiries[0] > now && expiries[0] <= now + 901,
        "{expiries:?}"
    );
}

#[tokio::test]
async fn the_ingest_function_reads_the_templates_secret() {
    let stack = Stack::new(ALL_DAMS);
    let aws = moto_config().await;
    let secrets = stack.secrets_of(INGEST);
    assert_eq!(secrets.len(), 1, "webhook-ingest reads one secret");
    let values: Map<String, Json> = stack
        .secret_keys(&secrets[0])
        .into_iter()
        .map(|k| {
            let v = sample_secret(&k);
            (k, Json::String(v))
        })
        .collect();
    let arn = aws_sdk_secretsmanager::Client::new(&aws)
        .create_secret()
        .name(unique("infra-dam"))
        .secret_string(Json::Object(values).to_string())
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned();

    // The function's environment as deployed: the template's, with the secret's real ARN.
    let mut env = stack.env(INGEST);
    env.insert(shared::ingest::env::SECRETS_ARN.into(), arn);
    env.insert(
        shared::ingest::env::QUEUE_URL.into(),
        "https://queue.example".into(),
    );
    let config = webhook_ingest::load_config(&aws, |name| env.get(name).cloned())
        .await
        .unwrap();
    assert!(
        config.cloudinary.is_some(),
        "CLOUDINARY_API_SECRET from the secret"
    );
    assert!(
        config.generic.is_some(),
        "GENERIC_WEBHOOK_SECRETS from the secret"
    );
    assert!(
        config.bynder.is_some(),
        "BYNDER_TOPIC_ARNS from the environment"
    );
}
