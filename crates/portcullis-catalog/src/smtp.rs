//! The `smtp:` section of an action file: an email sent over SMTP instead of an HTTP request.
//!
//! The server, port and TLS mode are fixed by the action (the credential's realm is
//! `smtp://server:port`); the addresses, subject and bodies are templates filled from the
//! validated input. Values are checked and the message is assembled by `portcullis-exec`.

use serde::Deserialize;

use crate::raw::RawSmtp;
use crate::template::TemplateString;

/// How the connection to the SMTP server is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain TCP, then `STARTTLS` before anything else; a server that doesn't offer it fails.
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
    /// No TLS. Only to a server whose address is not public (loopback, or a network in
    /// `egress.allow`): a credential is never sent in clear text over the internet.
    None,
}

/// How an email is sent: the fixed server and the message templates.
#[derive(Debug, Clone)]
pub struct SmtpSpec {
    /// The server's host name or IP address.
    pub server: String,
    /// The server's port.
    pub port: u16,
    /// How the connection is secured.
    pub tls: SmtpTls,
    /// The sender address: a literal address or `{field}`.
    pub from: TemplateString,
    /// Recipients: a literal address or `{field}` holding an address or a list of them.
    pub to: Option<TemplateString>,
    /// Copy recipients, like `to`.
    pub cc: Option<TemplateString>,
    /// Blind copy recipients, like `to`: in the envelope, never in the message headers.
    pub bcc: Option<TemplateString>,
    /// The subject.
    pub subject: Option<TemplateString>,
    /// The plain-text body.
    pub text: Option<TemplateString>,
    /// The HTML body.
    pub html: Option<TemplateString>,
}

impl SmtpSpec {
    /// The credential realm: `smtp://server:port`.
    #[must_use]
    pub fn realm(&self) -> String {
        format!("smtp://{}:{}", self.server.to_ascii_lowercase(), self.port)
    }

    /// Every template with the place it fills, for checking placeholders against the schema.
    pub fn templates(&self) -> impl Iterator<Item = (&'static str, &TemplateString)> {
        [
            ("from", Some(&self.from)),
            ("to", self.to.as_ref()),
            ("cc", self.cc.as_ref()),
            ("bcc", self.bcc.as_ref()),
            ("subject", self.subject.as_ref()),
            ("text", self.text.as_ref()),
            ("html", self.html.as_ref()),
        ]
        .into_iter()
        .filter_map(|(place, t)| t.map(|t| (place, t)))
    }

    pub(crate) fn parse(raw: RawSmtp, label: &str) -> Result<Self, String> {
        let err = |m: String| format!("action `{label}`: `smtp.{m}");
        let server = raw.server.trim().to_owned();
        let host_ok = !server.is_empty()
            && server.len() <= 253
            && server
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
        if !host_ok {
            return Err(err(format!("server` `{server}` is not a host name or IP address")));
        }
        let port = u16::try_from(raw.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| err(format!("port` {} is not a port number", raw.port)))?;
        let parse = |place: &str, text: Option<String>| -> Result<Option<TemplateString>, String> {
            text.map(|t| TemplateString::parse(&t).map_err(|e| err(format!("{place}`: {e}"))))
                .transpose()
        };
        let from = parse("from", Some(raw.from))?.unwrap_or_else(|| TemplateString::literal(""));
        let spec = Self {
            server,
            port,
            tls: raw.tls,
            from,
            to: parse("to", raw.to)?,
            cc: parse("cc", raw.cc)?,
            bcc: parse("bcc", raw.bcc)?,
            subject: parse("subject", raw.subject)?,
            text: parse("text", raw.text)?,
            html: parse("html", raw.html)?,
        };
        for (place, t) in spec.templates() {
            let is_address = matches!(place, "from" | "to" | "cc" | "bcc");
            if is_address && !(t.is_literal() || t.sole_param().is_some()) {
                return Err(err(format!(
                    "{place}` must be one literal address or one `{{field}}`, not a mix"
                )));
            }
        }
        if spec.to.is_none() && spec.cc.is_none() && spec.bcc.is_none() {
            return Err(format!(
                "action `{label}`: `smtp` needs at least one of `to`, `cc` and `bcc`"
            ));
        }
        if spec.text.is_none() && spec.html.is_none() {
            return Err(format!(
                "action `{label}`: `smtp` needs a `text` or an `html` body (or both)"
            ));
        }
        Ok(spec)
    }
}
