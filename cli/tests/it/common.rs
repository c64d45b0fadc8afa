//! Helpers of the `dam-sync` binary tests: config files pointing at the simulators, running
//! the binary, and a `serve` child process.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use akeneo_sim::SimHandle;
use dam_sim::DamSimHandle;

pub const BULK_PATCH: &str = "PATCH /api/rest/v1/asset-families/{family}/assets";

/// dam-sim's generated assets onto the simulator's `packshot` family.
pub const MAPPING: &str = dam_sim::PACKSHOT_MAPPING;

/// Writes a config for `serve`/`check`/`backfill` into `dir`; `extra` is appended verbatim
/// (e.g. `[poller]` or `[consumer]` sections).
pub fn write_config(dir: &Path, pim: &SimHandle, dam: &DamSimHandle, extra: &str) -> PathBuf {
    let dam_table = format!(
        r#"kind = "generic"
api_url = "{dam_url}"
api_token = "{token}"
webhook_secrets = ["{webhook_secret}"]"#,
        dam_url = dam.generic_base_url(),
        token = dam.config().generic_token,
        webhook_secret = dam.config().generic_webhook_secret,
    );
    write_config_for(dir, pim, &dam_table, MAPPING, extra)
}

/// Writes a config like [`write_config`] with the body of its `[dam]` table and its mapping
/// file given; the PIM password is read from `TEST_PIM_PASSWORD` ([`Serve::start`]).
pub fn write_config_for(
    dir: &Path,
    pim: &SimHandle,
    dam_table: &str,
    mapping: &str,
    extra: &str,
) -> PathBuf {
    let (client_id, secret, username, _) = pim.credentials();
    std::fs::write(dir.join("mapping.toml"), mapping).unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[store]
path = "state.db"

[pim]
base_url = "{pim_url}"
client_id = "{client_id}"
client_secret = "{secret}"
username = "{username}"
password = {{ env = "TEST_PIM_PASSWORD" }}
max_attempts = 1

[dam]
{dam_table}

[mapping]
path = "mapping.toml"
{extra}
"#,
        pim_url = pim.base_url(),
    );
    let path = dir.join("serve.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The password the configs read from the environment.
pub fn pim_password(pim: &SimHandle) -> String {
    pim.credentials().3
}

pub fn dam_sync_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dam-sync"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("QUEUE_URL")
        .env_remove("DLQ_URL")
        .env_remove("TABLE_NAME");
    cmd
}

/// Runs `dam-sync` to completion off the async runtime (the simulators keep serving).
pub async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `dam-sync serve` and everything it printed so far.
pub struct Serve {
    pub child: Child,
    pub url: String,
    pub stdout: Arc<Mutex<String>>,
}

impl Serve {
    /// Starts `serve` and waits for the line announcing its address.
    pub fn start(config: &Path, password: &str) -> Serve {
        let mut cmd = dam_sync_command(&["serve", "--config", config.to_str().unwrap()]);
        cmd.env("TEST_PIM_PASSWORD", password)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_owned();
                    let _ = tx.send(format!("http://{addr}"));
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("serve announces its address");
        Serve { child, url, stdout }
    }

    pub fn output(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback port free now (the caller binds it later).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET {base}/healthz`.
pub async fn healthz(base: &str) -> reqwest::Response {
    shared::https::client_builder()
        .build()
        .unwrap()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
}
