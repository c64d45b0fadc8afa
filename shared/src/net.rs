//! Why a call never got an answer, in words an operator can act on: the cause class (DNS,
//! refused, TLS, timeout) instead of the HTTP stack's nested error chain, which stays available
//! as the error's source for `-v` and debug logs.

use std::error::Error;
use std::fmt;
use std::io::ErrorKind;

/// The class of a network failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens at the address (or a firewall rejects the connection).
    Refused,
    /// The TLS handshake failed: certificate, protocol, or plain HTTP on an https URL.
    Tls,
    /// No answer in time.
    Timeout,
    /// Reset, cut body, anything else: the innermost error's own words.
    Other(String),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Dns => f.write_str("DNS lookup failed (unknown host)"),
            Cause::Refused => f.write_str("connection refused (nothing listens there)"),
            Cause::Tls => {
                f.write_str("TLS handshake failed (certificate or https on a plain HTTP port)")
            }
            Cause::Timeout => f.write_str("timed out"),
            Cause::Other(why) => f.write_str(why),
        }
    }
}

/// Classifies `error` by walking its source chain.
pub fn cause(error: &(dyn Error + 'static)) -> Cause {
    let mut innermost = error.to_string();
    let mut current = Some(error);
    let mut texts = Vec::new();
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                ErrorKind::ConnectionRefused => return Cause::Refused,
                ErrorKind::TimedOut => return Cause::Timeout,
                _ => {}
            }
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && r.is_timeout()
        {
            return Cause::Timeout;
        }
        let text = e.to_string();
        innermost.clone_from(&text);
        texts.push(text.to_ascii_lowercase());
        current = e.source();
    }
    let any = |needles: &[&str]| texts.iter().any(|t| needles.iter().any(|n| t.contains(n)));
    if any(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
    ]) {
        Cause::Dns
    } else if any(&["connection refused"]) {
        Cause::Refused
    } else if any(&["timed out", "timeout"]) {
        Cause::Timeout
    } else if any(&["certificate", "tls", "handshake", "corrupt message"]) {
        Cause::Tls
    } else {
        Cause::Other(innermost)
    }
}

/// `error`'s whole chain, outermost first: the detail behind a short message.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(s) = source {
        let text = s.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrap(&'static str, Box<dyn Error + Send + Sync>);

    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.1.as_ref())
        }
    }

    #[test]
    fn the_source_chain_gives_the_cause_class() {
        let refused = Wrap(
            "client error (Connect)",
            Box::new(std::io::Error::from(ErrorKind::ConnectionRefused)),
        );
        assert_eq!(cause(&refused), Cause::Refused);
        let dns = Wrap(
            "client error (Connect)",
            Box::new(std::io::Error::other(
                "dns error: failed to lookup address information",
            )),
        );
        assert_eq!(cause(&dns), Cause::Dns);
        let tls = Wrap(
            "client error (Connect)",
            Box::new(std::io::Error::other(
                "invalid peer certificate: UnknownIssuer",
            )),
        );
        assert_eq!(cause(&tls), Cause::Tls);
        let other = Wrap("request failed", Box::new(std::io::Error::other("reset")));
        assert_eq!(cause(&other), Cause::Other("reset".into()));
        assert_eq!(chain(&other), "request failed: reset");
    }

    #[tokio::test]
    async fn a_real_unknown_host_and_a_closed_port_are_told_apart() {
        let client = crate::https::client_builder().build().unwrap();
        let dns = client
            .get("http://dam-sync-test.invalid/")
            .send()
            .await
            .unwrap_err();
        assert_eq!(cause(&dns), Cause::Dns, "{}", chain(&dns));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let refused = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(cause(&refused), Cause::Refused, "{}", chain(&refused));
    }
}
