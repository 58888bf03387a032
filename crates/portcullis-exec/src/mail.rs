//! Email assembly for `smtp:` actions: the message is built structurally from checked values,
//! never by pasting input into header text.
//!
//! - Every header-bound value (`from`, `to`, `cc`, `bcc`, `subject`) is refused if it holds a
//!   control character (C0, DEL, C1) or a Unicode line or paragraph separator, so no input can
//!   start a header of its own.
//! - Addresses must be a strict subset of RFC 5322's `addr-spec`: ASCII only, a dot-atom local
//!   part (letters, digits and ``!#$%&'*+/=?^_`{|}~-``, dots not first, last or doubled, at most
//!   64 bytes), `@`, and a domain of at least two dot-separated labels (letters, digits and
//!   inner hyphens, 1–63 bytes each), 254 bytes in all. No display names, comments, quoted local
//!   parts or address literals: what policy sees as `context.derived.FIELD.domains` is exactly
//!   where the mail goes.
//! - At most [`MAX_RECIPIENTS`] recipients, and at most [`MAX_MESSAGE_BYTES`] of message.
//! - Bodies are sent as 7bit text when they are ASCII with short lines, otherwise base64; a
//!   subject that is not plain ASCII is sent as RFC 2047 encoded words. `Bcc` recipients are in
//!   the envelope only, never in the headers.

use base64::Engine as _;
use serde_json::Value;

use portcullis_catalog::smtp::SmtpSpec;
use portcullis_catalog::template::{Part, TemplateString};

use crate::prepare::PrepareError;

/// The largest message (headers and body, as sent) an `smtp:` action may send: 5 MiB.
pub const MAX_MESSAGE_BYTES: usize = 5 * 1024 * 1024;
/// The most recipients (`to`, `cc` and `bcc` together) one message may have.
pub const MAX_RECIPIENTS: usize = 100;

/// An email, its values checked, ready to be formatted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The sender address (envelope and `From`).
    pub from: String,
    /// `To` recipients.
    pub to: Vec<String>,
    /// `Cc` recipients.
    pub cc: Vec<String>,
    /// `Bcc` recipients: in the envelope only.
    pub bcc: Vec<String>,
    /// The subject (may be empty).
    pub subject: String,
    /// The plain-text body.
    pub text: Option<String>,
    /// The HTML body.
    pub html: Option<String>,
}

/// The values that differ each time a message is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// The `Message-ID`, with its angle brackets.
    pub message_id: String,
    /// The `Date`, RFC 5322.
    pub date: String,
    /// The MIME boundary for a message with both bodies.
    pub boundary: String,
}

impl Stamp {
    /// A fresh stamp for a message from `from`.
    #[must_use]
    pub fn new(from: &str) -> Self {
        let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
        let id: [u8; 16] = rand::random();
        let b: [u8; 12] = rand::random();
        let date = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap_or_default();
        Self {
            message_id: format!("<{}@{domain}>", hex(&id)),
            date,
            boundary: format!("=_portcullis_{}", hex(&b)),
        }
    }

    /// A stamp of the longest shape, for measuring a message before sending it.
    fn longest(from: &str) -> Self {
        let domain = from.rsplit_once('@').map_or("localhost", |(_, d)| d);
        Self {
            message_id: format!("<{}@{domain}>", "0".repeat(32)),
            date: "Wed, 31 Dec 2025 23:59:59 +0000".into(),
            boundary: format!("=_portcullis_{}", "0".repeat(24)),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Mail {
    /// Every envelope recipient, `to`, `cc` then `bcc`, without repeats.
    #[must_use]
    pub fn recipients(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for a in self.to.iter().chain(&self.cc).chain(&self.bcc) {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(a)) {
                out.push(a);
            }
        }
        out
    }

    /// The message headers, in order, as (name, unfolded value) pairs: what the recipient sees.
    #[must_use]
    pub fn headers(&self, stamp: &Stamp) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("Date", stamp.date.clone()),
            ("Message-ID", stamp.message_id.clone()),
            ("From", self.from.clone()),
        ];
        if !self.to.is_empty() {
            h.push(("To", self.to.join(", ")));
        }
        if !self.cc.is_empty() {
            h.push(("Cc", self.cc.join(", ")));
        }
        h.push(("Subject", self.subject.clone()));
        h.push(("MIME-Version", "1.0".into()));
        h
    }

    /// The message as sent (CRLF line ends; dot-stuffing is the SMTP client's job).
    #[must_use]
    pub fn format(&self, stamp: &Stamp) -> Vec<u8> {
        let mut out = String::new();
        for (name, value) in self.headers(stamp) {
            match name {
                "To" | "Cc" => out.push_str(&fold_list(name, &value)),
                "Subject" => out.push_str(&subject_header(&value)),
                _ => out.push_str(&format!("{name}: {value}\r\n")),
            }
        }
        match (&self.text, &self.html) {
            (Some(text), Some(html)) => {
                let b = &stamp.boundary;
                out.push_str(&format!(
                    "Content-Type: multipart/alternative; boundary=\"{b}\"\r\n\r\n"
                ));
                for (sub, body) in [("plain", text), ("html", html)] {
                    out.push_str(&format!("--{b}\r\n"));
                    out.push_str(&part(sub, body, b));
                }
                out.push_str(&format!("--{b}--\r\n"));
            }
            (Some(text), None) => out.push_str(&part("plain", text, &stamp.boundary)),
            (None, Some(html)) => out.push_str(&part("html", html, &stamp.boundary)),
            (None, None) => out.push_str(&part("plain", "", &stamp.boundary)),
        }
        out.into_bytes()
    }
}

/// One body: its content headers, a blank line and the encoded text.
fn part(subtype: &str, body: &str, boundary: &str) -> String {
    let crlf = normalize_newlines(body);
    let seven_bit = crlf.is_ascii()
        && !crlf.contains(boundary)
        && crlf.split("\r\n").all(|l| l.len() <= 998)
        && !crlf
            .bytes()
            .any(|b| b.is_ascii_control() && !matches!(b, b'\t' | b'\r' | b'\n'));
    let (encoding, mut encoded) = if seven_bit {
        ("7bit", crlf)
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(crlf.as_bytes());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
            .collect();
        ("base64", lines.join("\r\n"))
    };
    if !encoded.is_empty() && !encoded.ends_with("\r\n") {
        encoded.push_str("\r\n");
    }
    format!("Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n{encoded}")
}

/// CRLF for every line end, whether written `\r\n`, `\n` or a lone `\r`.
fn normalize_newlines(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

/// `Name: a, b, c` folded after commas so that no line passes 78 characters where avoidable.
fn fold_list(name: &str, value: &str) -> String {
    let mut out = format!("{name}:");
    let mut line_len = out.len();
    let items: Vec<&str> = value.split(", ").collect();
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 < items.len() { "," } else { "" };
        if i > 0 && line_len + 1 + item.len() + sep.len() > 78 {
            out.push_str("\r\n");
            line_len = 0;
        }
        out.push(' ');
        out.push_str(item);
        out.push_str(sep);
        line_len += 1 + item.len() + sep.len();
    }
    out.push_str("\r\n");
    out
}

/// The `Subject` header: as it is when it is printable ASCII that fits a line, otherwise RFC
/// 2047 base64 encoded words, each whole characters, one per folded line.
fn subject_header(subject: &str) -> String {
    let plain = subject.bytes().all(|b| (0x20..0x7f).contains(&b)) && subject.len() <= 900;
    if plain {
        return format!("Subject: {subject}\r\n");
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in subject.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    let encoded: Vec<String> = words
        .iter()
        .map(|w| format!("=?utf-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(w)))
        .collect();
    format!("Subject: {}\r\n", encoded.join("\r\n "))
}

/// Fills the action's templates from the (permitted) input and checks every value.
///
/// # Errors
/// When a header-bound value holds a control character, an address is not acceptable, there
/// are no or too many recipients, or the message would be larger than [`MAX_MESSAGE_BYTES`].
pub fn render(spec: &SmtpSpec, input: &Value) -> Result<Mail, PrepareError> {
    let from = addresses(&spec.from, input, "from")?;
    let [from] = <[String; 1]>::try_from(from).map_err(|_| PrepareError::Mail {
        field: template_field(&spec.from, "from"),
        reason: "the sender must be exactly one address".into(),
    })?;
    let list = |t: &Option<TemplateString>, place| t.as_ref().map_or(Ok(Vec::new()), |t| addresses(t, input, place));
    let mail = Mail {
        from,
        to: list(&spec.to, "to")?,
        cc: list(&spec.cc, "cc")?,
        bcc: list(&spec.bcc, "bcc")?,
        subject: text(spec.subject.as_ref(), input)?,
        text: body(spec.text.as_ref(), input)?,
        html: body(spec.html.as_ref(), input)?,
    };
    if let Some(c) = mail.subject.chars().find(|c| is_header_control(*c)) {
        let field = spec
            .subject
            .as_ref()
            .map_or_else(|| "subject".to_owned(), |t| template_field(t, "subject"));
        return Err(PrepareError::Mail {
            field,
            reason: format!(
                "it contains the control character U+{:04X}, which can't be in a header",
                u32::from(c)
            ),
        });
    }
    let count = mail.recipients().len();
    if count == 0 {
        return Err(PrepareError::Mail {
            field: "to".into(),
            reason: "the message has no recipient".into(),
        });
    }
    if count > MAX_RECIPIENTS {
        return Err(PrepareError::Mail {
            field: "to".into(),
            reason: format!("the message has {count} recipients; at most {MAX_RECIPIENTS} are allowed"),
        });
    }
    let size = mail.format(&Stamp::longest(&mail.from)).len();
    if size > MAX_MESSAGE_BYTES {
        return Err(PrepareError::Mail {
            field: "text".into(),
            reason: format!("the message would be {size} bytes; at most {MAX_MESSAGE_BYTES} are allowed"),
        });
    }
    Ok(mail)
}

/// The input field a template takes its value from, or the place for a literal.
fn template_field(t: &TemplateString, place: &str) -> String {
    t.params().next().map_or_else(|| place.to_owned(), str::to_owned)
}

/// A body: none when its template is only `{field}` and the field is absent.
fn body(t: Option<&TemplateString>, input: &Value) -> Result<Option<String>, PrepareError> {
    let Some(t) = t else { return Ok(None) };
    if let Some(name) = t.sole_param()
        && input.get(name).is_none_or(Value::is_null)
    {
        return Ok(None);
    }
    text(Some(t), input).map(Some)
}

fn text(t: Option<&TemplateString>, input: &Value) -> Result<String, PrepareError> {
    let mut out = String::new();
    for part in t.map(TemplateString::parts).unwrap_or_default() {
        match part {
            Part::Lit(l) => out.push_str(l),
            Part::Param(name) => match input.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => out.push_str(s),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
                Some(_) => {
                    return Err(PrepareError::Mail {
                        field: name.clone(),
                        reason: "only strings, numbers and booleans can be mail text".into(),
                    });
                }
            },
        }
    }
    Ok(out)
}

/// The addresses a `from`/`to`/`cc`/`bcc` template stands for: its literal, or its field's
/// string or list of strings. An absent field stands for none.
fn addresses(t: &TemplateString, input: &Value, place: &str) -> Result<Vec<String>, PrepareError> {
    let field = template_field(t, place);
    let values: Vec<&Value> = match t.sole_param() {
        Some(name) => match input.get(name) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items.iter().collect(),
            Some(v) => vec![v],
        },
        None => return text(Some(t), input).and_then(|a| check_address(&a, &field).map(|()| vec![a])),
    };
    values
        .into_iter()
        .map(|v| {
            let a = v.as_str().ok_or_else(|| PrepareError::Mail {
                field: field.clone(),
                reason: "addresses must be strings".into(),
            })?;
            check_address(a, &field)?;
            Ok(a.to_owned())
        })
        .collect()
}

fn is_header_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}')
}

fn check_address(a: &str, field: &str) -> Result<(), PrepareError> {
    address_problem(a).map_or(Ok(()), |reason| {
        Err(PrepareError::Mail {
            field: field.to_owned(),
            reason: reason.into(),
        })
    })
}

/// Why `a` is not an address this gateway sends to, or `None` if it is one.
#[must_use]
pub fn address_problem(a: &str) -> Option<&'static str> {
    if a.chars().any(is_header_control) {
        return Some("an address can't contain control characters");
    }
    if a.len() > 254 {
        return Some("an address can't be longer than 254 bytes");
    }
    let Some((local, domain)) = a.rsplit_once('@') else {
        return Some("an address needs `local@domain`");
    };
    let atext = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b);
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local.split('.').all(|atom| !atom.is_empty() && atom.bytes().all(atext));
    if !local_ok {
        return Some("the part before `@` must be letters, digits, ``!#$%&'*+/=?^_`{|}~-`` and single inner dots");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !domain_ok {
        return Some("the domain must be two or more dot-separated labels of letters, digits and inner hyphens");
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> SmtpSpec {
        let t = |s: &str| Some(TemplateString::parse(s).unwrap());
        SmtpSpec {
            server: "smtp.example.com".into(),
            port: 587,
            tls: portcullis_catalog::smtp::SmtpTls::Starttls,
            from: TemplateString::literal("agent@example.com"),
            to: t("{to}"),
            cc: t("{cc}"),
            bcc: t("{bcc}"),
            subject: t("{subject}"),
            text: t("{text}"),
            html: t("{html}"),
        }
    }

    fn stamp() -> Stamp {
        Stamp {
            message_id: "<id@example.com>".into(),
            date: "Thu, 01 Jan 2026 00:00:00 +0000".into(),
            boundary: "=_b".into(),
        }
    }

    #[test]
    fn a_text_message_is_formatted_exactly_and_bcc_is_not_a_header() {
        let input = json!({"to": ["a@example.com", "b@example.org"], "bcc": "c@example.net",
                           "subject": "Hello", "text": "line 1\nline 2"});
        let mail = render(&spec(), &input).unwrap();
        assert_eq!(mail.recipients(), ["a@example.com", "b@example.org", "c@example.net"]);
        let text = String::from_utf8(mail.format(&stamp())).unwrap();
        assert_eq!(
            text,
            "Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <id@example.com>\r\n\
             From: agent@example.com\r\nTo: a@example.com, b@example.org\r\nSubject: Hello\r\n\
             MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Transfer-Encoding: 7bit\r\n\r\nline 1\r\nline 2\r\n"
        );
    }

    #[test]
    fn both_bodies_make_an_alternative_and_unicode_is_encoded() {
        let input = json!({"to": "a@example.com", "subject": "Grüße", "text": "Grüße", "html": "<p>hi</p>"});
        let mail = render(&spec(), &input).unwrap();
        let text = String::from_utf8(mail.format(&stamp())).unwrap();
        assert!(text.contains("Subject: =?utf-8?B?R3LDvMOfZQ==?=\r\n"), "{text}");
        assert!(text.contains("multipart/alternative; boundary=\"=_b\""), "{text}");
        assert!(text.contains("--=_b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\nR3LDvMOfZQ==\r\n"), "{text}");
        assert!(text.contains("Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n<p>hi</p>\r\n--=_b--\r\n"), "{text}");
    }

    #[test]
    fn control_characters_in_header_fields_are_refused() {
        for subject in [
            "Hi\r\nBcc: x@evil.com",
            "Hi\nX",
            "Hi\rX",
            "a\u{0}b",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{2028}b",
            "tab\there",
        ] {
            let input = json!({"to": "a@example.com", "subject": subject, "text": "t"});
            let err = render(&spec(), &input).unwrap_err();
            assert!(
                err.to_string().starts_with("`subject` can't be used in the email:"),
                "{subject:?}: {err}"
            );
        }
        let input = json!({"to": "a@example.com\r\nBcc: x@evil.com", "text": "t"});
        assert!(render(&spec(), &input).is_err());
    }

    #[test]
    fn only_plain_addresses_are_accepted() {
        for good in ["a@example.com", "first.last+tag@sub.example.co.uk", "x_y-z@a-b.example"] {
            assert_eq!(address_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "a",
            "@example.com",
            "a@",
            "a@example",
            "a@@example.com",
            "a@b@example.com",
            "\"a b\"@example.com",
            "A <a@example.com>",
            "a@example.com>",
            "a.@example.com",
            ".a@example.com",
            "a..b@example.com",
            "a@-x.example.com",
            "a@x-.example.com",
            "a@example..com",
            "a@[127.0.0.1]",
            "ä@example.com",
            "a@exämple.com",
            "a b@example.com",
            "a@example.com ",
        ] {
            assert!(address_problem(bad).is_some(), "{bad:?} was accepted");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(address_problem(&long).is_some());
        let input = json!({"to": ["ok@example.com", "not an address"], "text": "t"});
        let err = render(&spec(), &input).unwrap_err();
        assert!(err.to_string().starts_with("`to` can't be used in the email"), "{err}");
    }

    #[test]
    fn recipients_and_size_are_capped() {
        let many: Vec<String> = (0..=MAX_RECIPIENTS).map(|i| format!("u{i}@example.com")).collect();
        let err = render(&spec(), &json!({"to": many, "text": "t"})).unwrap_err();
        assert!(err.to_string().contains("101 recipients; at most 100"), "{err}");
        let err = render(&spec(), &json!({"text": "t"})).unwrap_err();
        assert!(err.to_string().contains("no recipient"), "{err}");
        let big = "x".repeat(MAX_MESSAGE_BYTES);
        let err = render(&spec(), &json!({"to": "a@example.com", "text": big})).unwrap_err();
        assert!(err.to_string().contains("at most 5242880 are allowed"), "{err}");
    }

    #[test]
    fn long_recipient_lists_are_folded() {
        let to: Vec<String> = (0..10).map(|i| format!("recipient{i}@example.com")).collect();
        let mail = render(&spec(), &json!({"to": to, "text": "t"})).unwrap();
        let text = String::from_utf8(mail.format(&stamp())).unwrap();
        assert!(text.lines().all(|l| l.len() <= 78), "{text}");
        assert!(
            text.contains("recipient2@example.com,\r\n recipient3@example.com,"),
            "{text}"
        );
    }
}
