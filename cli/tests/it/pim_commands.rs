//! `dam-sync pim ...` as an operator runs it: the real binary against the Akeneo simulator.

use std::io::Write;
use std::process::{Command, Output};

use akeneo_sim::{AkeneoSim, SimConfig, SimHandle};

const BULK_PATCH: &str = "PATCH /api/rest/v1/asset-families/{family}/assets";

async fn pim() -> SimHandle {
    AkeneoSim::start(SimConfig::default()).await.unwrap()
}

/// Runs `dam-sync` with the simulator's credentials (overridable) and no inherited AKENEO_*.
async fn dam_sync(sim: &SimHandle, args: &[&str], overrides: &[(&str, &str)]) -> Output {
    let (id, secret, user, password) = sim.credentials();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dam-sync"));
    cmd.args(args)
        .env("AKENEO_BASE_URL", sim.base_url())
        .env("AKENEO_CLIENT_ID", id)
        .env("AKENEO_CLIENT_SECRET", secret)
        .env("AKENEO_USERNAME", user)
        .env("AKENEO_PASSWORD", password)
        .env("AKENEO_MAX_ATTEMPTS", "2")
        .env_remove("RUST_LOG");
    for (k, v) in overrides {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn file(contents: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(contents.as_bytes()).unwrap();
    f
}

fn asset_line(code: &str, locale: &str) -> String {
    format!(
        r#"{{"code":"{code}","values":{{"alt_text":[{{"locale":"{locale}","channel":null,"data":"Alt {code}"}}],"product_ref":[{{"locale":null,"channel":null,"data":"SKU-1"}}]}}}}"#
    )
}

#[tokio::test]
async fn check_lists_families_and_attributes() {
    let sim = pim().await;
    let out = dam_sync(&sim, &["pim", "check"], &[]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("Connected to"), "{stdout}");
    assert!(stdout.contains("packshot (11 attributes)"), "{stdout}");
    assert!(stdout.contains("alt_text [text, per locale]"), "{stdout}");
    assert!(stdout.contains("user_instructions"), "{stdout}");
}

#[tokio::test]
async fn check_explains_wrong_credentials_in_one_line() {
    let sim = pim().await;
    let out = dam_sync(&sim, &["pim", "check"], &[("AKENEO_PASSWORD", "nope")]).await;
    let stderr = text(&out.stderr);
    // A settings error, as a malformed URL or an unset variable.
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("refused the credentials") && stderr.contains("AKENEO_PASSWORD"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_explains_an_unreachable_pim() {
    let sim = pim().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = dam_sync(&sim, &["pim", "check"], &[("AKENEO_BASE_URL", &url)]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("cannot reach the PIM") && stderr.contains("AKENEO_BASE_URL"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_refuses_a_malformed_url_or_missing_setting() {
    let sim = pim().await;
    let out = dam_sync(
        &sim,
        &["pim", "check"],
        &[("AKENEO_BASE_URL", "pim.example.com")],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("AKENEO_BASE_URL has an invalid value"),
        "{}",
        text(&out.stderr)
    );

    let out = dam_sync(&sim, &["pim", "check"], &[("AKENEO_CLIENT_ID", "")]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("AKENEO_CLIENT_ID is not set"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(sim.stats().total_calls, 0);
}

#[tokio::test]
async fn upsert_pushes_ndjson_and_prints_counts() {
    let sim = pim().await;
    let lines: Vec<String> = (0..250)
        .map(|i| asset_line(&format!("cli_{i}"), "en_US"))
        .collect();
    let f = file(&lines.join("\n"));
    let out = dam_sync(
        &sim,
        &[
            "pim",
            "upsert",
            "--family",
            "packshot",
            f.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("250 created, 0 updated, 0 failed"),
        "{stdout}"
    );
    assert_eq!(sim.stats().calls_to(BULK_PATCH), 3);
    assert_eq!(sim.assets("packshot").len(), 250);
}

#[tokio::test]
async fn upsert_reports_each_rejected_asset_and_exits_1() {
    let sim = pim().await;
    let body = format!(
        "[{},\n{},\n{}]",
        asset_line("good_1", "en_US"),
        asset_line("bad_locale", "en_AU"),
        asset_line("good_2", "fr_FR")
    );
    let f = file(&body);
    let out = dam_sync(
        &sim,
        &[
            "pim",
            "upsert",
            "--family",
            "packshot",
            f.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("2 created, 0 updated, 1 failed"),
        "{stdout}"
    );
    let failure = stdout
        .lines()
        .find(|l| l.starts_with("failed bad_locale:"))
        .expect(&stdout);
    assert!(failure.contains("en_AU"), "{failure}");
}

#[tokio::test]
async fn upsert_names_the_bad_line_and_sends_nothing() {
    let sim = pim().await;
    let body = format!(
        "{}\n{}\n{{\"code\": \"x\", \"values\": [}}\n",
        asset_line("a", "en_US"),
        asset_line("b", "en_US")
    );
    let f = file(&body);
    let out = dam_sync(
        &sim,
        &[
            "pim",
            "upsert",
            "--family",
            "packshot",
            f.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("line 3") && stderr.contains("nothing was sent"),
        "{stderr}"
    );
    assert_eq!(sim.stats().total_calls, 0);
}

#[tokio::test]
async fn upsert_refuses_an_unknown_family_in_one_line() {
    let sim = pim().await;
    let f = file(&asset_line("a", "en_US"));
    let out = dam_sync(
        &sim,
        &[
            "pim",
            "upsert",
            "--family",
            "Packshot",
            f.path().to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("asset family \"Packshot\" does not exist"),
        "{stderr}"
    );
    assert_eq!(sim.stats().calls_to(BULK_PATCH), 0);
}

#[tokio::test]
async fn upsert_exits_2_on_wrong_credentials() {
    let sim = pim().await;
    let f = file(&asset_line("a", "en_US"));
    let path = f.path().to_str().unwrap();
    let out = dam_sync(
        &sim,
        &["pim", "upsert", "--family", "packshot", path],
        &[("AKENEO_PASSWORD", "nope")],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the PIM refused the credentials") && stderr.contains("AKENEO_PASSWORD"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unknown_pim_host_is_named_as_a_dns_failure() {
    let sim = pim().await;
    let out = dam_sync(
        &sim,
        &["pim", "check"],
        &[("AKENEO_BASE_URL", "http://dam-sync-test.invalid")],
    )
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(
            "cannot reach the PIM at http://dam-sync-test.invalid: DNS lookup failed (unknown \
             host); check AKENEO_BASE_URL"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn upsert_explains_a_missing_file() {
    let sim = pim().await;
    let out = dam_sync(
        &sim,
        &[
            "pim",
            "upsert",
            "--family",
            "packshot",
            "/nonexistent/assets.json",
        ],
        &[],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/assets.json"));
}

#[tokio::test]
async fn every_command_has_help() {
    let sim = pim().await;
    for args in [
        &["--help"][..],
        &["pim", "--help"],
        &["pim", "check", "--help"],
        &["pim", "upsert", "--help"],
    ] {
        let out = dam_sync(&sim, args, &[]).await;
        assert!(out.status.success(), "{args:?}");
        let stdout = text(&out.stdout);
        assert!(stdout.contains("Usage: dam-sync"), "{args:?}: {stdout}");
        if args.len() > 1 {
            assert!(
                stdout.contains("AKENEO_CLIENT_SECRET"),
                "{args:?} documents the settings"
            );
        }
    }
}
