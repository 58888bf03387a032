//! The SSRF guard: which addresses may be called, checked on the parsed URL host and on every
//! address a host name resolves to.
//!
//! hyper skips the resolver for IP-literal hosts, so those are checked here before the request
//! is handed to reqwest; names are resolved by [`GuardResolver`], which hands reqwest only
//! addresses it has checked, so the address connected to is the address judged. A name the
//! operator pinned (`egress.hosts`) is answered from that map instead of the system resolver;
//! the answer is checked all the same.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::error::ExecError;
use crate::net::{IpNet, forbidden_reason};

/// The address policy: refuse what [`forbidden_reason`] refuses, unless an allowed network
/// contains it. Names in `hosts` resolve to their listed addresses, never through DNS.
#[derive(Debug)]
pub(crate) struct Guard {
    allow: Vec<IpNet>,
    hosts: BTreeMap<String, Vec<IpAddr>>,
}

/// Why the guard refused a name; travels through reqwest's error chain from the resolver.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuardError {
    /// At least one resolved address is forbidden.
    #[error("destination `{host}` is not allowed: {reason}")]
    Denied { host: String, reason: &'static str },
    /// The name resolved to nothing (or the lookup failed).
    #[error("could not resolve `{host}`")]
    NoAddress { host: String },
}

impl GuardError {
    pub(crate) fn to_exec_error(&self) -> ExecError {
        match self {
            Self::Denied { host, reason } => denied(host, reason),
            Self::NoAddress { host } => ExecError::Resolve { host: host.clone() },
        }
    }
}

impl Guard {
    /// `hosts` keys are lowercase names without a trailing dot, as the config writes them.
    pub(crate) fn new(allow: Vec<IpNet>, hosts: BTreeMap<String, Vec<IpAddr>>) -> Self {
        Self { allow, hosts }
    }

    /// Why `ip` may not be called, or `None` if it may.
    pub(crate) fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let reason = forbidden_reason(ip)?;
        (!self.allow.iter().any(|net| net.contains(ip))).then_some(reason)
    }

    /// Checks the scheme and, for an IP-literal host, the address. Returns the host name that
    /// still has to be resolved and checked, if the host is a name.
    pub(crate) fn check_url<'u>(&self, url: &'u Url) -> Result<Option<&'u str>, ExecError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ExecError::UnsupportedScheme(url.scheme().to_owned()));
        }
        let ip = match url.host() {
            None => return Err(denied("", "the URL has no host")),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            // `url` turns every IPv4 spelling into `Host::Ipv4` for http(s); this is a second
            // line in case a name ever reaches hyper that it would parse as an address.
            Some(Host::Domain(name)) => match name.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => return Ok(Some(name)),
            },
        };
        match self.refusal(ip) {
            Some(reason) => Err(denied(url.host_str().unwrap_or_default(), reason)),
            None => Ok(None),
        }
    }

    /// Resolves `host` (from the pinned `hosts` when it is there, else through the system
    /// resolver) and checks every address: one forbidden address refuses the answer.
    pub(crate) async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, GuardError> {
        if let Some(pinned) = self.pinned(host) {
            return self.check_answer(host, pinned.iter().map(|ip| SocketAddr::new(*ip, 0)).collect());
        }
        let no_address = || GuardError::NoAddress { host: host.to_owned() };
        let addrs = tokio::net::lookup_host((host, 0)).await.map_err(|_| no_address())?;
        self.check_answer(host, addrs.collect())
    }

    /// The operator's fixed answer for `host`, matched as DNS does: case-insensitively, and
    /// with or without the trailing dot of a fully qualified name.
    fn pinned(&self, host: &str) -> Option<&Vec<IpAddr>> {
        if self.hosts.is_empty() {
            return None;
        }
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        self.hosts.get(&name)
    }

    /// Checks a DNS answer. A mix of public and forbidden addresses is refused as a whole:
    /// otherwise which one gets used would be up to the resolver (or an attacker's DNS).
    pub(crate) fn check_answer(&self, host: &str, mut addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, GuardError> {
        addrs.dedup();
        if addrs.is_empty() {
            return Err(GuardError::NoAddress { host: host.to_owned() });
        }
        if let Some(reason) = addrs.iter().find_map(|addr| self.refusal(addr.ip())) {
            tracing::debug!(host, reason, "egress refused a DNS answer");
            return Err(GuardError::Denied {
                host: host.to_owned(),
                reason,
            });
        }
        Ok(addrs)
    }
}

fn denied(host: &str, reason: &str) -> ExecError {
    ExecError::EgressDenied {
        host: host.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The reqwest resolver that applies the [`Guard`] to every answer.
#[derive(Debug, Clone)]
pub(crate) struct GuardResolver {
    guard: Arc<Guard>,
}

impl GuardResolver {
    pub(crate) fn new(guard: Arc<Guard>) -> Self {
        Self { guard }
    }
}

impl Resolve for GuardResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = Arc::clone(&self.guard);
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = guard.resolve(&host).await?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(allow: &[&str]) -> Guard {
        Guard::new(allow.iter().map(|n| n.parse().unwrap()).collect(), BTreeMap::new())
    }

    /// A guard allowing `allow`, with `hosts` pinned.
    fn pinning(allow: &[&str], hosts: &[(&str, &[&str])]) -> Guard {
        let hosts = hosts
            .iter()
            .map(|(name, ips)| ((*name).to_owned(), ips.iter().map(|ip| ip.parse().unwrap()).collect()))
            .collect();
        Guard::new(allow.iter().map(|n| n.parse().unwrap()).collect(), hosts)
    }

    #[tokio::test]
    async fn a_pinned_name_resolves_to_its_addresses_and_is_checked_like_any_answer() {
        let g = pinning(
            &["127.0.0.1/32"],
            &[
                ("ok.test", &["127.0.0.1"]),
                ("private.test", &["127.0.0.1", "10.0.0.5"]),
                ("public.test", &["93.184.215.14"]),
            ],
        );
        // Matched as DNS matches names; `localhost` would resolve, so the map really answered.
        for name in ["ok.test", "OK.Test", "ok.test."] {
            assert_eq!(g.resolve(name).await.unwrap(), addrs(&["127.0.0.1"]), "{name}");
        }
        assert_eq!(g.resolve("public.test").await.unwrap(), addrs(&["93.184.215.14"]));
        let err = g.resolve("private.test").await.unwrap_err();
        assert_eq!(err.to_string(), "destination `private.test` is not allowed: private");
    }

    #[tokio::test]
    async fn a_name_that_is_not_pinned_goes_to_the_system_resolver() {
        let g = pinning(&[], &[("ok.test", &["93.184.215.14"])]);
        let err = g.resolve("localhost").await.unwrap_err();
        assert_eq!(err.to_string(), "destination `localhost` is not allowed: loopback");
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|ip| SocketAddr::new(ip.parse().unwrap(), 0)).collect()
    }

    #[test]
    fn a_mixed_answer_is_refused_as_a_whole() {
        let answer = addrs(&["93.184.215.14", "10.0.0.5", "2606:4700::1"]);
        let err = guard(&[]).check_answer("mixed.example", answer).unwrap_err();
        assert_eq!(err.to_string(), "destination `mixed.example` is not allowed: private");
    }

    #[test]
    fn a_public_answer_is_passed_on_unchanged() {
        let answer = addrs(&["93.184.215.14", "2606:4700::1"]);
        let checked = guard(&[]).check_answer("ok.example", answer.clone()).unwrap();
        assert_eq!(checked, answer);
    }

    #[test]
    fn an_empty_answer_does_not_resolve() {
        let err = guard(&[]).check_answer("nx.example", Vec::new()).unwrap_err();
        assert!(matches!(err.to_exec_error(), ExecError::Resolve { host } if host == "nx.example"));
    }

    #[test]
    fn allowed_networks_override_the_refusal() {
        let g = guard(&["10.0.0.0/8", "::1/128"]);
        assert!(g.check_answer("internal", addrs(&["10.1.2.3", "::1"])).is_ok());
        let err = g
            .check_answer("internal", addrs(&["10.1.2.3", "127.0.0.1"]))
            .unwrap_err();
        assert!(err.to_string().ends_with("loopback"), "{err}");
    }

    #[test]
    fn ip_literal_hosts_are_checked_without_resolving() {
        let g = guard(&[]);
        let check = |u: &str| g.check_url(&Url::parse(u).unwrap()).map(|n| n.map(str::to_owned));
        assert_eq!(check("https://93.184.215.14/x").unwrap(), None);
        assert_eq!(
            check("https://api.example.com/x").unwrap(),
            Some("api.example.com".to_owned())
        );
        assert!(matches!(check("ftp://93.184.215.14/"), Err(ExecError::UnsupportedScheme(s)) if s == "ftp"));
        assert!(matches!(
            check("file:///etc/passwd"),
            Err(ExecError::UnsupportedScheme(_))
        ));
        let err = check("http://[fe80::1]/").unwrap_err();
        assert_eq!(err.to_string(), "destination `[fe80::1]` is not allowed: link-local");
    }
}
