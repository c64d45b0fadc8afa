//! The DAM's settings, one type for every front: the `[dam]` table of the `serve` config
//! (tagged by `kind`) or the environment of the Lambda functions, where key `api_url` of the
//! generic DAM is `GENERIC_API_URL`, `poll_reserve` of Cloudinary is `CLOUDINARY_POLL_RESERVE`,
//! and so on (`docs/settings.md`). The one place that builds a DAM client ([`AssetSource`]) and
//! the webhook settings of each DAM.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::Deserialize;
use url::Url;

use super::bynder::api::{BynderApi, BynderApiSettings};
use super::bynder::sns::{CertSource, SnsSettings};
use super::cloudinary::api::{CloudinaryApi, CloudinaryApiSettings};
use super::cloudinary::webhook::{CloudinarySettings, SignatureAlgorithm};
use super::generic::api::{GenericApi, GenericApiSettings};
use super::generic::webhook::{GenericSettings, SigningSecret};
use super::{AssetSource, DamKind};
use crate::settings::{self, Origin, Secret, SettingError, required_text as required};

/// Admin API calls per hour the poller leaves to the consumer by default (Cloudinary's free
/// tier has 500).
pub const DEFAULT_CLOUDINARY_POLL_RESERVE: u64 = 100;

/// The variable naming the DAM of the poller (and of a single-DAM deployment).
pub const DAM_KIND: &str = "DAM_KIND";

/// One DAM's settings; fields unused by a function may stay unset (the ingest function needs
/// only the webhook keys, the consumer and the poller only the API keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DamSettings {
    Generic(GenericDam),
    Cloudinary(CloudinaryDam),
    Bynder(BynderDam),
}

/// A DAM speaking the generic REST contract (`docs/generic-dam.md`) and Standard Webhooks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenericDam {
    /// Base of the REST contract (`{api_url}/assets`, `{api_url}/changes`).
    pub api_url: Option<String>,
    /// Bearer token of the REST contract.
    pub api_token: Option<Secret>,
    /// Standard Webhooks secrets (`whsec_...`), two during a rotation.
    #[serde(default)]
    pub webhook_secrets: Vec<Secret>,
    /// Accepted clock distance of a webhook timestamp. Default 300.
    pub tolerance_secs: Option<u64>,
}

/// Cloudinary: Admin API and signed notifications.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudinaryDam {
    pub cloud_name: Option<String>,
    pub api_key: Option<String>,
    /// Signs Admin API calls and verifies notifications.
    pub api_secret: Option<Secret>,
    /// Admin API base (default `https://api.cloudinary.com`).
    pub api_base: Option<String>,
    /// The poller stops while the hourly Admin API budget left is at or below this. Default 100.
    pub poll_reserve: Option<u64>,
    /// `auto` (by signature length), `sha1` or `sha256`.
    pub signature_algorithm: Option<String>,
    /// Oldest accepted `X-Cld-Timestamp`. Default 7200.
    pub max_age_secs: Option<u64>,
}

/// Bynder: REST API with a permanent token, webhooks through Amazon SNS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BynderDam {
    pub portal_url: Option<String>,
    pub token: Option<Secret>,
    /// SNS topics whose notifications are accepted.
    #[serde(default)]
    pub topic_arns: Vec<String>,
    /// Oldest accepted SNS `Timestamp`. Default 3600 (SNS retries for up to an hour).
    pub sns_max_age_secs: Option<u64>,
    /// Where SNS signing certificates may come from besides AWS's SNS hosts: hosts
    /// (`certs.example.com`, `host:port`, https) or URL prefixes (`https://...`, or
    /// `http://` on a loopback address only). Default none: SNS hosts over https only.
    #[serde(default)]
    pub sns_cert_hosts: Vec<String>,
}

/// Variable prefix of each DAM's keys.
pub const fn env_prefix(kind: DamKind) -> &'static str {
    match kind {
        DamKind::Generic => "GENERIC_",
        DamKind::Cloudinary => "CLOUDINARY_",
        DamKind::Bynder => "BYNDER_",
    }
}

/// Names of earlier releases, still read when the current one is unset.
fn legacy(name: &str) -> Option<&'static str> {
    match name {
        "GENERIC_API_URL" => Some("GENERIC_DAM_URL"),
        "GENERIC_API_TOKEN" => Some("GENERIC_DAM_TOKEN"),
        "BYNDER_SNS_MAX_AGE_SECS" => Some("SNS_MAX_AGE_SECS"),
        _ => None,
    }
}

impl DamSettings {
    pub fn kind(&self) -> DamKind {
        match self {
            DamSettings::Generic(_) => DamKind::Generic,
            DamSettings::Cloudinary(_) => DamKind::Cloudinary,
            DamSettings::Bynder(_) => DamKind::Bynder,
        }
    }

    /// Where these settings came from, when read from the environment.
    pub fn env_origin(&self) -> Origin {
        Origin::Env(env_prefix(self.kind()))
    }

    /// The DAM named by `DAM_KIND` (default `generic`), read from its variables.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let kind = match get(DAM_KIND).filter(|v| !v.trim().is_empty()) {
            None => DamKind::Generic,
            Some(raw) => raw.parse().map_err(|_| {
                SettingError::invalid(DAM_KIND, raw.trim(), "use generic, cloudinary or bynder")
            })?,
        };
        Self::read(kind, &with_legacy(&get))
    }

    /// Every DAM with at least one of its variables set (the ingest function and the consumer
    /// serve several DAMs at once).
    pub fn all_from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<Self>, SettingError> {
        let get = with_legacy(&get);
        let mut out = Vec::new();
        for kind in DamKind::ALL {
            let prefix = env_prefix(kind);
            let set = match kind {
                DamKind::Generic => settings::any_set::<GenericDam>(prefix, &get),
                DamKind::Cloudinary => settings::any_set::<CloudinaryDam>(prefix, &get),
                DamKind::Bynder => settings::any_set::<BynderDam>(prefix, &get),
            };
            if set {
                out.push(Self::read(kind, &get)?);
            }
        }
        Ok(out)
    }

    /// `get` already falls back to the legacy names.
    fn read(kind: DamKind, get: &dyn Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let prefix = env_prefix(kind);
        Ok(match kind {
            DamKind::Generic => DamSettings::Generic(settings::from_lookup(prefix, get)?),
            DamKind::Cloudinary => DamSettings::Cloudinary(settings::from_lookup(prefix, get)?),
            DamKind::Bynder => DamSettings::Bynder(settings::from_lookup(prefix, get)?),
        })
    }

    /// Whether the API keys are there (the consumer re-reads and the poller lists through them).
    pub fn has_api(&self) -> bool {
        match self {
            DamSettings::Generic(g) => g.api_url.is_some(),
            DamSettings::Cloudinary(c) => c.cloud_name.is_some(),
            DamSettings::Bynder(b) => b.portal_url.is_some(),
        }
    }

    /// The DAM's API client. Errors name keys by field (`api_token`): the caller renames them
    /// with [`SettingError::at`] for its front.
    pub fn source(&self) -> Result<Arc<dyn AssetSource>, SettingError> {
        // Every missing key at once, not one per run.
        let mut problems = settings::Problems::default();
        let built = match self {
            DamSettings::Generic(g) => {
                let url = problems
                    .take(required("api_url", &g.api_url, "the DAM's contract base"))
                    .and_then(|raw| problems.take(url("api_url", raw)));
                let token = problems.take(Secret::require(
                    &g.api_token,
                    "api_token",
                    "the DAM's bearer token",
                ));
                let (Some(url), Some(token)) = (url, token) else {
                    return Err(incomplete(problems));
                };
                GenericApi::new(GenericApiSettings::new(url, token))
                    .map(|a| Arc::new(a) as Arc<dyn AssetSource>)
            }
            DamSettings::Cloudinary(c) => {
                let hint = "copy it from the Cloudinary console (Settings > API Keys)";
                let cloud = problems.take(required("cloud_name", &c.cloud_name, hint));
                let key = problems.take(required("api_key", &c.api_key, hint));
                let secret = problems.take(Secret::require(&c.api_secret, "api_secret", hint));
                let base = c
                    .api_base
                    .as_ref()
                    .and_then(|b| problems.take(url("api_base", b)));
                let (Some(cloud), Some(key), Some(secret), true) =
                    (cloud, key, secret, problems.is_empty())
                else {
                    return Err(incomplete(problems));
                };
                let mut api = CloudinaryApiSettings::new(cloud.to_owned(), key.to_owned(), secret);
                if let Some(base) = base {
                    api.api_base = base;
                }
                api.min_remaining = c.poll_reserve.unwrap_or(DEFAULT_CLOUDINARY_POLL_RESERVE);
                CloudinaryApi::new(api).map(|a| Arc::new(a) as Arc<dyn AssetSource>)
            }
            DamSettings::Bynder(b) => {
                let hint = "the portal address and a permanent token (Settings > Permanent tokens)";
                let url = problems
                    .take(required("portal_url", &b.portal_url, hint))
                    .and_then(|raw| problems.take(url("portal_url", raw)));
                let token = problems.take(Secret::require(&b.token, "token", hint));
                let (Some(url), Some(token)) = (url, token) else {
                    return Err(incomplete(problems));
                };
                BynderApi::new(BynderApiSettings::new(url, token))
                    .map(|a| Arc::new(a) as Arc<dyn AssetSource>)
            }
        };
        built.map_err(|e| SettingError::Other(format!("{} client: {e}", self.kind())))
    }

    /// The webhook settings of a generic DAM, when its secrets are set.
    pub fn generic_webhook(&self) -> Result<Option<GenericSettings>, SettingError> {
        let DamSettings::Generic(g) = self else {
            return Ok(None);
        };
        if g.webhook_secrets.is_empty() {
            return Ok(None);
        }
        let secrets = g
            .webhook_secrets
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let hint = "copy the signing secret the DAM shows (whsec_...)";
                let secret = Secret::require(&Some(s.clone()), "webhook_secrets", hint)?;
                SigningSecret::parse(secret.expose_secret()).map_err(|reason| {
                    // The value is a secret: only its position is shown.
                    SettingError::invalid(
                        "webhook_secrets",
                        format!("entry {} of {}, hidden", i + 1, g.webhook_secrets.len()),
                        format!(
                            "{reason}; expected a Standard Webhooks secret, whsec_ followed by \
                             base64 (e.g. whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw), as the DAM \
                             shows it"
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut s = GenericSettings::new(secrets);
        if let Some(secs) = g.tolerance_secs {
            s.tolerance = Duration::from_secs(secs);
        }
        Ok(Some(s))
    }

    /// The notification settings of Cloudinary, when its API secret is set.
    pub fn cloudinary_webhook(&self) -> Result<Option<CloudinarySettings>, SettingError> {
        let DamSettings::Cloudinary(c) = self else {
            return Ok(None);
        };
        if c.api_secret.is_none() {
            return Ok(None);
        }
        let secret = Secret::require(&c.api_secret, "api_secret", "the Cloudinary API secret")?;
        let mut s = CloudinarySettings::new(secret);
        if let Some(alg) = &c.signature_algorithm {
            s.algorithm = alg
                .parse::<SignatureAlgorithm>()
                .map_err(|reason| SettingError::invalid("signature_algorithm", alg, reason))?;
        }
        if let Some(secs) = c.max_age_secs {
            s.max_age = Duration::from_secs(secs);
        }
        Ok(Some(s))
    }

    /// The SNS settings of Bynder, when its topics are set.
    pub fn bynder_webhook(&self) -> Result<Option<SnsSettings>, SettingError> {
        let DamSettings::Bynder(b) = self else {
            return Ok(None);
        };
        if b.topic_arns.is_empty() {
            return Ok(None);
        }
        let mut s = SnsSettings::new(b.topic_arns.clone());
        if let Some(secs) = b.sns_max_age_secs {
            s.max_age = Duration::from_secs(secs);
        }
        s.cert_sources = b
            .sns_cert_hosts
            .iter()
            .map(|raw| {
                raw.parse::<CertSource>()
                    .map_err(|reason| SettingError::invalid("sns_cert_hosts", raw, reason))
            })
            .collect::<Result<_, _>>()?;
        Ok(Some(s))
    }
}

/// The collected problems of settings found incomplete.
fn incomplete(problems: settings::Problems) -> SettingError {
    problems
        .finish()
        .err()
        .unwrap_or_else(|| SettingError::Other("the DAM settings are incomplete".into()))
}

/// `get`, falling back to the names of earlier releases.
fn with_legacy(get: &dyn Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> + '_ {
    move |name: &str| get(name).or_else(|| legacy(name).and_then(get))
}

fn url(key: &str, raw: &str) -> Result<Url, SettingError> {
    Url::parse(raw.trim()).map_err(|e| {
        SettingError::invalid(
            key,
            raw,
            format!("{e}; expected an absolute URL (https://...)"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dam::bynder::sns::check_sns_url;
    use crate::settings::tests::vars;

    #[test]
    fn a_bad_webhook_secret_names_its_key_and_the_expected_form() {
        let table: DamSettings = toml::from_str(
            "kind = 'generic'\nwebhook_secrets = ['whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'not base64!']",
        )
        .unwrap();
        let e = table.generic_webhook().unwrap_err().at(Origin::File("dam"));
        let text = e.to_string();
        assert!(
            text.starts_with("[dam] webhook_secrets has an invalid value \"entry 2 of 2, hidden\""),
            "{text}"
        );
        assert!(text.contains("whsec_ followed by base64"), "{text}");
        assert!(
            !text.contains("not base64!"),
            "the secret is not echoed: {text}"
        );
        let env = DamSettings::from_lookup(vars(&[("GENERIC_WEBHOOK_SECRETS", "nope!")])).unwrap();
        let e = env.generic_webhook().unwrap_err().at(env.env_origin());
        assert!(
            e.to_string()
                .starts_with("GENERIC_WEBHOOK_SECRETS has an invalid value"),
            "{e}"
        );
    }

    #[test]
    fn every_missing_api_key_is_named_at_once() {
        let table: DamSettings = toml::from_str("kind = 'cloudinary'").unwrap();
        let text = match table.source() {
            Ok(_) => panic!("built a client without its keys"),
            Err(e) => e.at(Origin::File("dam")).to_string(),
        };
        assert!(text.starts_with("3 settings need fixing:"), "{text}");
        for key in ["cloud_name", "api_key", "api_secret"] {
            assert!(text.contains(&format!("[dam] {key} is not set")), "{text}");
        }
    }

    #[test]
    fn the_file_table_and_the_variables_give_the_same_settings() {
        let table: DamSettings = toml::from_str(
            "kind = 'cloudinary'\ncloud_name = 'acme'\napi_key = 'k'\napi_secret = 's'\n\
             poll_reserve = 7\nsignature_algorithm = 'sha256'",
        )
        .unwrap();
        let env = DamSettings::from_lookup(vars(&[
            ("DAM_KIND", "cloudinary"),
            ("CLOUDINARY_CLOUD_NAME", "acme"),
            ("CLOUDINARY_API_KEY", "k"),
            ("CLOUDINARY_API_SECRET", "s"),
            ("CLOUDINARY_POLL_RESERVE", "7"),
            ("CLOUDINARY_SIGNATURE_ALGORITHM", "sha256"),
        ]))
        .unwrap();
        for s in [&table, &env] {
            let DamSettings::Cloudinary(c) = s else {
                panic!("{s:?}")
            };
            assert_eq!(c.poll_reserve, Some(7));
            assert_eq!(c.cloud_name.as_deref(), Some("acme"));
            assert!(s.source().is_ok());
            assert_eq!(
                s.cloudinary_webhook().unwrap().unwrap().algorithm,
                SignatureAlgorithm::Sha256
            );
        }
    }

    #[test]
    fn missing_keys_are_named_for_the_front_they_came_from() {
        let env = DamSettings::from_lookup(vars(&[("GENERIC_API_URL", "https://dam")])).unwrap();
        let e = env.source().err().unwrap().at(env.env_origin());
        assert_eq!(e.name(), Some("GENERIC_API_TOKEN"), "{e}");
        let file: DamSettings = toml::from_str("kind = 'generic'\napi_url = 'https://d'").unwrap();
        let e = file.source().err().unwrap().at(Origin::File("dam"));
        assert_eq!(e.name(), Some("[dam] api_token"), "{e}");
    }

    #[test]
    fn legacy_generic_names_are_still_read_by_every_reader() {
        let get = vars(&[
            ("GENERIC_DAM_URL", "https://dam"),
            ("GENERIC_DAM_TOKEN", "t"),
        ]);
        assert!(DamSettings::from_lookup(&get).unwrap().source().is_ok());
        let all = DamSettings::all_from_lookup(&get).unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].source().is_ok());
    }

    #[test]
    fn all_from_lookup_lists_each_dam_with_a_variable_set() {
        let all = DamSettings::all_from_lookup(vars(&[
            ("CLOUDINARY_API_SECRET", "s"),
            ("BYNDER_TOPIC_ARNS", "arn:a, arn:b"),
        ]))
        .unwrap();
        let kinds: Vec<DamKind> = all.iter().map(DamSettings::kind).collect();
        assert_eq!(kinds, [DamKind::Cloudinary, DamKind::Bynder]);
        assert!(!all[0].has_api());
        assert_eq!(
            all[1].bynder_webhook().unwrap().unwrap().topic_arns,
            ["arn:a", "arn:b"]
        );
    }

    #[test]
    fn sns_certificate_sources_read_the_same_from_both_fronts() {
        let table: DamSettings = toml::from_str(
            "kind = 'bynder'\ntopic_arns = ['arn:a']\n\
             sns_cert_hosts = ['http://127.0.0.1:8090/_sim/sns/', 'certs.example.com']",
        )
        .unwrap();
        let env = DamSettings::from_lookup(vars(&[
            ("DAM_KIND", "bynder"),
            ("BYNDER_TOPIC_ARNS", "arn:a"),
            (
                "BYNDER_SNS_CERT_HOSTS",
                "http://127.0.0.1:8090/_sim/sns/, certs.example.com",
            ),
        ]))
        .unwrap();
        for s in [&table, &env] {
            let sns = s.bynder_webhook().unwrap().unwrap();
            assert_eq!(sns.cert_sources.len(), 2, "{s:?}");
            assert!(
                check_sns_url("http://127.0.0.1:8090/_sim/sns/cert.pem", &sns.cert_sources).is_ok()
            );
        }
        // The default: SNS hosts only.
        let plain = DamSettings::from_lookup(vars(&[
            ("DAM_KIND", "bynder"),
            ("BYNDER_TOPIC_ARNS", "arn:a"),
        ]))
        .unwrap();
        let sns = plain.bynder_webhook().unwrap().unwrap();
        assert!(sns.cert_sources.is_empty());
        assert!(
            check_sns_url("http://127.0.0.1:8090/_sim/sns/cert.pem", &sns.cert_sources).is_err()
        );
        // A plain-http source off this machine is refused with its key named.
        let e = DamSettings::from_lookup(vars(&[
            ("DAM_KIND", "bynder"),
            ("BYNDER_TOPIC_ARNS", "arn:a"),
            ("BYNDER_SNS_CERT_HOSTS", "http://10.1.2.3/certs/"),
        ]))
        .unwrap()
        .bynder_webhook()
        .unwrap_err()
        .at(Origin::Env("BYNDER_"));
        assert_eq!(e.name(), Some("BYNDER_SNS_CERT_HOSTS"), "{e}");
        assert!(e.to_string().contains("loopback"), "{e}");
    }

    #[test]
    fn an_unknown_kind_or_key_is_refused_with_the_fix() {
        let e = DamSettings::from_lookup(vars(&[("DAM_KIND", "dropbox")])).unwrap_err();
        assert!(
            e.to_string().contains("generic, cloudinary or bynder"),
            "{e}"
        );
        let e = toml::from_str::<DamSettings>("kind = 'bynder'\nportal = 'x'").unwrap_err();
        assert!(e.to_string().contains("portal"), "{e}");
    }

    #[test]
    fn a_bad_webhook_secret_names_its_key_without_showing_it() {
        let s: DamSettings =
            toml::from_str("kind = 'generic'\nwebhook_secrets = ['not-base64!']").unwrap();
        let e = s.generic_webhook().unwrap_err().at(Origin::File("dam"));
        assert_eq!(e.name(), Some("[dam] webhook_secrets"));
        assert!(!e.to_string().contains("not-base64"), "{e}");
    }
}
