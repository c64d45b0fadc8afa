//! `dam-sync demo --serve`: something live to try the operator commands on. Starts the Akeneo
//! and DAM simulators where a config's `[pim] base_url` and `[dam] api_url` point (loopback
//! only), creates assets in the DAM, and serves that config until ctrl-c, printing the
//! addresses and the commands to try.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use akeneo_sim::{AkeneoSim, SimConfig};
use dam_sim::{DamSim, DamSimConfig, DeliveryKnobs, WebhookKind};
use shared::dam::settings::DamSettings;
use tokio::sync::watch;

use crate::config::Config;
use crate::demo::thousands;
use crate::pim::Failure;
use crate::runtime::{Runtime, shutdown_signal};

const SEED: u64 = 7;

/// The loopback address a simulator must listen on to answer `url`, or why it cannot.
fn loopback_addr(url: &str, key: &str, file: &str) -> Result<SocketAddr, Failure> {
    let parsed = url::Url::parse(url)
        .map_err(|e| Failure::input(format!("{key} in {file} is not a URL ({e}): {url}")))?;
    let not_local = || {
        Failure::input(format!(
            "{key} in {file} is {url}: demo --serve runs the simulators on this machine, so it \
             must be a loopback address such as http://127.0.0.1:8081 (see examples/serve.toml)"
        ))
    };
    let host = parsed.host_str().ok_or_else(not_local)?;
    let port = parsed.port_or_known_default().ok_or_else(not_local)?;
    // Named without a DNS lookup: only `localhost` and loopback literals qualify.
    let ip = match host.trim_matches(['[', ']']) {
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        literal => literal.parse().map_err(|_| not_local())?,
    };
    if !ip.is_loopback() {
        return Err(not_local());
    }
    Ok(SocketAddr::new(ip, port))
}

/// Where this binary is, as the user can type it (relative to the working directory when
/// inside it, e.g. `target/debug/dam-sync` after `cargo run`).
fn this_command() -> String {
    let exe = std::env::current_exe().ok();
    let cwd = std::env::current_dir().ok();
    match (exe, cwd) {
        (Some(exe), Some(cwd)) => match exe.strip_prefix(&cwd) {
            Ok(relative) => relative.display().to_string(),
            Err(_) => exe.display().to_string(),
        },
        _ => "dam-sync".into(),
    }
}

pub async fn run(path: &Path, assets: usize, drop_rate: f64) -> Result<ExitCode, Failure> {
    if !(0.0..1.0).contains(&drop_rate) {
        return Err(Failure::input("--drop-rate must be in [0, 1)"));
    }
    let config = Config::load(path).map_err(|e| {
        Failure::input(format!(
            "{e}: run demo --serve from the repository root, or pass --config FILE"
        ))
    })?;
    let file = config.file.clone();
    let pim_url = config.raw.pim.base_url.clone().unwrap_or_default();
    let pim_addr = loopback_addr(&pim_url, "[pim] base_url", &file)?;
    let DamSettings::Generic(generic) = &config.raw.dam else {
        return Err(Failure::input(format!(
            "[dam] kind in {file}: demo --serve simulates a generic DAM; set kind = \"generic\" (see examples/serve.toml)"
        )));
    };
    let dam_url = generic.api_url.clone().unwrap_or_default();
    let dam_addr = loopback_addr(&dam_url, "[dam] api_url", &file)?;

    // The simulators start empty, so the store must too: versions recorded by an earlier run
    // would make the consumer skip the new run's assets as already applied.
    let store = config.store_path();
    for suffix in ["", "-wal", "-shm"] {
        let mut name = store.clone().into_os_string();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Failure::input(format!(
                    "cannot clear the store {} ([store] path in {file}): {e}",
                    Path::new(&name).display()
                )));
            }
        }
    }

    let in_use = |what: &str, key: &str, addr: &dyn std::fmt::Display, e: std::io::Error| {
        Failure::input(format!(
            "cannot start the {what} on {addr} ({key} in {file}): {e}; stop what uses the port or change it"
        ))
    };
    let pim = AkeneoSim::start_on(SimConfig::default(), pim_addr)
        .await
        .map_err(|e| in_use("Akeneo simulator", "[pim] base_url", &pim_addr, e))?;
    let dam = DamSim::start(DamSimConfig {
        listen: dam_addr,
        ..DamSimConfig::default()
    })
    .await
    .map_err(|e| in_use("DAM simulator", "[dam] api_url", &dam_addr, e))?;

    let runtime = Arc::new(Runtime::build(&config)?);
    let listen = config.raw.server.listen;
    // A host name (`localhost:8080`) is resolved by the bind itself.
    let listener = tokio::net::TcpListener::bind(listen.as_str())
        .await
        .map_err(|e| in_use("webhook endpoint", "[server] listen", &listen, e))?;
    let local = listener
        .local_addr()
        .map_err(|e| Failure::runtime(e.to_string()))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let serving = tokio::spawn(runtime.clone().run(listener, stop_rx));

    dam.send_webhooks_to(
        &format!("http://{local}/webhooks/generic"),
        WebhookKind::Generic,
        DeliveryKnobs {
            drop_rate,
            duplicate_rate: 0.05,
            seed: SEED,
            retries: 3,
            ..DeliveryKnobs::default()
        },
    );
    dam.generate(assets, SEED);

    let (client_id, secret, username, password) = pim.credentials();
    let me = this_command();
    let cfg = path.display();
    let dam_base = dam.base_url();
    println!(
        "Akeneo PIM simulator  {}  (client {client_id} / {secret}, user {username} / {password})",
        pim.base_url()
    );
    println!(
        "DAM simulator         {dam_base}  (generic API {})",
        dam.generic_base_url()
    );
    println!(
        "dam-sync serve        http://{local}/webhooks/generic, config {cfg}, store {}",
        store.display()
    );
    println!();
    println!(
        "Created {} assets in the DAM; their webhooks are on their way, {:.0}% dropped on purpose: \
         the poller finds those within [poller] interval_secs ({} s).",
        thousands(assets as u64),
        drop_rate * 100.0,
        config.raw.poller.interval_secs
    );
    println!("Try, in another terminal:");
    println!("  {me} check --config {cfg}     # config, logins, the mapping against the PIM");
    println!("  {me} status --config {cfg}    # queue, poller cursor, dead letters, last errors");
    println!("  # a new asset in the DAM, in the PIM a moment later:");
    println!(
        "  curl -s -X POST {dam_base}/_sim/assets -H 'content-type: application/json' \\\n      -d '{{\"fields\": {{\"title\": \"Blue mug\", \"sku\": \"MUG-42\", \"width\": 800}}}}'"
    );
    println!(
        "  # one the PIM refuses (its product_ref must look like AB-123), parked with the reason:"
    );
    println!(
        "  curl -s -X POST {dam_base}/_sim/assets -H 'content-type: application/json' \\\n      -d '{{\"fields\": {{\"title\": \"Odd one\", \"sku\": \"not a reference\"}}}}'"
    );
    println!("  {me} dlq list --config {cfg}");
    println!(
        "Ctrl-C stops everything; the simulators keep nothing and the next start clears the store."
    );

    shutdown_signal().await;
    println!("Stopping: finishing the batch and poll in progress...");
    let _ = stop_tx.send(true);
    serving
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?
        .map_err(|e| Failure::runtime(format!("HTTP server failed: {e}")))?;
    pim.shutdown();
    println!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::loopback_addr;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        let addr = loopback_addr("http://127.0.0.1:8081", "[pim] base_url", "f.toml")
            .map_err(|f| f.message)
            .unwrap();
        assert_eq!(addr.to_string(), "127.0.0.1:8081");
        let addr = loopback_addr("http://localhost:8090/generic", "[dam] api_url", "f.toml")
            .map_err(|f| f.message)
            .unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 8090);
        let err = loopback_addr(
            "https://my-pim.cloud.akeneo.com",
            "[pim] base_url",
            "f.toml",
        )
        .unwrap_err();
        assert!(
            err.message.contains("[pim] base_url in f.toml"),
            "{}",
            err.message
        );
        assert!(err.message.contains("loopback"), "{}", err.message);
    }
}
