//! `dam-sync pim ...`: direct PIM commands.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use shared::akeneo::{AkeneoClient, AkeneoConfig, AkeneoError, AttributeType};
use tokio::time::Instant;

use crate::input::parse_assets;

/// A command that could not do its job: one line for the operator, and the exit code.
pub struct Failure {
    pub message: String,
    pub exit_code: u8,
    /// The underlying error's whole chain (SDK, HTTP), printed with `-v` only.
    pub detail: Option<String>,
}

impl Failure {
    /// Bad input or settings: nothing was sent.
    pub fn input(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            exit_code: 2,
            detail: None,
        }
    }

    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            message: message.into(),
            exit_code: 1,
            detail: None,
        }
    }

    /// Keeps `error`'s chain for `-v`.
    pub fn caused_by(mut self, error: &(dyn std::error::Error + 'static)) -> Self {
        self.detail = Some(shared::net::chain(error));
        self
    }

    /// Turns a PIM error into a sentence that says what to check. Wrong credentials, rights or
    /// address are settings to fix (exit 2, as other settings errors); an outage is not (1).
    fn pim(config: &AkeneoConfig, error: AkeneoError) -> Self {
        let (hint, settings) = match &error {
            AkeneoError::Unreachable { .. } | AkeneoError::Timeout(_) => (
                format!(
                    "check AKENEO_BASE_URL ({}) and that the PIM is reachable from here",
                    config.base_url
                ),
                false,
            ),
            AkeneoError::Credentials(_) => (
                "check AKENEO_CLIENT_ID, AKENEO_CLIENT_SECRET, AKENEO_USERNAME and \
                 AKENEO_PASSWORD (Connect > Connection settings in the PIM)"
                    .into(),
                true,
            ),
            AkeneoError::Http { status: 403, .. } => (
                "give the Connection's user role the Asset Manager permissions".into(),
                true,
            ),
            AkeneoError::Http { status: 404, .. } => (
                format!(
                    "check that {} is an Akeneo PIM with the Asset Manager",
                    config.base_url
                ),
                true,
            ),
            _ => (
                "retry later; if it persists, check the PIM's status".into(),
                false,
            ),
        };
        let message = format!("{error}; {hint}");
        let failure = if settings {
            Failure::input(message)
        } else {
            Failure::runtime(message)
        };
        failure.caused_by(&error)
    }
}

fn connect() -> Result<(AkeneoConfig, AkeneoClient), Failure> {
    let config = AkeneoConfig::from_env().map_err(|e| Failure::input(e.to_string()))?;
    let client = AkeneoClient::new(config.clone()).map_err(|e| Failure::input(e.to_string()))?;
    Ok((config, client))
}

pub async fn check(timeout_secs: u64) -> Result<ExitCode, Failure> {
    let (config, client) = connect()?;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);
    client
        .authenticate(deadline)
        .await
        .map_err(|e| Failure::pim(&config, e))?;
    say!("Connected to {} as {}.", config.base_url, config.username);
    let families = client
        .list_families(deadline)
        .await
        .map_err(|e| Failure::pim(&config, e))?;
    if families.is_empty() {
        say!("The PIM has no asset family yet: create one before syncing.");
    }
    for family in families {
        let attributes = client
            .list_attributes(&family.code, deadline)
            .await
            .map_err(|e| Failure::pim(&config, e))?
            .unwrap_or_default();
        say!("{} ({} attributes)", family.code, attributes.len());
        for a in attributes {
            let mut flags = vec![type_name(a.kind).to_string()];
            if a.value_per_locale {
                flags.push("per locale".into());
            }
            if a.value_per_channel {
                flags.push("per channel".into());
            }
            say!("  {} [{}]", a.code, flags.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn upsert(family: &str, file: &Path, timeout_secs: u64) -> Result<ExitCode, Failure> {
    let text = read(file)?;
    let assets = parse_assets(&text)
        .map_err(|e| Failure::input(format!("{}: {e}; nothing was sent", file.display())))?;
    let (config, client) = connect()?;
    let deadline = Instant::now() + Duration::from_secs(timeout_secs);

    // One GET up front turns a mistyped family into one clear line instead of N item errors.
    match client.get_family(family, deadline).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(Failure::input(format!(
                "asset family \"{family}\" does not exist in the PIM at {} (codes are case sensitive; `dam-sync pim check` lists them); nothing was sent",
                config.base_url
            )));
        }
        Err(e) => return Err(Failure::pim(&config, e)),
    }

    let report = client.upsert_assets(family, &assets, deadline).await;
    let failed: Vec<_> = report.failures().collect();
    for (i, failure) in &failed {
        let retry = if failure.retriable {
            " (temporary: run again)"
        } else {
            ""
        };
        say!("failed {}: {}{retry}", assets[*i].code, failure.reason());
    }
    let calls = client.call_counts();
    say!(
        "{} created, {} updated, {} failed ({} assets, {} PIM calls, {} throttled)",
        report.created(),
        report.updated(),
        failed.len(),
        assets.len(),
        calls.calls,
        calls.throttled
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn read(file: &Path) -> Result<String, Failure> {
    let mut text = String::new();
    let result = if file == Path::new("-") {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::File::open(file)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map(|_| ())
    };
    result.map_err(|e| Failure::input(format!("cannot read {}: {e}", file.display())))?;
    Ok(text)
}

fn type_name(kind: AttributeType) -> &'static str {
    match kind {
        AttributeType::Text => "text",
        AttributeType::Number => "number",
        AttributeType::Boolean => "boolean",
        AttributeType::Date => "date",
        AttributeType::SingleOption => "single_option",
        AttributeType::MultipleOptions => "multiple_options",
        AttributeType::MediaLink => "media_link",
        AttributeType::MediaFile => "media_file",
        AttributeType::Record => "record",
        AttributeType::AutoTagging => "auto_tagging",
        AttributeType::Unknown => "unknown type",
    }
}
