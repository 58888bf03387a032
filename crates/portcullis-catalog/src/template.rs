//! Request templates: `{param}` placeholders parsed once at load time.
//!
//! A template never becomes a string that is re-parsed: URLs are kept as an origin plus
//! path segments and query pairs, so a value can fill only the slot it was put in.

use std::collections::BTreeSet;
use std::fmt;

/// One piece of a template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal text.
    Lit(String),
    /// The value of a top-level input field.
    Param(String),
}

/// A string with `{param}` placeholders; `{{` and `}}` stand for literal braces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateString {
    parts: Vec<Part>,
}

/// A template that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{` without a matching `}`.
    #[error("unclosed `{{` in template `{0}`")]
    Unclosed(String),
    /// `}` without a matching `{`.
    #[error("unmatched `}}` in template `{0}`")]
    Unmatched(String),
    /// A placeholder whose name isn't a plain field name.
    #[error("placeholder `{{{0}}}` must name a top-level input field (letters, digits, `_`)")]
    BadName(String),
}

impl TemplateString {
    /// Parses `text`.
    ///
    /// # Errors
    /// On unbalanced braces or placeholder names that aren't field names.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => return Err(TemplateError::Unmatched(text.to_owned())),
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(TemplateError::Unclosed(text.to_owned())),
                        }
                    }
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(TemplateError::BadName(name));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Param(name));
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self { parts })
    }

    /// A template of literal text only.
    #[must_use]
    pub fn literal(text: &str) -> Self {
        Self {
            parts: if text.is_empty() {
                Vec::new()
            } else {
                vec![Part::Lit(text.to_owned())]
            },
        }
    }

    /// The pieces, in order.
    #[must_use]
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// When the whole template is one placeholder, its name: the value then keeps its JSON type.
    #[must_use]
    pub fn sole_param(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Param(name)] => Some(name),
            _ => None,
        }
    }

    /// The names of all placeholders.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Param(n) => Some(n.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Whether the template has no placeholders.
    #[must_use]
    pub fn is_literal(&self) -> bool {
        self.params().next().is_none()
    }
}

impl fmt::Display for TemplateString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.parts {
            match p {
                Part::Lit(l) => write!(f, "{}", l.replace('{', "{{").replace('}', "}}"))?,
                Part::Param(n) => write!(f, "{{{n}}}")?,
            }
        }
        Ok(())
    }
}

/// A JSON body template: any string in it may hold placeholders. A string that is exactly
/// one placeholder is replaced by the input value with its JSON type.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyTemplate {
    /// A JSON object.
    Object(Vec<(String, BodyTemplate)>),
    /// A JSON array.
    Array(Vec<BodyTemplate>),
    /// A string, possibly templated.
    Text(TemplateString),
    /// Any other JSON literal (number, bool, null).
    Literal(serde_json::Value),
}

impl BodyTemplate {
    /// Parses every string of `value` as a template.
    ///
    /// # Errors
    /// When a string is not a valid template.
    pub fn parse(value: &serde_json::Value) -> Result<Self, TemplateError> {
        use serde_json::Value;
        Ok(match value {
            Value::Object(map) => Self::Object(
                map.iter()
                    .map(|(k, v)| Ok((k.clone(), Self::parse(v)?)))
                    .collect::<Result<_, TemplateError>>()?,
            ),
            Value::Array(items) => Self::Array(items.iter().map(Self::parse).collect::<Result<_, _>>()?),
            Value::String(s) => Self::Text(TemplateString::parse(s)?),
            other => Self::Literal(other.clone()),
        })
    }

    /// Every placeholder name in the body.
    pub fn collect_params(&self, out: &mut BTreeSet<String>) {
        match self {
            Self::Object(fields) => fields.iter().for_each(|(_, v)| v.collect_params(out)),
            Self::Array(items) => items.iter().for_each(|v| v.collect_params(out)),
            Self::Text(t) => out.extend(t.params().map(str::to_owned)),
            Self::Literal(_) => {}
        }
    }
}

/// A request URL: a fixed origin and path/query made of templates.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlTemplate {
    /// `scheme://host[:port]`, fixed: the credential realm. No placeholder may appear in it.
    pub origin: url::Url,
    /// Path segments; each is filled and percent-encoded as one segment.
    pub segments: Vec<TemplateString>,
    /// Query pairs with literal names and templated values.
    pub query: Vec<(String, TemplateString)>,
}

/// A URL template that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlTemplateError {
    /// Not `http(s)://host/...`.
    #[error("request url `{0}` must start with `http://` or `https://`")]
    Scheme(String),
    /// A placeholder in the host or port.
    #[error("request url `{0}` has a placeholder in its origin: the host must be fixed")]
    TemplatedOrigin(String),
    /// The origin doesn't parse.
    #[error("request url `{0}` has an invalid origin: {1}")]
    Origin(String, String),
    /// Userinfo or fragments are not allowed.
    #[error("request url `{0}` must not contain user info or a fragment")]
    Forbidden(String),
    /// A bad placeholder.
    #[error("request url `{0}`: {1}")]
    Template(String, TemplateError),
}

impl UrlTemplate {
    /// Parses a URL template such as `https://api.github.com/repos/{owner}/{repo}/issues?state={state}`.
    ///
    /// # Errors
    /// When the origin is missing, templated or invalid, or a placeholder is malformed.
    pub fn parse(text: &str) -> Result<Self, UrlTemplateError> {
        let err_t = |e| UrlTemplateError::Template(text.to_owned(), e);
        let rest = text
            .strip_prefix("https://")
            .map(|r| ("https", r))
            .or_else(|| text.strip_prefix("http://").map(|r| ("http", r)));
        let Some((scheme, rest)) = rest else {
            return Err(UrlTemplateError::Scheme(text.to_owned()));
        };
        if rest.contains('#') {
            return Err(UrlTemplateError::Forbidden(text.to_owned()));
        }
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(auth_end);
        if authority.contains(['{', '}']) {
            return Err(UrlTemplateError::TemplatedOrigin(text.to_owned()));
        }
        if authority.contains(['@', '\\']) || authority.is_empty() {
            return Err(UrlTemplateError::Forbidden(text.to_owned()));
        }
        let origin = url::Url::parse(&format!("{scheme}://{authority}/"))
            .map_err(|e| UrlTemplateError::Origin(text.to_owned(), e.to_string()))?;
        let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
        let segments = path
            .split('/')
            .skip(1)
            .map(TemplateString::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(err_t)?;
        let query = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                Ok((k.to_owned(), TemplateString::parse(v).map_err(err_t)?))
            })
            .collect::<Result<Vec<_>, UrlTemplateError>>()?;
        if query.iter().any(|(k, _)| k.contains(['{', '}'])) {
            return Err(UrlTemplateError::Template(
                text.to_owned(),
                TemplateError::BadName("query names must be literal".into()),
            ));
        }
        Ok(Self {
            origin,
            segments,
            query,
        })
    }

    /// Every placeholder in the path.
    pub fn path_params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().flat_map(TemplateString::params)
    }

    /// Every placeholder in the query.
    pub fn query_params(&self) -> impl Iterator<Item = &str> {
        self.query.iter().flat_map(|(_, v)| v.params())
    }

    /// The credential realm: `scheme://host:port`.
    #[must_use]
    pub fn realm(&self) -> String {
        self.origin.origin().ascii_serialization()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_strings_parse_placeholders_and_escapes() {
        let t = TemplateString::parse("a{b}c{{d}}").unwrap();
        assert_eq!(
            t.parts(),
            &[Part::Lit("a".into()), Part::Param("b".into()), Part::Lit("c{d}".into())]
        );
        assert_eq!(TemplateString::parse("{x}").unwrap().sole_param(), Some("x"));
        assert!(TemplateString::parse("{x").is_err());
        assert!(TemplateString::parse("x}").is_err());
        assert!(TemplateString::parse("{a.b}").is_err());
        assert!(TemplateString::parse("{}").is_err());
    }

    #[test]
    fn url_templates_keep_the_origin_fixed() {
        let u = UrlTemplate::parse("https://api.github.com/repos/{owner}/{repo}/issues?state={state}&x=1").unwrap();
        assert_eq!(u.realm(), "https://api.github.com");
        assert_eq!(u.segments.len(), 4);
        assert_eq!(u.path_params().collect::<Vec<_>>(), ["owner", "repo"]);
        assert_eq!(u.query_params().collect::<Vec<_>>(), ["state"]);
        assert!(matches!(
            UrlTemplate::parse("https://{host}/x"),
            Err(UrlTemplateError::TemplatedOrigin(_))
        ));
        assert!(matches!(
            UrlTemplate::parse("https://api.{tld}/x"),
            Err(UrlTemplateError::TemplatedOrigin(_))
        ));
        assert!(matches!(
            UrlTemplate::parse("ftp://x/"),
            Err(UrlTemplateError::Scheme(_))
        ));
        assert!(matches!(
            UrlTemplate::parse("https://u:p@x/"),
            Err(UrlTemplateError::Forbidden(_))
        ));
        assert!(matches!(
            UrlTemplate::parse("https://x/#f"),
            Err(UrlTemplateError::Forbidden(_))
        ));
        assert_eq!(
            UrlTemplate::parse("http://127.0.0.1:8080").unwrap().realm(),
            "http://127.0.0.1:8080"
        );
    }
}
