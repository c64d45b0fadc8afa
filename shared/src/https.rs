//! One TLS stack for every HTTPS client of the process: rustls with the ring provider.
//!
//! The SDK's and reqwest's default provider, aws-lc-rs, compiles aws-lc from C source: the
//! longest step of a cold build on two cores, and about 1 MB of every Lambda zip. With ring,
//! reqwest needs a process-wide provider before its first client ([`client_builder`] installs
//! it) and the AWS SDK needs its HTTP client given ([`aws_config`]).

/// Makes ring the process's rustls provider. Idempotent; a provider installed earlier stays.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `reqwest::Client::builder()` with the TLS provider installed.
pub fn client_builder() -> reqwest::ClientBuilder {
    install_tls_provider();
    reqwest::Client::builder()
}

/// The SDK's HTTPS client on rustls with ring (the SDK's own default client, minus aws-lc),
/// for clients configured by hand (every SDK crate names the same smithy type).
pub fn aws_http_client() -> aws_sdk_dynamodb::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// `aws_config::defaults` on [`aws_http_client`]: every AWS client of the project is
/// configured from this.
pub fn aws_config_loader() -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(aws_http_client())
}

/// What `aws_config::load_from_env` gives, on [`aws_config_loader`]'s HTTPS client.
pub async fn aws_config_from_env() -> aws_config::SdkConfig {
    aws_config_loader().load().await
}
