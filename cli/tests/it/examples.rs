//! The shipped `examples/serve.toml` and `examples/mapping.toml` work against the bundled
//! simulators as they start, and `dam-sync demo --serve` runs them live for `check`, `status`
//! and `dlq`.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use akeneo_sim::{AkeneoSim, SimConfig};
use common::{dam_sync_command, run, text, wait_until};
use dam_sim::{DamSim, DamSimConfig};

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The shipped config with its three addresses moved to the given ones (tests run side by
/// side, so not on the fixed ports), written next to a copy of the shipped mapping.
fn examples_at(dir: &Path, pim: &str, dam: &str, listen: &str) -> PathBuf {
    let mut config = example("serve.toml");
    for (shipped, here) in [
        ("\"http://127.0.0.1:8081\"", format!("\"{pim}\"")),
        (
            "\"http://127.0.0.1:8090/generic\"",
            format!("\"{dam}/generic\""),
        ),
        ("\"127.0.0.1:8080\"", format!("\"{listen}\"")),
    ] {
        assert!(
            config.contains(shipped),
            "examples/serve.toml lost {shipped}"
        );
        config = config.replace(shipped, &here);
    }
    std::fs::write(dir.join("mapping.toml"), example("mapping.toml")).unwrap();
    let path = dir.join("serve.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Kills the child if the test fails before stopping it.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_with_the_shipped_examples_finds_no_error_against_the_simulators() {
    let pim = AkeneoSim::start(SimConfig::default()).await.unwrap();
    let dam = DamSim::start(DamSimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = examples_at(dir.path(), &pim.base_url(), &dam.base_url(), "127.0.0.1:0");
    let out = run(dam_sync_command(&[
        "check",
        "--config",
        config.to_str().unwrap(),
    ]))
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Mapping against the PIM: 0 error(s), 0 other note(s)."),
        "{stdout}"
    );
    assert!(stdout.contains("logged in as sim_user"), "{stdout}");
    // `check` cannot test the webhook secret: it must be the one the simulator signs with.
    let shipped: toml::Table = toml::from_str(&example("serve.toml")).unwrap();
    assert_eq!(
        shipped["dam"]["webhook_secrets"][0].as_str(),
        Some(dam.config().generic_webhook_secret.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serve_runs_the_examples_live_for_check_status_and_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let (pim_port, dam_port, listen_port) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let dam_url = format!("http://127.0.0.1:{dam_port}");
    let config = examples_at(
        dir.path(),
        &format!("http://127.0.0.1:{pim_port}"),
        &dam_url,
        &format!("127.0.0.1:{listen_port}"),
    );
    let config_arg = config.to_str().unwrap().to_owned();
    let mut child = dam_sync_command(&[
        "demo",
        "--serve",
        "--config",
        &config_arg,
        "--assets",
        "50",
        "--drop-rate",
        "0",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut running = Running(Some(child));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut printed = String::new();
    while !printed.contains("Ctrl-C stops everything") {
        let l = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("demo --serve did not get ready:\n{printed}"));
        printed.push_str(&l);
        printed.push('\n');
    }
    // It says where everything is and what to try.
    for expected in [
        format!("http://127.0.0.1:{pim_port}"),
        format!("{dam_url}/generic"),
        format!("http://127.0.0.1:{listen_port}/webhooks/generic"),
        format!("check --config {config_arg}"),
        format!("status --config {config_arg}"),
        format!("dlq list --config {config_arg}"),
        format!("{dam_url}/_sim/assets"),
    ] {
        assert!(printed.contains(&expected), "no {expected} in:\n{printed}");
    }

    let status = || {
        let out = dam_sync_command(&["status", "--config", &config_arg])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    wait_until("the 50 assets in the PIM", Duration::from_secs(60), || {
        status().contains("Assets with an applied version: 50")
    })
    .await;
    let out = run(dam_sync_command(&["check", "--config", &config_arg])).await;
    assert!(out.status.success(), "{}", text(&out.stdout));

    // The asset the printed hint creates with a reference the PIM refuses lands in the DLQ.
    let created = reqwest::Client::new()
        .post(format!("{dam_url}/_sim/assets"))
        .json(&serde_json::json!({"fields": {"title": "Odd one", "sku": "not a reference"}}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let dlq = || {
        let out = dam_sync_command(&["dlq", "list", "--config", &config_arg])
            .output()
            .unwrap();
        text(&out.stdout)
    };
    wait_until(
        "the refused asset in the DLQ",
        Duration::from_secs(60),
        || dlq().contains("product_ref"),
    )
    .await;

    let child = running.0.take().unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let exit = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(exit.success(), "{exit:?}");
}
