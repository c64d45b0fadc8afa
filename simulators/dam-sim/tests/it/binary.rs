//! The `dam-sim` binary: flags reach the simulator and it serves over HTTP.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// Kills the child even when an assertion fails first.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_generates_assets_and_serves_them() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dam-sim"))
        .args(["--listen", "127.0.0.1:0", "--generate", "3", "--seed", "7"])
        .args(["--generic-token", "bin-token"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _guard = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let base = line
        .trim()
        .strip_prefix("dam-sim listening on ")
        .unwrap_or_else(|| panic!("unexpected banner: {line:?}"))
        .to_owned();
    let client = dam_sim::http_client_builder().build().unwrap();
    let changes: Value = client
        .get(format!("{base}/generic/changes"))
        .bearer_auth("bin-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = changes["assets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..3).map(|i| dam_sim::generated_asset(7, i).0).collect();
    assert_eq!(ids, expected, "--generate 3 --seed 7");
    let r = client
        .get(format!("{base}/generic/changes"))
        .bearer_auth("dam-sim-generic-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "--generic-token replaced the default");
}
