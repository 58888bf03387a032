//! Guarded HTTP egress: the one client through which Portcullis calls upstream APIs.
//!
//! Every request is checked by the SSRF guard ([`crate::net::forbidden_reason`] plus the
//! operator's allow list), goes straight to the checked address (no proxy, whatever the
//! `HTTP_PROXY` family of variables says), is bounded in time, and its response body is bounded
//! in size. reqwest never follows a redirect: a prepared request whose action enables redirects
//! is followed hop by hop here, each hop through the same guard ([`crate::redirect`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_core::RawResponse;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use reqwest::{Client, Method, Request, Response, redirect};
use url::Url;

use crate::error::ExecError;
use crate::guard::{Guard, GuardResolver};
use crate::net::IpNet;
use crate::redirect::{Chain, RedirectPolicy, host_of};
use crate::tls;

/// Default for [`EgressConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default for [`EgressConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Default for [`EgressConfig::max_response_bytes`]: 10 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;
/// How long an idle upstream connection is kept for reuse: just under the 5 s keep-alive
/// timeout of Node.js and Apache, so the pool hands out a connection the server is about to
/// close only for servers that keep connections for less than that.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// Limits and exceptions for egress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressConfig {
    /// Networks allowed even though [`crate::net::forbidden_reason`] refuses them, e.g. an
    /// internal API at `10.20.0.0/16`. Empty by default.
    pub allow: Vec<IpNet>,
    /// Fixed answers for host names, as curl's `--resolve` gives them: a name here is never
    /// looked up, and its addresses are checked like any DNS answer (one forbidden address
    /// refuses them all). Keys are lowercase, without a trailing dot. Empty by default.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Time allowed for name resolution, TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// Time allowed for the whole exchange, reading the response body included.
    pub timeout: Duration,
    /// The largest response body accepted, in bytes.
    pub max_response_bytes: usize,
    /// Certificate authorities trusted besides the system's (a private CA).
    pub extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            hosts: BTreeMap::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            extra_roots: Vec::new(),
        }
    }
}

/// A request to send, exactly as prepared (credential included).
///
/// Its `Debug` output shows the method, the origin, header names and the body length only.
pub struct OutboundRequest {
    /// The HTTP method.
    pub method: Method,
    /// The full URL; only `http` and `https` are accepted.
    pub url: Url,
    /// Headers, in order; repeated names are sent repeatedly.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl fmt::Debug for OutboundRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OutboundRequest")
            .field("method", &self.method)
            .field("origin", &self.url.origin().ascii_serialization())
            .field("headers", &names)
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .finish_non_exhaustive()
    }
}

/// Sending without a permit: the escape hatch for tests and tools, kept behind a name
/// that stands out in review (as rustls does with `.dangerous()`). The gateway never
/// uses it: it sends only a [`crate::prepare::PreparedRequest`], built from a `Permitted` input.
#[derive(Debug)]
pub struct DangerousEgress<'a>(&'a Egress);

impl DangerousEgress<'_> {
    /// Sends `req` through the same guard (destination checks, limits), without proof that
    /// policy allowed it. A 3xx is returned as it is, never followed.
    ///
    /// # Errors
    /// As [`Egress::execute`](crate::Egress::execute).
    pub async fn send(&self, req: OutboundRequest) -> Result<RawResponse, ExecError> {
        self.0.send(req).await
    }
}

/// The guarded HTTP client. Cheap to clone: clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Egress {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    guard: Arc<Guard>,
    config: EgressConfig,
    /// TLS for SMTP (no ALPN), built once.
    smtp_tls: Arc<rustls::ClientConfig>,
}

impl Egress {
    /// Builds the client. Fails if a timeout is zero or the system's root certificates cannot
    /// be loaded.
    pub fn new(config: EgressConfig) -> Result<Self, ExecError> {
        if config.connect_timeout.is_zero() || config.timeout.is_zero() {
            return Err(ExecError::Client("timeouts must be greater than zero".to_owned()));
        }
        let guard = Arc::new(Guard::new(config.allow.clone(), config.hosts.clone()));
        let client = Client::builder()
            .tls_backend_preconfigured(tls::client_config(&config.extra_roots)?)
            .dns_resolver(GuardResolver::new(Arc::clone(&guard)))
            .no_proxy()
            .redirect(redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http1_only()
            .build()
            .map_err(|e| ExecError::Client(builder_error(&e)))?;
        let smtp_tls = Arc::new(tls::client_config_without_alpn(&config.extra_roots)?);
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                guard,
                config,
                smtp_tls,
            }),
        })
    }

    /// Requests that skip the permit requirement; see [`DangerousEgress`].
    #[must_use]
    pub fn dangerous(&self) -> DangerousEgress<'_> {
        DangerousEgress(self)
    }

    /// Checks the destination, then sends the request and reads the response.
    ///
    /// Only `http` and `https` are accepted. An IP-literal host is checked here (hyper skips
    /// the resolver for those); a name is resolved by the guard's resolver, which refuses the
    /// whole answer if any address is forbidden and not allowed, and hands reqwest only the
    /// checked addresses. A 3xx is returned as it is, never followed.
    pub(crate) async fn send(&self, req: OutboundRequest) -> Result<RawResponse, ExecError> {
        let host = host_of(&req.url);
        self.inner.guard.check_url(&req.url)?;
        let response = self.fetch(into_request(req), &host).await?;
        read_response(response, self.inner.config.max_response_bytes, &host).await
    }

    /// [`Egress::send`], following up to `policy.max()` redirects. The whole chain shares the
    /// one total timeout, so a redirecting upstream takes no longer than any other.
    pub(crate) async fn send_following(
        &self,
        req: OutboundRequest,
        policy: &RedirectPolicy,
    ) -> Result<RawResponse, ExecError> {
        if policy.max() == 0 {
            return self.send(req).await;
        }
        let chain = self.follow(req, policy);
        tokio::time::timeout(self.inner.config.timeout, chain)
            .await
            .unwrap_or(Err(ExecError::Timeout))
    }

    async fn follow(&self, mut req: OutboundRequest, policy: &RedirectPolicy) -> Result<RawResponse, ExecError> {
        let mut chain = Chain::new(policy);
        loop {
            let host = host_of(&req.url);
            self.inner.guard.check_url(&req.url)?;
            let response = self.fetch(copy_request(&req), &host).await?;
            let locations: Vec<&HeaderValue> = response.headers().get_all(LOCATION).iter().collect();
            if !chain.follow(&mut req, response.status(), &locations)? {
                return read_response(response, self.inner.config.max_response_bytes, &host).await;
            }
        }
    }

    /// Sends one request whose URL passed [`Guard::check_url`]; the body is not read yet.
    ///
    /// A pooled connection can be closed by the server (its keep-alive timeout) while the
    /// request is on its way; the server then never saw it. Like Go's transport, a request
    /// with a safe method (GET, HEAD, OPTIONS) that met a connection closed before any byte of
    /// a response is sent once more, on a fresh connection. Nothing else is ever resent.
    async fn fetch(&self, request: Request, host: &str) -> Result<Response, ExecError> {
        let again = is_safe(request.method()).then(|| request.try_clone()).flatten();
        let sent = match (self.inner.client.execute(request).await, again) {
            (Err(e), Some(again)) if closed_before_response(&e) => {
                tracing::debug!(host, "the upstream closed a pooled connection: sending once more");
                self.inner.client.execute(again).await
            }
            (sent, _) => sent,
        };
        sent.map_err(|e| ExecError::from_reqwest(&e, host))
    }

    /// Sends a permitted email: the server is resolved and checked by the guard, the client
    /// connects to the checked address, and the whole exchange is bounded by the egress
    /// timeouts. The result is a JSON [`RawResponse`] whose status is the server's reply code
    /// to the message: `{"status": "sent", "message_id", "accepted": [...], "rejected": [...]}`.
    ///
    /// # Errors
    /// When the guard refuses the server, it can't be reached, or it refuses the login, the
    /// sender, every recipient or the message ([`ExecError::Smtp`]).
    pub async fn send_mail(&self, mail: crate::prepare::PreparedMail) -> Result<RawResponse, ExecError> {
        let config = &self.inner.config;
        let tls = Arc::clone(&self.inner.smtp_tls);
        crate::smtp::send(&self.inner.guard, tls, config.connect_timeout, config.timeout, mail).await
    }

    /// The destination check of [`Egress::send`] without sending: resolves a name (bounded by
    /// the connect timeout) and checks every address.
    pub async fn check_destination(&self, url: &Url) -> Result<(), ExecError> {
        let Some(name) = self.inner.guard.check_url(url)? else {
            return Ok(());
        };
        let lookup = self.inner.guard.resolve(name);
        match tokio::time::timeout(self.inner.config.connect_timeout, lookup).await {
            Ok(answer) => answer.map(drop).map_err(|e| e.to_exec_error()),
            Err(_) => Err(ExecError::Timeout),
        }
    }
}

/// GET, HEAD and OPTIONS: sending one of these twice changes nothing on the server.
fn is_safe(method: &Method) -> bool {
    [Method::GET, Method::HEAD, Method::OPTIONS].contains(method)
}

/// Whether the connection closed before the server answered anything: hyper's "incomplete
/// message", or a reset while the request was being sent.
fn closed_before_response(err: &reqwest::Error) -> bool {
    if err.is_timeout() || err.is_connect() || err.is_body() || err.is_decode() {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = e.source();
    }
    false
}

fn into_request(req: OutboundRequest) -> Request {
    let mut request = Request::new(req.method, req.url);
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for (name, value) in req.headers {
        headers.append(name, value);
    }
    *request.headers_mut() = headers;
    *request.body_mut() = req.body.map(Into::into);
    request
}

/// The reqwest request for `req`, which stays to build the next hop from.
fn copy_request(req: &OutboundRequest) -> Request {
    into_request(OutboundRequest {
        method: req.method.clone(),
        url: req.url.clone(),
        headers: req.headers.clone(),
        body: req.body.clone(),
    })
}

/// Reads status, headers and at most `limit` bytes of body.
async fn read_response(mut response: Response, limit: usize, host: &str) -> Result<RawResponse, ExecError> {
    let too_large = ExecError::ResponseTooLarge { limit };
    if response
        .content_length()
        .is_some_and(|len| len > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large);
    }
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| ExecError::from_reqwest(&e, host))? {
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(RawResponse { status, headers, body })
}

/// Describes a client-builder error by its causes. It has no URL to leak, but reqwest's own
/// text is not relied on for that.
fn builder_error(err: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        "invalid configuration".to_owned()
    } else {
        causes.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_limits() {
        let config = EgressConfig::default();
        assert!(config.allow.is_empty());
        assert!(config.hosts.is_empty());
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.timeout, Duration::from_secs(30));
        assert_eq!(config.max_response_bytes, 10 * 1024 * 1024);
    }

    #[test]
    fn zero_timeouts_are_refused() {
        let config = EgressConfig {
            timeout: Duration::ZERO,
            ..EgressConfig::default()
        };
        let err = Egress::new(config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "could not build the HTTP client: timeouts must be greater than zero"
        );
    }

    #[test]
    fn the_client_builds_without_a_global_crypto_provider() {
        assert!(rustls::crypto::CryptoProvider::get_default().is_none());
        Egress::new(EgressConfig::default()).unwrap();
    }

    #[test]
    fn debug_of_a_request_shows_no_credential() {
        let req = OutboundRequest {
            method: Method::POST,
            url: Url::parse("https://api.example.com/v1/x?token=hunter2").unwrap(),
            headers: vec![(
                HeaderName::from_static("authorization"),
                HeaderValue::from_static("Bearer hunter2"),
            )],
            body: Some(b"{\"password\":\"hunter2\"}".to_vec()),
        };
        let shown = format!("{req:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("/v1/x"), "{shown}");
        assert!(shown.contains("https://api.example.com"), "{shown}");
        assert!(shown.contains("authorization"), "{shown}");
    }
}
