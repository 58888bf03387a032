//! A small SMTP client (RFC 5321) for `smtp:` actions: EHLO, STARTTLS or implicit TLS,
//! AUTH PLAIN/LOGIN, one message, QUIT.
//!
//! It is written here rather than taken from a mail crate so that the connection goes through
//! the egress guard like HTTP: the server's name is resolved and every address checked, and the
//! client connects to the checked address (pinned), with the egress timeouts. Plain text
//! (`tls: none`) is refused unless the address is not public (loopback or an `egress.allow`
//! network), so a password never crosses the internet unencrypted; `starttls` fails if the
//! server does not offer it, and any bytes the server sent ahead of the TLS handshake are
//! refused (the STARTTLS command-injection attack).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use portcullis_catalog::smtp::SmtpTls;
use portcullis_core::RawResponse;

use crate::error::{ExecError, SmtpError};
use crate::guard::Guard;
use crate::mail::Stamp;
use crate::net::forbidden_reason;
use crate::prepare::PreparedMail;

/// The longest reply line accepted, and the most lines in one reply.
const MAX_LINE: usize = 2048;
const MAX_LINES: usize = 64;

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    fn io(&mut self) -> &mut dyn Io {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.as_mut(),
        }
    }
}

struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join(" / ")
    }

    fn positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

struct Session {
    stream: Option<Stream>,
    buffer: Vec<u8>,
    host: String,
}

/// Sends a prepared mail through `guard`, within `connect_timeout` to connect and `timeout`
/// for the whole exchange.
pub(crate) async fn send(
    guard: &Guard,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    timeout: Duration,
    prepared: PreparedMail,
) -> Result<RawResponse, ExecError> {
    let exchange = async {
        let addr = resolve(guard, &prepared, connect_timeout).await?;
        let mut session = connect(&prepared, addr, tls, connect_timeout).await?;
        let result = session.deliver(&prepared).await;
        session.quit().await;
        result
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(ExecError::Timeout))
}

/// The checked address to connect to: the first of the guard's checked answer.
async fn resolve(guard: &Guard, prepared: &PreparedMail, connect_timeout: Duration) -> Result<SocketAddr, ExecError> {
    let spec = &prepared.spec;
    let host = spec.server.trim_start_matches('[').trim_end_matches(']');
    let ip = if let Ok(ip) = host.parse::<IpAddr>() {
        if let Some(reason) = guard.refusal(ip) {
            return Err(ExecError::EgressDenied {
                host: spec.server.clone(),
                reason: reason.to_owned(),
            });
        }
        ip
    } else {
        let lookup = guard.resolve(host);
        let addrs = tokio::time::timeout(connect_timeout, lookup)
            .await
            .map_err(|_| ExecError::Timeout)?
            .map_err(|e| e.to_exec_error())?;
        addrs.first().map(SocketAddr::ip).ok_or_else(|| ExecError::Resolve {
            host: spec.server.clone(),
        })?
    };
    if spec.tls == SmtpTls::None && forbidden_reason(ip).is_none() {
        return Err(ExecError::EgressDenied {
            host: spec.server.clone(),
            reason: "`tls: none` is only allowed to loopback or `egress.allow` networks".into(),
        });
    }
    Ok(SocketAddr::new(ip, spec.port))
}

async fn connect(
    prepared: &PreparedMail,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<Session, ExecError> {
    let host = prepared.spec.server.clone();
    let refused = || ExecError::Connect { host: host.clone() };
    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ExecError::Timeout)?
        .map_err(|_| refused())?;
    let local = tcp.local_addr().map_err(|_| refused())?;
    let stream = match prepared.spec.tls {
        SmtpTls::Implicit => Stream::Tls(Box::new(
            handshake(tcp, &host, Arc::clone(&tls), connect_timeout).await?,
        )),
        SmtpTls::Starttls | SmtpTls::None => Stream::Plain(tcp),
    };
    let mut session = Session {
        stream: Some(stream),
        buffer: Vec::new(),
        host,
    };
    session.expect("greeting", 220).await?;
    let hello = match local.ip() {
        IpAddr::V4(ip) => format!("[{ip}]"),
        IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    };
    let mut caps = session.ehlo(&hello).await?;
    if prepared.spec.tls == SmtpTls::Starttls {
        if !caps.iter().any(|c| c.eq_ignore_ascii_case("STARTTLS")) {
            return Err(SmtpError::new("starttls", None, "the server does not offer STARTTLS").into());
        }
        session.command("STARTTLS", "starttls", &[220]).await?;
        if !session.buffer.is_empty() {
            return Err(SmtpError::new("starttls", None, "the server sent data before the TLS handshake").into());
        }
        let Some(Stream::Plain(tcp)) = session.stream.take() else {
            return Err(SmtpError::new("starttls", None, "the connection is already encrypted").into());
        };
        session.stream = Some(Stream::Tls(Box::new(
            handshake(tcp, &session.host, tls, connect_timeout).await?,
        )));
        caps = session.ehlo(&hello).await?;
    }
    if let Some(c) = &prepared.credential
        && let Some((username, password)) = c.login()
    {
        session.auth(&caps, username, password).await?;
    }
    Ok(session)
}

async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ExecError> {
    let name = host.trim_start_matches('[').trim_end_matches(']');
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned())
        .map_err(|_| ExecError::Connect { host: host.to_owned() })?;
    let connector = tokio_rustls::TlsConnector::from(config);
    match tokio::time::timeout(connect_timeout, connector.connect(server_name, tcp)).await {
        Err(_) => Err(ExecError::Timeout),
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            tracing::debug!(host, error = %e, "SMTP TLS handshake failed");
            Err(ExecError::Connect { host: host.to_owned() })
        }
    }
}

impl Session {
    async fn deliver(&mut self, prepared: &PreparedMail) -> Result<RawResponse, ExecError> {
        let mail = &prepared.mail;
        self.command(&format!("MAIL FROM:<{}>", mail.from), "mail from", &[250])
            .await?;
        let mut accepted = Vec::new();
        let mut rejected = Vec::new();
        let mut last_refusal = None;
        for rcpt in mail.recipients() {
            self.write(&format!("RCPT TO:<{rcpt}>\r\n")).await?;
            let reply = self.read_reply("rcpt to").await?;
            if matches!(reply.code, 250 | 251) {
                accepted.push(rcpt.to_owned());
            } else {
                tracing::info!(host = %self.host, code = reply.code, reply = %reply.text(), "SMTP server refused a recipient");
                rejected.push(json!({"address": rcpt, "code": reply.code}));
                last_refusal = Some(reply);
            }
        }
        if accepted.is_empty() {
            let reply = last_refusal.unwrap_or(Reply {
                code: 554,
                lines: Vec::new(),
            });
            return Err(SmtpError::new("rcpt to", Some(reply.code), &reply.text()).into());
        }
        self.command("DATA", "data", &[354]).await?;
        let stamp = Stamp::new(&mail.from);
        let mut data = dot_stuff(&mail.format(&stamp));
        data.extend_from_slice(b".\r\n");
        self.write_bytes(&data).await?;
        let reply = self.read_reply("data").await?;
        if reply.code != 250 {
            return Err(SmtpError::new("data", Some(reply.code), &reply.text()).into());
        }
        let body = json!({
            "status": "sent",
            "message_id": stamp.message_id,
            "accepted": accepted,
            "rejected": rejected,
        });
        Ok(RawResponse {
            status: reply.code,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(&body).unwrap_or_default(),
        })
    }

    async fn ehlo(&mut self, hello: &str) -> Result<Vec<String>, ExecError> {
        self.write(&format!("EHLO {hello}\r\n")).await?;
        let reply = self.read_reply("ehlo").await?;
        if reply.code != 250 {
            return Err(SmtpError::new("ehlo", Some(reply.code), &reply.text()).into());
        }
        Ok(reply.lines.into_iter().skip(1).collect())
    }

    async fn auth(&mut self, caps: &[String], username: &str, password: &str) -> Result<(), ExecError> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mechanisms: Vec<String> = caps
            .iter()
            .filter_map(|c| {
                let upper = c.to_ascii_uppercase();
                upper
                    .strip_prefix("AUTH")
                    .map(|m| m.trim_start_matches([' ', '=']).to_owned())
            })
            .flat_map(|m| m.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        let reply = if mechanisms.iter().any(|m| m == "PLAIN") {
            self.write(&format!("AUTH PLAIN {}\r\n", b64(&format!("\0{username}\0{password}"))))
                .await?;
            self.read_reply("auth").await?
        } else if mechanisms.iter().any(|m| m == "LOGIN") {
            self.command("AUTH LOGIN", "auth", &[334]).await?;
            self.command(&b64(username), "auth", &[334]).await?;
            self.write(&format!("{}\r\n", b64(password))).await?;
            self.read_reply("auth").await?
        } else {
            return Err(SmtpError::new("auth", None, "the server offers neither AUTH PLAIN nor AUTH LOGIN").into());
        };
        if reply.code != 235 {
            return Err(SmtpError::new("auth", Some(reply.code), &reply.text()).into());
        }
        Ok(())
    }

    async fn quit(&mut self) {
        if self.write("QUIT\r\n").await.is_ok() {
            let _ = self.read_reply("quit").await;
        }
    }

    /// Sends `line` and requires one of `codes`.
    async fn command(&mut self, line: &str, stage: &'static str, codes: &[u16]) -> Result<Reply, ExecError> {
        self.write(&format!("{line}\r\n")).await?;
        let reply = self.read_reply(stage).await?;
        if !codes.contains(&reply.code) {
            return Err(SmtpError::new(stage, Some(reply.code), &reply.text()).into());
        }
        Ok(reply)
    }

    async fn expect(&mut self, stage: &'static str, code: u16) -> Result<Reply, ExecError> {
        let reply = self.read_reply(stage).await?;
        if reply.code != code || !reply.positive() {
            return Err(SmtpError::new(stage, Some(reply.code), &reply.text()).into());
        }
        Ok(reply)
    }

    async fn write(&mut self, line: &str) -> Result<(), ExecError> {
        self.write_bytes(line.as_bytes()).await
    }

    async fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), ExecError> {
        let io = self.io()?;
        io.write_all(bytes).await.map_err(|e| lost(&e))?;
        io.flush().await.map_err(|e| lost(&e))
    }

    fn io(&mut self) -> Result<&mut dyn Io, ExecError> {
        self.stream
            .as_mut()
            .map(Stream::io)
            .ok_or_else(|| ExecError::Upstream("the SMTP connection is closed".into()))
    }

    async fn read_line(&mut self) -> Result<String, ExecError> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buffer.drain(..end + 2).take(end).collect();
                return Ok(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buffer.len() > MAX_LINE {
                return Err(SmtpError::new("reply", None, "a reply line is too long").into());
            }
            let mut chunk = [0u8; 1024];
            let n = self.io()?.read(&mut chunk).await.map_err(|e| lost(&e))?;
            if n == 0 {
                return Err(ExecError::Upstream("the SMTP server closed the connection".into()));
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    /// One (possibly multi-line) reply: `250-first`, …, `250 last`.
    async fn read_reply(&mut self, stage: &'static str) -> Result<Reply, ExecError> {
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| SmtpError::new(stage, None, "the server's reply is not SMTP"))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or_default().to_owned());
            if !more {
                return Ok(Reply { code, lines });
            }
            if lines.len() >= MAX_LINES {
                return Err(SmtpError::new(stage, Some(code), "the server's reply has too many lines").into());
            }
        }
    }
}

fn lost(e: &std::io::Error) -> ExecError {
    ExecError::Upstream(format!("SMTP connection lost: {}", e.kind()))
}

/// The message with a `.` doubled at the start of every line (RFC 5321 §4.5.2), ending CRLF.
fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut at_line_start = true;
    for &b in message {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_starting_with_a_dot_are_stuffed() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n.\r\n..c"), b"..a\r\nb\r\n..\r\n...c\r\n");
    }
}
