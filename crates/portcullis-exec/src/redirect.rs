//! Following redirects, for actions that enable it with `request.redirects`.
//!
//! reqwest's redirect policy stays `none`: egress follows each hop itself, so that every hop
//! passes the same guard as the first request (scheme, IP-literal check, the resolver's checked
//! and pinned addresses, limits), and so that the credential is taken off before a hop leaves
//! its realm. [`Chain::follow`] turns one response into the next request:
//!
//! - Only 301, 302, 303, 307 and 308 with one `Location` are followed; any other response
//!   (a 304, a 3xx without `Location`) is the result.
//! - The `Location` is resolved against the current URL; its fragment is dropped, and one with
//!   user info is refused.
//! - 303 turns any method but GET and HEAD into a GET without a body, and 301 and 302 turn a
//!   POST into one (as browsers do, and as the Fetch standard says); 307 and 308 keep the
//!   method and the body. Headers describing a dropped body go with it.
//! - The first hop whose origin (scheme, host, port) is not the request's own (the credential's
//!   realm) drops the credential, `Authorization`, `Cookie` and `Proxy-Authorization`, and the
//!   chain never adds them back, even on a later hop back to the realm. A query-parameter
//!   credential is removed from every such URL, and a URL that still holds its value is not
//!   followed at all. While the chain stays in the realm, the credential goes with it.

use percent_encoding::percent_decode_str;
use reqwest::Method;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderName, HeaderValue};
use url::{Url, form_urlencoded};

use crate::OutboundRequest;
use crate::error::RedirectError;
use crate::prepare::Credential;

/// Headers no hop to another origin carries, whoever set them.
const CROSS_ORIGIN_DROPPED: [HeaderName; 3] = [header::AUTHORIZATION, header::COOKIE, header::PROXY_AUTHORIZATION];

/// Headers that describe a body, dropped when the body is.
const BODY_HEADERS: [HeaderName; 4] = [
    header::CONTENT_TYPE,
    header::CONTENT_ENCODING,
    header::CONTENT_LANGUAGE,
    header::CONTENT_LOCATION,
];

/// How a prepared request treats redirects: how many hops to follow, and what must not leave
/// its origin.
#[derive(Debug, Clone)]
pub(crate) struct RedirectPolicy {
    max: u8,
    /// The request's origin: the credential's realm when there is a credential.
    origin: String,
    credential: Option<Credential>,
}

impl RedirectPolicy {
    /// Follows at most `max` redirects of a request prepared for `url` with `credential`.
    pub(crate) fn new(max: u8, url: &Url, credential: Option<&Credential>) -> Self {
        Self {
            max,
            origin: url.origin().ascii_serialization(),
            credential: credential.cloned(),
        }
    }

    /// How many redirects are followed; 0 means a 3xx is the result.
    pub(crate) fn max(&self) -> u8 {
        self.max
    }
}

/// One chain of redirects, hop by hop.
#[derive(Debug)]
pub(crate) struct Chain<'a> {
    policy: &'a RedirectPolicy,
    followed: u8,
    /// Set by the first hop to another origin and never cleared: once dropped, the credential
    /// stays dropped.
    left_origin: bool,
}

impl<'a> Chain<'a> {
    pub(crate) fn new(policy: &'a RedirectPolicy) -> Self {
        Self {
            policy,
            followed: 0,
            left_origin: false,
        }
    }

    /// Turns `req`, which was answered with `status` and `locations`, into the next hop.
    /// Returns `false`, leaving `req` as it is, when the response is not a redirect to follow
    /// (it is then the result).
    ///
    /// # Errors
    /// One redirect too many, or a `Location` that is invalid, has user info, or carries the
    /// credential to another origin.
    pub(crate) fn follow(
        &mut self,
        req: &mut OutboundRequest,
        status: StatusCode,
        locations: &[&HeaderValue],
    ) -> Result<bool, RedirectError> {
        if !is_followed(status) || locations.is_empty() {
            return Ok(false);
        }
        let from = host_of(&req.url);
        if self.followed >= self.policy.max {
            return Err(RedirectError::TooMany {
                max: self.policy.max,
                host: from,
            });
        }
        let mut url = location(&req.url, locations, &from)?;
        rewrite_method(req, status);
        if !self.left_origin && url.origin().ascii_serialization() != self.policy.origin {
            self.left_origin = true;
            req.headers.retain(|(name, _)| !self.is_sensitive(name));
            tracing::info!(
                from,
                to = host_of(&url),
                "a redirect left the request's origin: credential and authorization headers dropped"
            );
        }
        self.place_query_credential(&mut url)?;
        tracing::debug!(
            from,
            to = host_of(&url),
            status = status.as_u16(),
            "following a redirect"
        );
        req.url = url;
        self.followed += 1;
        Ok(true)
    }

    /// Headers that must not leave the origin: the credential's and any authorization.
    fn is_sensitive(&self, name: &HeaderName) -> bool {
        CROSS_ORIGIN_DROPPED.contains(name)
            || self
                .policy
                .credential
                .as_ref()
                .and_then(Credential::header_name)
                .is_some_and(|h| name.as_str().eq_ignore_ascii_case(&h))
    }

    /// In the realm, the query credential is the gateway's (whatever the `Location` says);
    /// after leaving it, the parameter is removed and a URL still holding the value refused.
    fn place_query_credential(&self, url: &mut Url) -> Result<(), RedirectError> {
        let Some(credential) = &self.policy.credential else {
            return Ok(());
        };
        if let Some(param) = credential.query_param() {
            remove_param(url, param);
            if !self.left_origin {
                url.query_pairs_mut().append_pair(param, credential.secret());
            }
        }
        if self.left_origin && carries(url, &credential.scrub_values()) {
            return Err(RedirectError::CarriesCredential { host: host_of(url) });
        }
        Ok(())
    }
}

fn is_followed(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// The host as errors and logs name it (`[::1]` for IPv6); never the path or query.
pub(crate) fn host_of(url: &Url) -> String {
    url.host_str().unwrap_or_default().to_owned()
}

/// The `Location` resolved against `current`, without its fragment.
fn location(current: &Url, locations: &[&HeaderValue], from: &str) -> Result<Url, RedirectError> {
    let invalid = || RedirectError::InvalidLocation { host: from.to_owned() };
    // Two `Location` headers leave it to the client to pick one: pick none.
    let [value] = locations else {
        return Err(invalid());
    };
    let text = std::str::from_utf8(value.as_bytes()).map_err(|_| invalid())?;
    let mut url = current.join(text).map_err(|_| invalid())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectError::UserInfo { host: from.to_owned() });
    }
    url.set_fragment(None);
    Ok(url)
}

/// 303 makes anything but GET and HEAD a GET, and 301 and 302 make a POST one; the body and
/// the headers describing it are dropped with the method.
fn rewrite_method(req: &mut OutboundRequest, status: StatusCode) {
    let to_get = match status {
        StatusCode::SEE_OTHER => req.method != Method::GET && req.method != Method::HEAD,
        StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => req.method == Method::POST,
        _ => false,
    };
    if to_get {
        req.method = Method::GET;
        req.body = None;
        req.headers.retain(|(name, _)| !BODY_HEADERS.contains(name));
    }
}

/// Removes every `param=…` pair from the query, leaving the other pairs as they were written.
fn remove_param(url: &mut Url, param: &str) {
    let Some(query) = url.query() else {
        return;
    };
    let is_param = |pair: &&str| {
        form_urlencoded::parse(pair.as_bytes())
            .next()
            .is_some_and(|(k, _)| k == param)
    };
    if !query.split('&').any(|pair| is_param(&pair)) {
        return;
    }
    let kept: Vec<&str> = query.split('&').filter(|pair| !is_param(pair)).collect();
    let kept = kept.join("&");
    url.set_query((!kept.is_empty()).then_some(kept.as_str()));
}

/// Whether any of `values` appears in `url` in any spelling the response scrubber knows
/// (as written, base64 in either alphabet, hex, percent-encoded), in the URL as written,
/// percent-decoded, or form-decoded in a query pair.
fn carries(url: &Url, values: &[String]) -> bool {
    let values: Vec<&String> = values.iter().filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        return false;
    }
    let scrubber = portcullis_redact::Scrubber::new(values.iter().map(|v| v.as_str()));
    let text = url.as_str();
    let decoded = percent_decode_str(text).decode_utf8_lossy();
    let mut places = vec![text.to_owned(), decoded.into_owned()];
    places.extend(url.query_pairs().flat_map(|(k, v)| [k.into_owned(), v.into_owned()]));
    places
        .iter()
        .any(|p| matches!(scrubber.scrub_str(p), std::borrow::Cow::Owned(_)))
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn removing_a_parameter_keeps_the_others_as_written() {
        let cases = [
            ("https://a.test/x?api_key=s&b=%2F+1", "https://a.test/x?b=%2F+1"),
            (
                "https://a.test/x?a=1&api%5Fkey=s&api_key&c=3",
                "https://a.test/x?a=1&c=3",
            ),
            ("https://a.test/x?api_key=s", "https://a.test/x"),
            (
                "https://a.test/x?api_keys=s&x=api_key",
                "https://a.test/x?api_keys=s&x=api_key",
            ),
            ("https://a.test/x", "https://a.test/x"),
        ];
        for (input, expected) in cases {
            let mut u = url(input);
            remove_param(&mut u, "api_key");
            assert_eq!(u.as_str(), expected, "{input}");
        }
    }

    #[test]
    fn a_value_is_found_in_any_spelling() {
        let values = ["s3cr/et +1".to_owned()];
        for carrying in [
            "https://b.test/?t=s3cr%2Fet+%2B1",
            "https://b.test/?t=s3cr%2fet%20%2b1",
            "https://b.test/s3cr%2Fet%20%2B1/",
        ] {
            assert!(carries(&url(carrying), &values), "{carrying}");
        }
        assert!(!carries(&url("https://b.test/?t=s3cr"), &values));
        // Encoded the ways the response scrubber knows.
        let token = "tok-4f1d9c2e8a7b6350".to_owned();
        for encoded in [
            base64::engine::general_purpose::STANDARD.encode(&token),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&token),
            token.bytes().map(|b| format!("{b:02x}")).collect::<String>(),
            token.bytes().map(|b| format!("{b:02X}")).collect::<String>(),
        ] {
            let u = url(&format!("https://b.test/cb?t={encoded}"));
            assert!(carries(&u, std::slice::from_ref(&token)), "{u}");
        }
        assert!(
            !carries(&url("https://b.test/"), &[String::new()]),
            "an empty value matches nothing"
        );
    }

    #[test]
    fn only_redirect_statuses_with_a_location_are_followed() {
        let policy = RedirectPolicy::new(5, &url("https://a.test/"), None);
        let location = HeaderValue::from_static("/next");
        for (status, followed) in [(301, true), (302, true), (303, true), (307, true), (308, true)]
            .into_iter()
            .chain([(300, false), (304, false), (305, false), (200, false), (404, false)])
        {
            let mut req = OutboundRequest {
                method: Method::GET,
                url: url("https://a.test/start"),
                headers: Vec::new(),
                body: None,
            };
            let status = StatusCode::from_u16(status).unwrap();
            let got = Chain::new(&policy).follow(&mut req, status, &[&location]).unwrap();
            assert_eq!(got, followed, "{status}");
            assert!(
                !Chain::new(&policy).follow(&mut req, status, &[]).unwrap(),
                "{status} without Location"
            );
        }
    }

    #[test]
    fn locations_are_resolved_and_checked() {
        let current = url("https://a.test/dir/page?q=1");
        let value = |s: &'static str| HeaderValue::from_static(s);
        let resolve = |values: &[&HeaderValue]| location(&current, values, "a.test");
        assert_eq!(resolve(&[&value("next")]).unwrap().as_str(), "https://a.test/dir/next");
        assert_eq!(
            resolve(&[&value("/top?x=2#frag")]).unwrap().as_str(),
            "https://a.test/top?x=2"
        );
        assert_eq!(resolve(&[&value("//b.test/p")]).unwrap().as_str(), "https://b.test/p");
        assert_eq!(
            resolve(&[&value("?r=3")]).unwrap().as_str(),
            "https://a.test/dir/page?r=3"
        );
        let utf8 = HeaderValue::from_bytes("/caf\u{e9}".as_bytes()).unwrap();
        assert_eq!(resolve(&[&utf8]).unwrap().as_str(), "https://a.test/caf%C3%A9");
        let invalid = RedirectError::InvalidLocation { host: "a.test".into() };
        assert_eq!(resolve(&[&value("http://[::1")]).unwrap_err(), invalid);
        assert_eq!(resolve(&[&value("http://a b/")]).unwrap_err(), invalid);
        let latin1 = HeaderValue::from_bytes(b"/caf\xe9").unwrap();
        assert_eq!(resolve(&[&latin1]).unwrap_err(), invalid);
        assert_eq!(resolve(&[&value("/a"), &value("/b")]).unwrap_err(), invalid);
        assert_eq!(
            resolve(&[&value("https://user:pw@b.test/")]).unwrap_err(),
            RedirectError::UserInfo { host: "a.test".into() }
        );
    }
}
