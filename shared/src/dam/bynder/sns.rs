//! Amazon SNS HTTP(S) deliveries: the envelope, its signature and the signing certificate.
//!
//! Follows AWS's "Verifying the signatures of Amazon SNS messages": the string to sign is
//! built from a fixed, per-type list of fields (each `Key\nValue\n`), SignatureVersion 1 is
//! SHA1withRSA and 2 is SHA256withRSA, and the X.509 certificate must come over HTTPS from an
//! SNS host (`sns.<region>.amazonaws.com[.cn]`), never from wherever the message points.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier;
use serde::Deserialize;
use sha1::Sha1;
use sha2::Sha256;
use url::Url;
use x509_cert::Certificate;
use x509_cert::der::{DecodePem, Encode};

pub use super::{CertificateFetcher, SubscriptionConfirmer};
use crate::dam::WebhookError;
use crate::dam::verify::check_window;
use crate::time::parse_rfc3339_ms;

#[derive(Debug, Clone)]
pub struct SnsSettings {
    /// Topics we accept messages (and subscription confirmations) from.
    pub topic_arns: Vec<String>,
    /// Oldest accepted signed `Timestamp`. SNS retries carry the original publish time and
    /// its HTTP delivery policy gives up after 1 h, so anything shorter drops retries.
    pub max_age: Duration,
    /// How far ahead of our clock a `Timestamp` may be.
    pub max_future_skew: Duration,
    /// Where certificates and subscribe URLs may come from besides AWS's own SNS hosts (a
    /// private test bed serving its own certificate). Empty by default: SNS hosts only.
    pub cert_sources: Vec<CertSource>,
}

impl SnsSettings {
    pub fn new(topic_arns: Vec<String>) -> Self {
        Self {
            topic_arns,
            max_age: Duration::from_secs(3600),
            max_future_skew: Duration::from_secs(5 * 60),
            cert_sources: Vec::new(),
        }
    }
}

/// One extra place signing certificates may come from: a host (`certs.example.com`, any
/// port, or `host:port`), served over https, or a URL prefix (`https://certs.example.com/sns/`,
/// `http://127.0.0.1:8090/_sim/sns/`). Plain http is only ever accepted on a loopback address,
/// where nobody between us and the server can swap the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    Host { host: String, port: Option<u16> },
    Prefix(Url),
}

impl std::str::FromStr for CertSource {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let raw = raw.trim();
        let bad = |why: &str| format!("certificate source {raw:?} {why}");
        if raw.contains("://") {
            let url = Url::parse(raw).map_err(|e| bad(&format!("is not a URL: {e}")))?;
            if !url.username().is_empty() || url.password().is_some() {
                return Err(bad("carries credentials"));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(bad("has a query or fragment; give a host or a path prefix"));
            }
            match url.scheme() {
                "https" => {}
                "http" if is_loopback(&url) => {}
                "http" => {
                    return Err(bad(
                        "is plain http on a non-loopback host; use https (http is accepted                          only on 127.0.0.0/8 and ::1)",
                    ));
                }
                _ => return Err(bad("is not https")),
            }
            if url.host_str().is_none() {
                return Err(bad("has no host"));
            }
            return Ok(CertSource::Prefix(url));
        }
        let url = Url::parse(&format!("https://{raw}/"))
            .ok()
            .filter(|u| u.path() == "/" && u.username().is_empty() && u.password().is_none())
            .ok_or_else(|| bad("is neither a host[:port] nor an https:// URL prefix"))?;
        let host = url.host_str().ok_or_else(|| bad("has no host"))?.to_owned();
        Ok(CertSource::Host {
            host,
            port: url.port(),
        })
    }
}

impl CertSource {
    fn allows(&self, url: &Url) -> bool {
        match self {
            CertSource::Host { host, port } => {
                url.scheme() == "https"
                    && url.host_str() == Some(host.as_str())
                    && port.is_none_or(|p| url.port_or_known_default() == Some(p))
            }
            CertSource::Prefix(prefix) => {
                let (p, u) = (prefix.as_str(), url.as_str());
                // A prefix ends at a path boundary: `/sns` allows `/sns/c.pem`, not `/snsx`.
                url.scheme() == prefix.scheme()
                    && url.host() == prefix.host()
                    && url.port_or_known_default() == prefix.port_or_known_default()
                    && u.starts_with(p)
                    && (p.ends_with('/') || matches!(u[p.len()..].chars().next(), None | Some('/')))
            }
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// The JSON body SNS posts to an HTTP(S) subscriber.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct SnsEnvelope {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "MessageId")]
    pub message_id: String,
    #[serde(rename = "TopicArn")]
    pub topic_arn: String,
    #[serde(rename = "Subject", default)]
    pub subject: Option<String>,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "Timestamp")]
    pub timestamp: String,
    #[serde(rename = "SignatureVersion")]
    pub signature_version: String,
    #[serde(rename = "Signature")]
    pub signature: String,
    #[serde(rename = "SigningCertURL")]
    pub signing_cert_url: String,
    #[serde(rename = "SubscribeURL", default)]
    pub subscribe_url: Option<String>,
    #[serde(rename = "Token", default)]
    pub token: Option<String>,
}

pub const NOTIFICATION: &str = "Notification";
pub const SUBSCRIPTION_CONFIRMATION: &str = "SubscriptionConfirmation";
pub const UNSUBSCRIBE_CONFIRMATION: &str = "UnsubscribeConfirmation";

/// The exact string SNS signs for this message.
pub fn string_to_sign(envelope: &SnsEnvelope) -> Result<String, WebhookError> {
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(7);
    match envelope.kind.as_str() {
        NOTIFICATION => {
            fields.push(("Message", &envelope.message));
            fields.push(("MessageId", &envelope.message_id));
            if let Some(subject) = &envelope.subject {
                fields.push(("Subject", subject));
            }
            fields.push(("Timestamp", &envelope.timestamp));
            fields.push(("TopicArn", &envelope.topic_arn));
            fields.push(("Type", &envelope.kind));
        }
        SUBSCRIPTION_CONFIRMATION | UNSUBSCRIBE_CONFIRMATION => {
            let missing =
                || WebhookError::Unauthorized("confirmation without SubscribeURL/Token".into());
            fields.push(("Message", &envelope.message));
            fields.push(("MessageId", &envelope.message_id));
            fields.push((
                "SubscribeURL",
                envelope.subscribe_url.as_deref().ok_or_else(missing)?,
            ));
            fields.push(("Timestamp", &envelope.timestamp));
            fields.push(("Token", envelope.token.as_deref().ok_or_else(missing)?));
            fields.push(("TopicArn", &envelope.topic_arn));
            fields.push(("Type", &envelope.kind));
        }
        other => {
            return Err(WebhookError::Unauthorized(format!(
                "unknown SNS message type {other:?}"
            )));
        }
    }
    let mut out = String::with_capacity(512);
    for (key, value) in fields {
        out.push_str(key);
        out.push('\n');
        out.push_str(value);
        out.push('\n');
    }
    Ok(out)
}

/// Accepts `https://sns.<region>.amazonaws.com[.cn]/...` (no credentials, no port), or a URL
/// one of `extra` allows (https, or http on a loopback address): anything else lets a forger
/// point us at a certificate of their own.
pub fn check_sns_url(raw: &str, extra: &[CertSource]) -> Result<Url, WebhookError> {
    let url = Url::parse(raw)
        .map_err(|_| WebhookError::Unauthorized(format!("unparseable SNS URL {raw:?}")))?;
    let reject = |why: &str| WebhookError::Unauthorized(format!("SNS URL {raw:?} {why}"));
    if !url.username().is_empty() || url.password().is_some() {
        return Err(reject("carries credentials"));
    }
    match url.scheme() {
        "https" => {}
        // Whatever the settings say: plain http off this machine can be tampered with.
        "http" if is_loopback(&url) => {}
        _ => return Err(reject("is not https")),
    }
    let host = url.host_str().ok_or_else(|| reject("has no host"))?;
    let on_sns = url.scheme() == "https" && url.port().is_none() && is_sns_host(host);
    if on_sns || extra.iter().any(|source| source.allows(&url)) {
        return Ok(url);
    }
    Err(reject(
        "is not on an SNS host nor an allowed certificate source (sns_cert_hosts)",
    ))
}

fn is_sns_host(host: &str) -> bool {
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    matches!(region, Some(r) if !r.is_empty()
        && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
}

/// Both SNS calls over reqwest. Redirects are not followed: a redirect could leave the SNS host.
#[derive(Debug, Clone)]
pub struct ReqwestSnsClient {
    client: reqwest::Client,
}

impl ReqwestSnsClient {
    pub fn new() -> Result<Self, reqwest::Error> {
        let client = crate::https::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self { client })
    }

    async fn get(&self, url: &Url) -> Result<reqwest::Response, String> {
        let response = self
            .client
            .get(url.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        Ok(response)
    }
}

#[async_trait]
impl CertificateFetcher for ReqwestSnsClient {
    async fn fetch_certificate(&self, url: &Url) -> Result<Vec<u8>, String> {
        let response = self.get(url).await?;
        // Real certificates are ~2 KB; refuse to buffer anything large.
        if response.content_length().is_some_and(|len| len > 64 * 1024) {
            return Err(format!("{url} serves an oversized certificate"));
        }
        let bytes = response.bytes().await.map_err(|e| e.to_string())?;
        Ok(bytes.to_vec())
    }
}

#[async_trait]
impl SubscriptionConfirmer for ReqwestSnsClient {
    async fn confirm_subscription(&self, url: &Url) -> Result<(), String> {
        self.get(url).await.map(drop)
    }
}

/// The certificate's key, ready for both signature versions (built once per certificate).
struct SnsKeys {
    v1: VerifyingKey<Sha1>,
    v2: VerifyingKey<Sha256>,
}

#[derive(Clone)]
struct CachedKey {
    keys: Arc<SnsKeys>,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// Most SNS regions use one certificate each; a handful of entries covers rotation.
const CERT_CACHE_CAPACITY: usize = 32;

/// Verifies SNS envelopes; certificates are fetched once per URL and cached.
pub struct SnsVerifier {
    settings: SnsSettings,
    fetcher: Arc<dyn CertificateFetcher>,
    cache: Mutex<HashMap<String, CachedKey>>,
}

impl SnsVerifier {
    pub fn new(settings: SnsSettings, fetcher: Arc<dyn CertificateFetcher>) -> Self {
        Self {
            settings,
            fetcher,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn settings(&self) -> &SnsSettings {
        &self.settings
    }

    /// Parses and authenticates one delivery: signature, certificate origin, topic, age.
    pub async fn verify(&self, body: &[u8], now: SystemTime) -> Result<SnsEnvelope, WebhookError> {
        // Unparseable means unauthenticated: nothing in it can be trusted yet.
        let envelope: SnsEnvelope = serde_json::from_slice(body)
            .map_err(|e| WebhookError::Unauthorized(format!("not an SNS envelope: {e}")))?;
        let to_sign = string_to_sign(&envelope)?;
        let cert_url = check_sns_url(&envelope.signing_cert_url, &self.settings.cert_sources)?;
        if !self.settings.topic_arns.contains(&envelope.topic_arn) {
            return Err(WebhookError::Unauthorized(format!(
                "topic {} is not allowed",
                envelope.topic_arn
            )));
        }
        let signature = STANDARD
            .decode(envelope.signature.trim())
            .ok()
            .and_then(|raw| Signature::try_from(raw.as_slice()).ok())
            .ok_or_else(|| WebhookError::Unauthorized("Signature is not base64".into()))?;
        // Unknown versions are refused before anything is downloaded.
        let sha256 = match envelope.signature_version.as_str() {
            "1" => false,
            "2" => true,
            other => {
                return Err(WebhookError::Unauthorized(format!(
                    "unsupported SignatureVersion {other:?}"
                )));
            }
        };
        let keys = self.public_key(&cert_url, now).await?;
        let valid = if sha256 {
            keys.v2.verify(to_sign.as_bytes(), &signature)
        } else {
            keys.v1.verify(to_sign.as_bytes(), &signature)
        };
        valid.map_err(|_| WebhookError::Unauthorized("SNS signature mismatch".into()))?;
        let signed_at_ms = parse_rfc3339_ms(&envelope.timestamp)
            .ok_or_else(|| WebhookError::Unauthorized("Timestamp is not ISO 8601".into()))?;
        check_window(
            signed_at_ms,
            now,
            self.settings.max_age,
            self.settings.max_future_skew,
        )?;
        Ok(envelope)
    }

    async fn public_key(&self, url: &Url, now: SystemTime) -> Result<Arc<SnsKeys>, WebhookError> {
        let cached = self
            .cache
            .lock()
            .expect("cert cache lock")
            .get(url.as_str())
            .cloned();
        let entry = match cached {
            Some(entry) => entry,
            None => {
                let pem =
                    self.fetcher.fetch_certificate(url).await.map_err(|e| {
                        WebhookError::Unavailable(format!("certificate download: {e}"))
                    })?;
                let entry = parse_certificate(&pem)?;
                let mut cache = self.cache.lock().expect("cert cache lock");
                if cache.len() >= CERT_CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(url.as_str().to_owned(), entry.clone());
                entry
            }
        };
        if now < entry.not_before || now > entry.not_after {
            return Err(WebhookError::Unauthorized(
                "signing certificate is not valid now".into(),
            ));
        }
        Ok(entry.keys)
    }
}

fn parse_certificate(pem: &[u8]) -> Result<CachedKey, WebhookError> {
    // The URL was on an SNS host, so junk there is an outage on their side, not a forgery.
    let bad = |why: String| WebhookError::Unavailable(format!("signing certificate: {why}"));
    let cert = Certificate::from_pem(pem).map_err(|e| bad(e.to_string()))?;
    let tbs = &cert.tbs_certificate;
    let spki = tbs
        .subject_public_key_info
        .to_der()
        .map_err(|e| bad(e.to_string()))?;
    let key = RsaPublicKey::from_public_key_der(&spki).map_err(|e| bad(e.to_string()))?;
    Ok(CachedKey {
        keys: Arc::new(SnsKeys {
            v1: VerifyingKey::new(key.clone()),
            v2: VerifyingKey::new(key),
        }),
        not_before: tbs.validity.not_before.to_system_time(),
        not_after: tbs.validity.not_after.to_system_time(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sns_hosts() {
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        ] {
            assert!(check_sns_url(ok, &[]).is_ok(), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/cert.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com@evil.com/cert.pem",
            "https://user@sns.us-east-1.amazonaws.com/cert.pem",
            "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
            "https://sns.evil.com.us-east-1.amazonaws.com/cert.pem",
            "https://sns..amazonaws.com/cert.pem",
            "https://s3.amazonaws.com/cert.pem",
            "https://xsns.us-east-1.amazonaws.com/cert.pem",
            "http://127.0.0.1/cert.pem",
            "http://127.0.0.1:9/cert.pem",
            "https://127.0.0.1/cert.pem",
            "https://certs.example.com/cert.pem",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(check_sns_url(bad, &[]).is_err(), "{bad}");
        }
    }

    fn sources(list: &[&str]) -> Vec<CertSource> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn listed_sources_are_allowed_and_plain_http_only_on_loopback() {
        let extra = sources(&[
            "http://127.0.0.1:8090/_sim/sns/",
            "http://[::1]:9000",
            "certs.example.com",
            "https://other.example.com/sns",
            "pinned.example.com:8443",
        ]);
        for ok in [
            "http://127.0.0.1:8090/_sim/sns/cert.pem",
            "http://[::1]:9000/cert.pem",
            "https://certs.example.com/cert.pem",
            "https://certs.example.com:444/cert.pem",
            "https://other.example.com/sns/cert.pem",
            "https://pinned.example.com:8443/c.pem",
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        ] {
            assert!(check_sns_url(ok, &extra).is_ok(), "{ok}");
        }
        for bad in [
            // Another path, port or scheme than the one listed.
            "http://127.0.0.1:8090/other/cert.pem",
            "http://127.0.0.1:8091/_sim/sns/cert.pem",
            "https://other.example.com/snsx/cert.pem",
            "https://pinned.example.com/c.pem",
            // A listed host, but over plain http off this machine.
            "http://certs.example.com/cert.pem",
            "http://user@127.0.0.1:8090/_sim/sns/cert.pem",
        ] {
            assert!(check_sns_url(bad, &extra).is_err(), "{bad}");
        }
        // Even if a non-loopback http source got into the list, it is refused.
        let sneaked = [CertSource::Prefix(Url::parse("http://10.0.0.5/").unwrap())];
        assert!(check_sns_url("http://10.0.0.5/cert.pem", &sneaked).is_err());
        let sneaked = [CertSource::Host {
            host: "10.0.0.5".into(),
            port: None,
        }];
        assert!(check_sns_url("http://10.0.0.5/cert.pem", &sneaked).is_err());
    }

    #[test]
    fn sources_parse_with_clear_errors() {
        assert_eq!(
            "certs.example.com:8443".parse::<CertSource>().unwrap(),
            CertSource::Host {
                host: "certs.example.com".into(),
                port: Some(8443)
            }
        );
        for bad in [
            "http://10.0.0.5/certs/",
            "http://certs.example.com/",
            "ftp://127.0.0.1/",
            "https://u:p@certs.example.com/",
            "https://certs.example.com/?x=1",
            "certs.example.com/path",
            "",
        ] {
            let e = bad.parse::<CertSource>().unwrap_err();
            assert!(e.contains("certificate source"), "{bad}: {e}");
        }
        let e = "http://10.0.0.5/".parse::<CertSource>().unwrap_err();
        assert!(e.contains("loopback"), "{e}");
    }

    fn envelope(kind: &str) -> SnsEnvelope {
        SnsEnvelope {
            kind: kind.into(),
            message_id: "id".into(),
            topic_arn: "arn".into(),
            subject: Some("subj".into()),
            message: "msg".into(),
            timestamp: "ts".into(),
            signature_version: "1".into(),
            signature: String::new(),
            signing_cert_url: String::new(),
            subscribe_url: Some("https://sub".into()),
            token: Some("tok".into()),
        }
    }

    #[test]
    fn canonical_strings_follow_aws_field_lists() {
        assert_eq!(
            string_to_sign(&envelope(NOTIFICATION)).unwrap(),
            "Message\nmsg\nMessageId\nid\nSubject\nsubj\nTimestamp\nts\nTopicArn\narn\nType\nNotification\n"
        );
        let mut no_subject = envelope(NOTIFICATION);
        no_subject.subject = None;
        assert_eq!(
            string_to_sign(&no_subject).unwrap(),
            "Message\nmsg\nMessageId\nid\nTimestamp\nts\nTopicArn\narn\nType\nNotification\n"
        );
        assert_eq!(
            string_to_sign(&envelope(SUBSCRIPTION_CONFIRMATION)).unwrap(),
            "Message\nmsg\nMessageId\nid\nSubscribeURL\nhttps://sub\nTimestamp\nts\nToken\ntok\n\
             TopicArn\narn\nType\nSubscriptionConfirmation\n"
        );
        let mut no_token = envelope(UNSUBSCRIBE_CONFIRMATION);
        no_token.token = None;
        assert!(string_to_sign(&no_token).is_err());
        assert!(string_to_sign(&envelope("Other")).is_err());
    }

    mod signed {
        use std::str::FromStr;
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use rsa::RsaPrivateKey;
        use rsa::pkcs1v15::SigningKey;
        use rsa::signature::{SignatureEncoding, Signer};
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::der::EncodePem;
        use x509_cert::der::pem::LineEnding;
        use x509_cert::name::Name;
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        use x509_cert::time::{Time, Validity};

        use super::super::*;
        use super::envelope;

        const CERT: &str = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-t.pem";
        const DAY: Duration = Duration::from_secs(86_400);

        fn key() -> &'static RsaPrivateKey {
            static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
            KEY.get_or_init(|| RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap())
        }

        fn cert(not_before: SystemTime, not_after: SystemTime) -> Vec<u8> {
            let signer = SigningKey::<Sha256>::new(key().clone());
            let spki = SubjectPublicKeyInfoOwned::from_key(key().to_public_key()).unwrap();
            let validity = Validity {
                not_before: Time::try_from(not_before).unwrap(),
                not_after: Time::try_from(not_after).unwrap(),
            };
            let builder = CertificateBuilder::new(
                Profile::Root,
                SerialNumber::from(7u32),
                validity,
                Name::from_str("CN=sns.amazonaws.com").unwrap(),
                spki,
                &signer,
            )
            .unwrap();
            let cert = builder.build::<rsa::pkcs1v15::Signature>().unwrap();
            cert.to_pem(LineEnding::LF).unwrap().into_bytes()
        }

        struct Served {
            pem: Result<Vec<u8>, String>,
            calls: AtomicUsize,
        }

        #[async_trait]
        impl CertificateFetcher for Served {
            async fn fetch_certificate(&self, _url: &Url) -> Result<Vec<u8>, String> {
                self.calls.fetch_add(1, Ordering::SeqCst);
                self.pem.clone()
            }
        }

        fn verifier(pem: Result<Vec<u8>, String>) -> (SnsVerifier, Arc<Served>) {
            let served = Arc::new(Served {
                pem,
                calls: AtomicUsize::new(0),
            });
            let settings = SnsSettings::new(vec!["arn".into()]);
            (SnsVerifier::new(settings, served.clone()), served)
        }

        fn signed(version: &str, now: SystemTime) -> Vec<u8> {
            let mut env = envelope(NOTIFICATION);
            env.timestamp = time::OffsetDateTime::from(now)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            env.signing_cert_url = CERT.into();
            env.signature_version = version.into();
            let to_sign = string_to_sign(&env).unwrap();
            let sig = match version {
                "1" => SigningKey::<Sha1>::new(key().clone())
                    .sign(to_sign.as_bytes())
                    .to_vec(),
                _ => SigningKey::<Sha256>::new(key().clone())
                    .sign(to_sign.as_bytes())
                    .to_vec(),
            };
            serde_json::json!({
                "Type": env.kind, "MessageId": env.message_id, "TopicArn": env.topic_arn,
                "Subject": env.subject, "Message": env.message, "Timestamp": env.timestamp,
                "SignatureVersion": env.signature_version, "Signature": STANDARD.encode(sig),
                "SigningCertURL": env.signing_cert_url,
            })
            .to_string()
            .into_bytes()
        }

        #[tokio::test]
        async fn both_versions_verify_and_the_certificate_is_fetched_once() {
            let now = SystemTime::now();
            let (v, served) = verifier(Ok(cert(now - DAY, now + DAY)));
            for version in ["1", "2", "1"] {
                let env = v.verify(&signed(version, now), now).await.unwrap();
                assert_eq!(env.message_id, "id");
            }
            assert_eq!(served.calls.load(Ordering::SeqCst), 1);
        }

        #[tokio::test]
        async fn expired_or_not_yet_valid_certificates_are_refused() {
            let now = SystemTime::now();
            for (from, until) in [(now - 2 * DAY, now - DAY), (now + DAY, now + 2 * DAY)] {
                let (v, _) = verifier(Ok(cert(from, until)));
                let result = v.verify(&signed("2", now), now).await;
                assert!(
                    matches!(result, Err(WebhookError::Unauthorized(_))),
                    "{result:?}"
                );
            }
        }

        #[tokio::test]
        async fn unusable_certificate_sources_are_unavailable_not_unauthorized() {
            let now = SystemTime::now();
            for pem in [Err("timeout".to_owned()), Ok(b"<html>oops</html>".to_vec())] {
                let (v, _) = verifier(pem);
                let result = v.verify(&signed("2", now), now).await;
                assert!(
                    matches!(result, Err(WebhookError::Unavailable(_))),
                    "{result:?}"
                );
            }
        }

        #[tokio::test]
        async fn window_is_checked_after_the_signature() {
            let now = SystemTime::now();
            let (v, _) = verifier(Ok(cert(now - 3 * DAY, now + DAY)));
            let old = now - Duration::from_secs(3601);
            assert!(matches!(
                v.verify(&signed("2", old), now).await,
                Err(WebhookError::Unauthorized(_))
            ));
            assert!(
                v.verify(&signed("2", now - Duration::from_secs(3599)), now)
                    .await
                    .is_ok()
            );
        }
    }
}
