//! Errors of this crate.
//!
//! An [`ExecError`] may reach the agent, so it names the destination host and nothing else of
//! the request: a URL's path and query, headers and body can all carry an injected credential.

use std::error::Error as StdError;

use crate::guard::GuardError;

/// Why egress failed. Messages name the destination host only, never the URL, headers or body.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The destination is a forbidden address (or resolves to one) and is not allowed.
    #[error("destination `{host}` is not allowed: {reason}")]
    EgressDenied {
        /// The URL's host, as parsed (so `http://0x7f.1/` shows `127.0.0.1`).
        host: String,
        /// Why, e.g. `loopback` or `private`.
        reason: String,
    },
    /// The URL's scheme is neither `http` nor `https`.
    #[error("scheme `{0}` is not allowed: only http and https are")]
    UnsupportedScheme(String),
    /// The host name did not resolve to any address.
    #[error("could not resolve `{host}`")]
    Resolve {
        /// The host name.
        host: String,
    },
    /// The connection, the request or reading the response took longer than allowed.
    #[error("upstream timed out")]
    Timeout,
    /// No connection (TCP or TLS) could be established.
    #[error("could not connect to `{host}`")]
    Connect {
        /// The URL's host.
        host: String,
    },
    /// The response body is larger than the configured cap.
    #[error("response body exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// Any other transport error, described without the URL.
    #[error("upstream request failed: {0}")]
    Upstream(String),
    /// The HTTP client could not be built from the configuration.
    #[error("could not build the HTTP client: {0}")]
    Client(String),
    /// The SMTP server refused a step of the exchange, or answered something that is not SMTP.
    #[error(transparent)]
    Smtp(#[from] SmtpError),
    /// A redirect the action allows following could not be followed.
    #[error(transparent)]
    Redirect(#[from] RedirectError),
}

/// Why a redirect was not followed ([`ExecError::Redirect`]). Like every error here it names
/// hosts only: a `Location`'s path and query are the upstream's text and may carry anything,
/// the credential included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectError {
    /// The upstream redirected once more after the action's `request.redirects` hops.
    #[error("too many redirects: the action follows at most {max}, and `{host}` redirected again")]
    TooMany {
        /// The action's limit.
        max: u8,
        /// The host that sent the redirect not followed.
        host: String,
    },
    /// The `Location` is not text, not a URL, or not one relative to the current URL.
    #[error("`{host}` answered with a redirect whose Location is not a valid URL")]
    InvalidLocation {
        /// The host that sent the redirect.
        host: String,
    },
    /// The `Location` has a user name or password, which would be sent as credentials.
    #[error("`{host}` answered with a redirect to a URL with user info")]
    UserInfo {
        /// The host that sent the redirect.
        host: String,
    },
    /// The `Location` leads to another origin and carries the credential's value (an upstream
    /// copying the query string into a redirect, say, under another parameter name).
    #[error("redirect to `{host}` not followed: its Location carries the credential")]
    CarriesCredential {
        /// The host the redirect leads to.
        host: String,
    },
}

/// An SMTP exchange that failed at a step ([`ExecError::Smtp`]). The server's reply text is
/// third-party text: it goes to the log and the audit log only after the credential is scrubbed
/// from it, and never to the agent, which gets the step and the reply code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SMTP {stage} failed{}: {reply}", code.map(|c| format!(" with reply code {c}")).unwrap_or_default())]
pub struct SmtpError {
    /// The step: `greeting`, `ehlo`, `starttls`, `auth`, `mail from`, `rcpt to`, `data`.
    pub stage: &'static str,
    /// The server's reply code, if it sent one.
    pub code: Option<u16>,
    /// The server's reply text, or what was wrong with it.
    pub reply: String,
}

impl SmtpError {
    pub(crate) fn new(stage: &'static str, code: Option<u16>, reply: &str) -> Self {
        Self {
            stage,
            code,
            reply: reply.to_owned(),
        }
    }
}

/// Why a network in CIDR notation could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetParseError {
    /// The address part is not an IPv4 or IPv6 address in standard notation.
    #[error("`{0}` is not an IP address or CIDR network")]
    InvalidAddress(String),
    /// The prefix length is not a number between 0 and the address width.
    #[error("`{input}` has an invalid prefix length: expected 0 to {max}")]
    InvalidPrefix {
        /// The text as written.
        input: String,
        /// 32 for IPv4, 128 for IPv6.
        max: u8,
    },
    /// Bits after the prefix are set, which usually means a typo.
    #[error("`{input}` has host bits set: did you mean `{network}`?")]
    HostBitsSet {
        /// The text as written.
        input: String,
        /// The network with the host bits cleared.
        network: String,
    },
}

impl ExecError {
    /// Classifies a reqwest error for a request to `host`.
    ///
    /// Never displays the reqwest error itself: its text includes the full URL.
    pub(crate) fn from_reqwest(err: &reqwest::Error, host: &str) -> Self {
        if let Some(guard) = find_source::<GuardError>(err) {
            return guard.to_exec_error();
        }
        if err.is_timeout() {
            return Self::Timeout;
        }
        if err.is_connect() {
            if let Some(tls) = find_source::<rustls::Error>(err) {
                tracing::debug!(host, error = %tls, "TLS handshake failed");
            }
            return Self::Connect { host: host.to_owned() };
        }
        Self::Upstream(describe(err))
    }
}

/// A description of a transport error from fixed texts: what failed and, if an I/O error
/// caused it, its kind (e.g. `connection reset`).
fn describe(err: &reqwest::Error) -> String {
    let what = if err.is_body() {
        "error reading the response body"
    } else if err.is_decode() {
        "error decoding the response"
    } else if err.is_request() {
        "error sending the request"
    } else if err.is_builder() {
        "invalid request"
    } else {
        "transport error"
    };
    match find_source::<std::io::Error>(err) {
        Some(io) => format!("{what}: {}", io.kind()),
        None => what.to_owned(),
    }
}

/// The first error of type `T` in `err`'s source chain, `err` included.
pub(crate) fn find_source<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Box<dyn StdError + Send + Sync>);

    #[test]
    fn finds_a_guard_error_behind_a_boxed_source() {
        let inner = GuardError::Denied {
            host: "localhost".into(),
            reason: "loopback",
        };
        let outer = Outer(Box::new(inner));
        let found = find_source::<GuardError>(&outer).unwrap();
        assert_eq!(
            found.to_exec_error().to_string(),
            "destination `localhost` is not allowed: loopback"
        );
        assert!(find_source::<std::io::Error>(&outer).is_none());
    }

    #[test]
    fn messages_follow_the_style() {
        let cases = [
            (ExecError::Timeout, "upstream timed out"),
            (
                ExecError::Connect {
                    host: "api.example.com".into(),
                },
                "could not connect to `api.example.com`",
            ),
            (
                ExecError::Resolve {
                    host: "nx.example".into(),
                },
                "could not resolve `nx.example`",
            ),
            (
                ExecError::UnsupportedScheme("ftp".into()),
                "scheme `ftp` is not allowed: only http and https are",
            ),
            (
                ExecError::ResponseTooLarge { limit: 10 },
                "response body exceeds the limit of 10 bytes",
            ),
            (
                RedirectError::TooMany {
                    max: 2,
                    host: "api.example.com".into(),
                }
                .into(),
                "too many redirects: the action follows at most 2, and \
                 `api.example.com` redirected again",
            ),
            (
                RedirectError::InvalidLocation {
                    host: "api.example.com".into(),
                }
                .into(),
                "`api.example.com` answered with a redirect whose Location is not a valid URL",
            ),
            (
                RedirectError::UserInfo {
                    host: "api.example.com".into(),
                }
                .into(),
                "`api.example.com` answered with a redirect to a URL with user info",
            ),
            (
                RedirectError::CarriesCredential {
                    host: "cdn.example.net".into(),
                }
                .into(),
                "redirect to `cdn.example.net` not followed: its Location carries the credential",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(err.to_string(), text);
        }
    }
}
