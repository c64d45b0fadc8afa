//! The AWS SAM template (`infra/template.yaml`) against the code: environment variable names
//! (recorded from the functions' own settings readers), the table's key schema and TTL
//! attribute, the queue and DLQ rules of reliability.md §1, the PIM concurrency budget, routes
//! and schedules. The template is evaluated by `dam_sync_tests::cfn`; `infra_moto` creates its
//! resources in moto.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use dam_sync_tests::cfn::{
    ALL_DAMS, CONSUMER, INGEST, POLLER, Params, Stack, getatt, number, ref_to, repo_path, strings,
};
use serde_json::{Value as Json, json};
use shared::akeneo::AkeneoConfig;
use shared::akeneo::config::{
    DEFAULT_MAX_IN_FLIGHT, DEFAULT_OPTION_WRITES_PER_SECOND, DEFAULT_REQUESTS_PER_SECOND,
};
use shared::dam::DamKind;
use shared::ingest::route;
use shared::mapping::Mapping;
use shared::poller::Mode;
use shared::store::dynamodb::{PARTITION_KEY, SORT_KEY, TABLE_NAME_ENV, TTL_ATTRIBUTE};

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

/// Names the consumer reads (its settings reader asks for each), and its settings for `stack`.
fn consumer_reads(stack: &Stack) -> (Result<asset_consumer::Settings, String>, BTreeSet<String>) {
    let available = stack.available(CONSUMER);
    let (settings, mut names) = record(&available, |get| {
        asset_consumer::Settings::from_lookup(get, PathBuf::from("mapping.toml"))
            .map_err(|e| e.to_string())
    });
    // Read by `SecretSettings::load` before the rest.
    names.insert(shared::secrets::SECRETS_ARN.to_owned());
    (settings, names)
}

/// Names the ingest function reads, and its settings for `stack`.
fn ingest_reads(stack: &Stack) -> (Result<webhook_ingest::Settings, String>, BTreeSet<String>) {
    let available = stack.available(INGEST);
    let (settings, mut names) = record(&available, |get| {
        webhook_ingest::Settings::from_lookup(get).map_err(|e| e.to_string())
    });
    names.insert(shared::secrets::SECRETS_ARN.to_owned());
    (settings, names)
}

/// Names the poller reads, and its settings for `stack`.
fn poller_reads(stack: &Stack) -> (Result<reconcile_poller::Settings, String>, BTreeSet<String>) {
    let available = stack.available(POLLER);
    let (settings, mut names) = record(&available, |get| {
        reconcile_poller::Settings::from_lookup(get, PathBuf::from("mapping.toml"))
            .map_err(|e| e.to_string())
    });
    names.insert(shared::secrets::SECRETS_ARN.to_owned());
    (settings, names)
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
    let webhooks = &ingest.ingest;
    assert!(
        webhooks.cloudinary.is_some() && webhooks.bynder.is_some() && webhooks.generic.is_some()
    );
    assert_eq!(
        number(&json!(stack.params["MaxWebhookBodyBytes"])) as usize,
        webhooks.settings.max_body_bytes
    );

    let (consumer, _) = consumer_reads(&stack);
    let settings = consumer.unwrap();
    let dams: Vec<DamKind> = settings.sources.iter().map(|s| s.dam()).collect();
    for dam in [DamKind::Cloudinary, DamKind::Bynder, DamKind::Generic] {
        assert!(dams.contains(&dam), "{dam:?} not configured: {settings:?}");
    }
    assert_eq!(settings.dlq_url, ref_to("DeadLetterQueue"));
    assert_eq!(
        settings.akeneo.base_url.as_str(),
        "https://pim.example.com/"
    );

    let (poller, poller_names) = poller_reads(&stack);
    let poller = poller.unwrap();
    // The poller lists the DAM its `DAM_KIND` names, with the settings the stack provides.
    let kind = &stack.env(POLLER)["DAM_KIND"];
    assert_eq!(poller.dam.kind().as_str(), kind.as_str());
    assert!(poller.dam.source().is_ok(), "{poller:?}");
    // The deletion sweep gets its PIM and mapping.
    assert!(poller.sweep.is_some(), "{poller:?}");
    assert!(poller_names.contains("QUEUE_URL"));
    assert_eq!(poller.queue_url, ref_to("ChangeQueue"));
    // The lease must outlive a run, or a slow run loses it to the next schedule.
    let timeout = number(&stack.props(POLLER)["Timeout"]);
    assert!(
        poller.poller.lease_ttl.as_secs_f64() >= timeout,
        "{poller:?}"
    );

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
                let settings = consumer.unwrap();
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
    // The consumer parks messages in the same DLQ the redrive policy uses, and knows its limit,
    // so a message failing on its last delivery is parked with its reason.
    assert_eq!(stack.env(CONSUMER)["DLQ_URL"], ref_to("DeadLetterQueue"));
    assert_eq!(
        stack.env(CONSUMER)["CONSUMER_MAX_RECEIVES"]
            .parse::<f64>()
            .unwrap(),
        number(&redrive["maxReceiveCount"])
    );

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
    let limits = &consumer.unwrap().akeneo.limits;
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
        .map(|dam| format!("/webhooks/{}", dam.as_str()))
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

/// The deploy guide's shell commands (```bash blocks of infra/README.md), in order, with
/// continuation lines and multi-line quoted strings joined and comments removed.
fn guide_commands() -> Vec<String> {
    let text = std::fs::read_to_string(repo_path("infra/README.md")).unwrap();
    let mut commands = Vec::new();
    let mut in_bash = false;
    let mut pending = String::new();
    let mut quotes = Quotes::default();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") && !quotes.open() {
            in_bash = !in_bash && trimmed == "```bash";
            continue;
        }
        if !in_bash {
            continue;
        }
        let code = strip_comment(line, &mut quotes);
        if quotes.open() {
            pending.push_str(&code);
            pending.push('\n');
            continue;
        }
        match code.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(&code);
                if !pending.trim().is_empty() {
                    commands.push(std::mem::take(&mut pending));
                }
                pending.clear();
            }
        }
    }
    assert!(!quotes.open(), "infra/README.md: a quote is never closed");
    commands
}

/// Which shell quote is open at the end of the text read so far.
#[derive(Default)]
struct Quotes {
    single: bool,
    double: bool,
}

impl Quotes {
    fn open(&self) -> bool {
        self.single || self.double
    }
}

/// `line` without its shell comment (a `#` starting a word outside quotes), given the quotes
/// open before it; leaves `quotes` as they are at its end.
fn strip_comment(line: &str, quotes: &mut Quotes) -> String {
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !quotes.double => quotes.single = !quotes.single,
            '"' if !quotes.single => quotes.double = !quotes.double,
            '#' if !quotes.open() && previous.is_whitespace() => {
                return line[..i].trim_end().to_owned();
            }
            _ => {}
        }
        previous = c;
    }
    line.trim_end().to_owned()
}

/// Variables a command expands (`$NAME`, `${NAME}`; not in single quotes, not `$(`, `$1`) and
/// the ones it sets (`NAME=`, `export A=.. B=..`, `for NAME in`).
fn shell_names(command: &str) -> (Vec<String>, Vec<String>) {
    let chars: Vec<char> = command.chars().collect();
    let word = |from: usize| -> String {
        chars[from..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect()
    };
    let (mut used, mut set) = (Vec::new(), Vec::new());
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' && !double {
            single = !single;
        } else if c == '"' && !single {
            double = !double;
        } else if !single && c == '$' {
            let start = if chars.get(i + 1) == Some(&'{') {
                i + 2
            } else {
                i + 1
            };
            let name = word(start);
            if name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
                used.push(name);
            }
        } else if !single && (c.is_ascii_alphabetic() || c == '_') {
            let at_word_start = i == 0 || " \t;&|(".contains(chars[i - 1]);
            let name = word(i);
            let after = i + name.chars().count();
            if at_word_start && chars.get(after) == Some(&'=') {
                set.push(name.clone());
            }
            if at_word_start && name == "for" {
                let var = word(after + 1);
                if !var.is_empty() {
                    set.push(var);
                }
            }
            i = after;
            continue;
        }
        i += 1;
    }
    (used, set)
}

#[test]
fn the_deploy_guide_sets_every_variable_before_a_command_uses_it() {
    let commands = guide_commands();
    assert!(commands.len() > 10, "{commands:?}");
    // Set by the shell itself.
    let mut set: BTreeSet<String> = ["HOME", "PATH"].map(String::from).into();
    for command in &commands {
        let (used, assigned) = shell_names(command);
        for name in used {
            assert!(
                set.contains(&name),
                "infra/README.md uses ${name} before setting it, in: {command}"
            );
        }
        set.extend(assigned);
    }
    // A multi-line quoted argument stays with its command.
    assert!(
        commands
            .iter()
            .any(|c| c.contains("\"$AKENEO_SECRET_ARN\"") && c.contains("AKENEO_PASSWORD")),
        "{commands:#?}"
    );
    // The shape of the checker itself: an unset variable is caught, a quoted `$` is not one.
    let (used, assigned) = shell_names(r#"export A=1 B="$C" && echo '$D' "${E}'" $(f $1)"#);
    assert_eq!(used, ["C", "E"]);
    assert_eq!(assigned, ["A", "B"]);
}

#[test]
fn the_deploy_guide_reads_outputs_and_resources_the_template_has_and_builds_once() {
    let stack = Stack::new(ALL_DAMS);
    let outputs = stack.template["Outputs"].as_object().unwrap();
    let commands = guide_commands();
    let mut read = BTreeSet::new();
    for command in &commands {
        // `$(out NAME)`: the guide's helper around describe-stacks.
        for part in command.split("$(out ").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(outputs.contains_key(&name), "no output {name}: {command}");
            read.insert(name);
        }
        if let Some(part) = command.split("--logical-resource-id ").nth(1) {
            let id = part.split_whitespace().next().unwrap();
            let _ = stack.resource(id);
        }
        assert!(
            !command.contains("cargo lambda build"),
            "sam build runs cargo-lambda itself; building first builds everything twice: {command}"
        );
    }
    // Every output is read into a variable.
    for name in outputs.keys() {
        assert!(
            read.contains(name),
            "the guide never reads the output {name}"
        );
    }
    assert!(commands.iter().any(|c| c.contains("aws --version")));
    assert!(commands.iter().any(|c| c.starts_with("sam build")));
    // The stack name is set once and every stack command uses it.
    for command in commands.iter().filter(|c| c.contains("--stack-name")) {
        assert!(
            command.contains("--stack-name \"$STACK\""),
            "not the stack set at the top: {command}"
        );
    }
}

#[test]
fn the_teardown_names_what_sam_delete_leaves_behind() {
    let stack = Stack::new(ALL_DAMS);
    let text = std::fs::read_to_string(repo_path("infra/README.md")).unwrap();
    let teardown = text
        .split("## Teardown")
        .nth(1)
        .expect("infra/README.md has a Teardown section");
    let teardown = teardown.split("\n## ").next().unwrap();
    assert!(teardown.contains("sam delete --stack-name \"$STACK\""));
    let retained: Vec<&String> = stack.template["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| {
            ["DeletionPolicy", "UpdateReplacePolicy"]
                .iter()
                .any(|k| r[*k].as_str().is_some_and(|p| p != "Delete"))
        })
        .map(|(id, _)| id)
        .collect();
    for id in &retained {
        assert!(
            teardown.contains(id.as_str()),
            "{id} outlives `sam delete` (DeletionPolicy); the teardown must say so and how to remove it"
        );
    }
    if retained.is_empty() {
        assert!(
            teardown.contains("No resource in `template.yaml` has a `DeletionPolicy`"),
            "{teardown}"
        );
    }
    // What the stack holds that is lost with it.
    for kind in ["secrets", "table", "log groups"] {
        assert!(
            teardown.contains(kind),
            "teardown says nothing of the {kind}"
        );
    }
}
