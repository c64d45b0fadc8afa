//! What the user reads when something is wrong: one test per message, each showing the text
//! (what went wrong, where, how to fix it), run through the real binary.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use akeneo_sim::{AkeneoSim, SimConfig, SimHandle};
use common::{
    Serve, dam_sync_command, pim_password, run, text, wait_until, write_config, write_config_for,
};
use dam_sim::{DamSim, DamSimConfig};

/// A closed local port: connections to it are refused.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn sims() -> (SimHandle, dam_sim::DamSimHandle) {
    let pim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    (pim, dam)
}

async fn check(config: &Path, password: &str) -> std::process::Output {
    let mut cmd = dam_sync_command(&["check", "--config", config.to_str().unwrap()]);
    cmd.env("TEST_PIM_PASSWORD", password);
    run(cmd).await
}

#[tokio::test]
async fn check_lists_every_missing_variable_in_one_run() {
    let (pim, dam) = sims().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pim, &dam, "");
    let text_of = std::fs::read_to_string(&config).unwrap();
    let (client_id, secret, username, _) = pim.credentials();
    // Two keys left out, two secrets reading unset variables (the password reads
    // TEST_PIM_PASSWORD, not set here): four problems.
    let broken = text_of
        .replace(&format!("client_id = \"{client_id}\"\n"), "")
        .replace(&format!("username = \"{username}\"\n"), "")
        .replace(
            &format!("client_secret = \"{secret}\""),
            "client_secret = { env = \"DAM_SYNC_IT_UNSET_SECRET\" }",
        );
    std::fs::write(&config, broken).unwrap();
    let out = run(dam_sync_command(&[
        "check",
        "--config",
        config.to_str().unwrap(),
    ]))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("4 problems to fix:"), "{stderr}");
    for line in [
        "[pim] client_id is not set: copy it from the PIM's Connection settings",
        "[pim] client_secret is not set: it reads the environment variable \
         DAM_SYNC_IT_UNSET_SECRET, which is not set; export it or write the value inline",
        "[pim] username is not set: use the Connection's API username",
        "[pim] password is not set: it reads the environment variable TEST_PIM_PASSWORD, which \
         is not set; export it or write the value inline",
    ] {
        assert!(stderr.contains(&format!("\n  {line}")), "{stderr}");
    }
    assert_eq!(pim.stats().total_calls, 0);
}

#[tokio::test]
async fn check_names_a_dns_failure_and_still_tries_the_pim() {
    let (pim, _) = sims().await;
    let dir = tempfile::tempdir().unwrap();
    let dam_table =
        "kind = \"generic\"\napi_url = \"http://dam-sync-test.invalid\"\napi_token = \"t\"";
    let config = write_config_for(dir.path(), &pim, dam_table, common::MAPPING, "");
    let out = check(&config, &pim_password(&pim)).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "DAM (generic): cannot reach the DAM at dam-sync-test.invalid: DNS lookup failed \
             (unknown host); check [dam] api_url and api_token in"
        ),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("PIM {}/: logged in", pim.base_url())),
        "{stdout}"
    );
}

#[tokio::test]
async fn check_names_a_refused_pim_after_reaching_the_dam() {
    let (pim, dam) = sims().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pim, &dam, "");
    let text_of = std::fs::read_to_string(&config).unwrap().replace(
        &pim.base_url(),
        &format!("http://127.0.0.1:{}", closed_port()),
    );
    std::fs::write(&config, text_of).unwrap();
    let out = check(&config, &pim_password(&pim)).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.contains("DAM (generic): reachable, credentials accepted."),
        "{stdout}"
    );
    assert!(
        stderr.contains(": connection refused (nothing listens there); check [pim] base_url"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_reports_an_unreachable_dam_and_pim_together() {
    let (pim, _) = sims().await;
    let dir = tempfile::tempdir().unwrap();
    let dam_table = format!(
        "kind = \"generic\"\napi_url = \"http://127.0.0.1:{}\"\napi_token = \"t\"",
        closed_port()
    );
    let config = write_config_for(dir.path(), &pim, &dam_table, common::MAPPING, "");
    let text_of = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&pim.base_url(), "http://dam-sync-test.invalid");
    std::fs::write(&config, text_of).unwrap();
    let out = check(&config, &pim_password(&pim)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 connections failed:"), "{stderr}");
    assert!(
        stderr.contains("DAM (generic): cannot reach the DAM at 127.0.0.1: connection refused"),
        "{stderr}"
    );
    assert!(stderr.contains("DNS lookup failed"), "{stderr}");
}

#[tokio::test]
async fn a_bad_webhook_secret_names_its_key_and_the_expected_form() {
    let (pim, dam) = sims().await;
    let dir = tempfile::tempdir().unwrap();
    let dam_table = format!(
        "kind = \"generic\"\napi_url = \"{}\"\napi_token = \"t\"\nwebhook_secrets = [\"secret!\"]",
        dam.generic_base_url()
    );
    let config = write_config_for(dir.path(), &pim, &dam_table, common::MAPPING, "");
    let out = check(&config, &pim_password(&pim)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "[dam] webhook_secrets has an invalid value \"entry 1 of 1, hidden\": not valid \
             base64 after whsec_; expected a Standard Webhooks secret, whsec_ followed by base64"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("secret!"), "{stderr}");
}

#[tokio::test]
async fn serve_listens_on_a_host_name() {
    let (pim, dam) = sims().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pim, &dam, "[poller]\nenabled = false\n");
    let text_of = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"localhost:0\"");
    std::fs::write(&config, text_of).unwrap();
    let serve = Serve::start(&config, &pim_password(&pim));
    let health = common::healthz(&serve.url).await;
    assert_eq!(health.status(), 200);

    // A value without a port says how to write it.
    let text_of = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen = \"localhost:0\"", "listen = \"localhost\"");
    std::fs::write(&config, text_of).unwrap();
    let out = check(&config, &pim_password(&pim)).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "[server] listen has an invalid value \"localhost\": write host:port, e.g. \
             127.0.0.1:8080, localhost:8080 or [::1]:8080"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_store_path_that_is_a_directory_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().to_str().unwrap();
    let out = run(dam_sync_command(&["status", "--store", p])).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "SQLite store {p}: is a directory, not a file; point --store / [store] path at a \
             file inside it"
        )),
        "{stderr}"
    );
}

/// AWS settings pointing at `endpoint`, with or without credentials.
fn aws_command(
    args: &[&str],
    endpoint: &str,
    credentials: bool,
    home: &Path,
) -> std::process::Command {
    let mut cmd = dam_sync_command(args);
    // An empty home: no ~/.aws files on the machine running the tests.
    cmd.env("HOME", home)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_CONFIG_FILE")
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("QUEUE_URL", format!("{endpoint}/123456789012/main"))
        .env("DLQ_URL", format!("{endpoint}/123456789012/dlq"));
    if credentials {
        cmd.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test");
    } else {
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN");
    }
    cmd
}

#[tokio::test]
async fn aws_errors_are_one_short_line_and_the_chain_comes_with_v() {
    let home = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let out = run(aws_command(&["dlq", "list"], &endpoint, true, home.path())).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.len() < 400, "{} characters: {stderr}", stderr.len());
    assert!(
        stderr.contains(&format!(
            "listing dead letters failed on AWS ({endpoint}): queue temporarily unavailable: \
             connection refused (nothing listens there); check AWS_REGION"
        )),
        "{stderr}"
    );
    let out = run(aws_command(
        &["dlq", "list", "-v"],
        &endpoint,
        true,
        home.path(),
    ))
    .await;
    let stderr = text(&out.stderr);
    assert!(stderr.contains("\ndetail: "), "{stderr}");
}

#[tokio::test]
async fn an_aws_service_error_is_its_code_and_message() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS_ENDPOINT_URL is not set: this test needs a moto server (see .ci/run)");
    let home = tempfile::tempdir().unwrap();
    let mut cmd = aws_command(&["dlq", "list"], &endpoint, true, home.path());
    let missing = format!(
        "{endpoint}/123456789012/dam-sync-missing-{}",
        std::process::id()
    );
    cmd.env("QUEUE_URL", &missing).env("DLQ_URL", &missing);
    let out = run(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            ": AWS.SimpleQueueService.NonExistentQueue: The specified queue does not exist; \
             check AWS_REGION"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn missing_aws_credentials_are_one_line_without_imds_warnings() {
    let home = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let out = run(aws_command(&["dlq", "list"], &endpoint, false, home.path())).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        !stderr.contains("IMDS") && !stderr.contains("imds"),
        "{stderr}"
    );
    assert!(
        stderr.contains("no AWS credentials found (set AWS_ACCESS_KEY_ID"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_closed_pipe_ends_the_listing_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    embedded_store::SqliteStore::open(&path).unwrap();
    let mut cmd = dam_sync_command(&["dlq", "list", "--store", path.to_str().unwrap()]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The reader is gone before the first line is written, as `| head -1` after one line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// A `serve` child with its standard error captured (logs), standard output discarded.
struct Logged {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Logged {
    fn start(config: &Path, password: &str) -> Logged {
        let mut cmd = dam_sync_command(&["serve", "--config", config.to_str().unwrap()]);
        cmd.env("TEST_PIM_PASSWORD", password)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Logged { child, stderr }
    }

    fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_one_plain_line_per_poll_and_per_batch() {
    let (pim, dam) = sims().await;
    dam.generate(3, 7);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pim, &dam, "[poller]\ninterval_secs = 3600\n");
    let serve = Logged::start(&config, &pim_password(&pim));
    wait_until("the batch line", Duration::from_secs(60), || {
        serve.logs().contains("batch: ")
    })
    .await;
    let logs = serve.logs();
    assert!(
        !logs.contains('\u{1b}'),
        "no colour codes in a pipe: {logs}"
    );
    let polls: Vec<&str> = logs.lines().filter(|l| l.contains(" poll: ")).collect();
    assert_eq!(polls.len(), 1, "{logs}");
    assert!(
        polls[0].contains("INFO") && polls[0].contains("poll: 3 changes listed, 3 queued"),
        "{logs}"
    );
    let batch = logs.lines().find(|l| l.contains("batch: ")).unwrap();
    assert!(
        batch.contains("batch: 3 messages, 3 applied, 0 retried, 0 parked, ")
            && batch.ends_with(" PIM calls"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_a_dam_failure_once() {
    let (pim, dam) = sims().await;
    dam.set_faults(dam_sim::Faults {
        down: true,
        ..dam_sim::Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &pim, &dam, "[poller]\ninterval_secs = 3600\n");
    let serve = Logged::start(&config, &pim_password(&pim));
    wait_until("the poll failure", Duration::from_secs(60), || {
        serve.logs().contains("DAM temporarily unavailable")
    })
    .await;
    // Anything logged twice would be written by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let logs = serve.logs();
    let mentions = logs
        .lines()
        .filter(|l| l.contains("DAM temporarily unavailable"))
        .count();
    assert_eq!(mentions, 1, "{logs}");
}

#[tokio::test]
async fn backfill_lists_its_dam_and_poller_problems_together() {
    let (pim, _) = sims().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config_for(
        dir.path(),
        &pim,
        "kind = \"generic\"",
        common::MAPPING,
        "[poller]\npage_size = 0\n",
    );
    let out = run(dam_sync_command(&[
        "backfill",
        "--config",
        config.to_str().unwrap(),
        "--no-progress",
    ]))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("3 problems to fix:"), "{stderr}");
    for line in [
        "[dam] api_url is not set: the DAM's contract base",
        "[dam] api_token is not set: the DAM's bearer token",
        "[poller] page_size has an invalid value \"0\"",
    ] {
        assert!(stderr.contains(&format!("\n  {line}")), "{stderr}");
    }
}
