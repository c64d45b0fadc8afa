//! The SNS signing identity: an RSA key and a self-signed X.509 certificate, served at
//! `/_sim/sns/cert.pem` as the `SigningCertURL` of every envelope.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::RsaPrivateKey;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use sha1::Sha1;
use sha2::Sha256;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::EncodePem;
use x509_cert::der::pem::LineEnding;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

#[derive(Clone)]
pub(crate) struct SnsIdentity {
    key: RsaPrivateKey,
    pub cert_pem: String,
}

impl std::fmt::Debug for SnsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnsIdentity").finish_non_exhaustive()
    }
}

static IDENTITY: OnceLock<Result<SnsIdentity, String>> = OnceLock::new();

impl SnsIdentity {
    /// One key per process: 2048-bit RSA generation is the slowest part of a sim start, and
    /// every sim of a test binary can share it.
    pub fn shared() -> std::io::Result<SnsIdentity> {
        IDENTITY
            .get_or_init(Self::generate)
            .clone()
            .map_err(std::io::Error::other)
    }

    fn generate() -> Result<SnsIdentity, String> {
        let mut rng = rsa::rand_core::OsRng;
        let key = RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
        let signer = SigningKey::<Sha256>::new(key.clone());
        let spki =
            SubjectPublicKeyInfoOwned::from_key(key.to_public_key()).map_err(|e| e.to_string())?;
        let subject = Name::from_str("CN=sns.dam-sim.test,O=dam-sim").map_err(|e| e.to_string())?;
        let validity =
            Validity::from_now(Duration::from_secs(365 * 24 * 3600)).map_err(|e| e.to_string())?;
        let builder = CertificateBuilder::new(
            Profile::Root,
            SerialNumber::from(1u32),
            validity,
            subject,
            spki,
            &signer,
        )
        .map_err(|e| e.to_string())?;
        let cert = builder
            .build::<rsa::pkcs1v15::Signature>()
            .map_err(|e| e.to_string())?;
        let cert_pem = cert.to_pem(LineEnding::LF).map_err(|e| e.to_string())?;
        Ok(SnsIdentity { key, cert_pem })
    }

    /// Base64 RSA PKCS#1 v1.5 signature: SHA1withRSA for SignatureVersion 1, SHA256withRSA
    /// for 2.
    pub fn sign(&self, signature_version: u8, canonical: &str) -> String {
        let sig = if signature_version == 2 {
            SigningKey::<Sha256>::new(self.key.clone())
                .sign(canonical.as_bytes())
                .to_vec()
        } else {
            SigningKey::<Sha1>::new(self.key.clone())
                .sign(canonical.as_bytes())
                .to_vec()
        };
        STANDARD.encode(sig)
    }
}

/// The SNS string to sign: "Key\nValue\n" for each present key, in SNS's fixed order.
pub fn canonical_string(fields: &[(&str, &str)]) -> String {
    let mut s = String::new();
    for (k, v) in fields {
        s.push_str(k);
        s.push('\n');
        s.push_str(v);
        s.push('\n');
    }
    s
}
