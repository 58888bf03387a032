//! `smtp:` actions against a real SMTP server on loopback (`tests/smtp/server.py`, PyPI
//! `aiosmtpd`) that requires AUTH and records every delivered message as received.
//!
//! They run when `aiosmtpd` is importable, and must when `PORTCULLIS_SMTP_TESTS=1` (as
//! `.ci/run` sets it); otherwise they say they are skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fixtures::{AGENT, BASIC_USER, CONFIG, forbidden_spellings};
use crate::harness::{Env, Gateway, KillOnDrop, random_secret};

const SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/smtp/server.py");

const ACTION: &str = r#"
name: email.send
description: Send an email from the support mailbox
input:
  type: object
  required: [to, subject, text]
  properties:
    to: {type: array, minItems: 1, items: {type: string, format: email}}
    cc: {type: array, items: {type: string, format: email}}
    bcc: {type: array, items: {type: string, format: email}}
    subject: {type: string, maxLength: 200}
    text: {type: string}
    html: {type: string}
smtp:
  server: 127.0.0.1
  port: SMTP_PORT
  tls: none
  from: support@example.com
  to: "{to}"
  cc: "{cc}"
  bcc: "{bcc}"
  subject: "{subject}"
  text: "{text}"
  html: "{html}"
credential: mail
response:
  allow: [email]
"#;

const POLICY: &str = r#"
@id("mail-internal")
permit (principal == Agent::"support-bot", action == Action::"email.send", resource)
when {
  ["example.com"].containsAll(context.derived.to.domains) &&
  (!(context.input has cc) ||
   (context.derived has cc && ["example.com"].containsAll(context.derived.cc.domains))) &&
  (!(context.input has bcc) ||
   (context.derived has bcc && ["example.com"].containsAll(context.derived.bcc.domains)))
};

@id("mail-partner")
@hold("mail to partner.org needs a person's approval")
permit (principal == Agent::"support-bot", action == Action::"email.send", resource)
when {
  !(["example.com"].containsAll(context.derived.to.domains)) &&
  ["example.com", "partner.org"].containsAll(context.derived.to.domains) &&
  (!(context.input has cc) ||
   (context.derived has cc && ["example.com"].containsAll(context.derived.cc.domains))) &&
  (!(context.input has bcc) ||
   (context.derived has bcc && ["example.com"].containsAll(context.derived.bcc.domains)))
};
"#;

/// The SMTP server process and the directory its deliveries are written to.
struct SmtpServer {
    _child: KillOnDrop,
    port: u16,
    out: PathBuf,
}

impl SmtpServer {
    /// `None` (after saying so) when aiosmtpd is missing and the tests are not required.
    fn start(dir: &Path, password: &str) -> Option<Self> {
        Self::start_with(dir, password, &[])
    }

    /// [`SmtpServer::start`] with extra arguments (`--starttls CERT KEY`, `--implicit CERT KEY`).
    fn start_with(dir: &Path, password: &str, extra: &[&Path]) -> Option<Self> {
        let required = std::env::var("PORTCULLIS_SMTP_TESTS").is_ok_and(|v| v == "1");
        let importable = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !importable {
            assert!(
                !required,
                "PORTCULLIS_SMTP_TESTS=1 but aiosmtpd is not importable (pip install -r tests/smtp/requirements.txt)"
            );
            eprintln!("skipped: aiosmtpd is not installed (pip install -r tests/smtp/requirements.txt)");
            return None;
        }
        let out = dir.join("smtp-out");
        std::fs::create_dir_all(&out).expect("mkdir");
        let port_file = dir.join("smtp.port");
        let child = Command::new("python3")
            .arg(SERVER)
            .arg(&port_file)
            .arg(&out)
            .arg(BASIC_USER)
            .arg(password)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SMTP server");
        let child = KillOnDrop(child);
        let deadline = Instant::now() + Duration::from_secs(120);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                break p;
            }
            assert!(Instant::now() < deadline, "the SMTP server did not come up");
            std::thread::sleep(Duration::from_millis(50));
        };
        Some(Self {
            _child: child,
            port,
            out,
        })
    }

    /// Every delivered message, in order: `{"mail_from", "rcpt_tos", "data"}`.
    fn delivered(&self) -> Vec<Value> {
        let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.out)
            .expect("read the deliveries")
            .filter_map(|e| {
                let path = e.ok()?.path();
                let n = path.file_stem()?.to_str()?.parse().ok()?;
                (path.extension()? == "json").then_some((n, path))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, p)| serde_json::from_str(&std::fs::read_to_string(p).expect("read")).expect("json"))
            .collect()
    }
}

struct World {
    env: Env,
    smtp: SmtpServer,
    gateway: Gateway,
    token: String,
    password: String,
}

/// A gateway with the `email.send` action, whose credential holds `stored` while the server
/// expects `password`.
fn world_with(stored: Option<&str>) -> Option<World> {
    world_of(ACTION, POLICY, stored)
}

/// [`world_with`] for another `email.send` action and policy.
fn world_of(action: &str, policy: &str, stored: Option<&str>) -> Option<World> {
    let env = Env::new();
    let password = random_secret("smtp");
    let smtp = SmtpServer::start(env.dir.path(), &password)?;
    env.write(
        "actions/email.yaml",
        &action.replace("SMTP_PORT", &smtp.port.to_string()),
    );
    env.write("policies/mail.cedar", policy);
    let config = CONFIG.replace(
        "credentials:\n",
        &format!("credentials:\n  mail:\n    kind: basic\n    username: {BASIC_USER}\n    secret: mail_password\n"),
    );
    env.write("portcullis.yaml", &config);
    env.set_secret("mail_password", stored.unwrap_or(&password));
    let token = env.add_agent(AGENT);
    let gateway = env.serve();
    Some(World {
        env,
        smtp,
        gateway,
        token,
        password,
    })
}

fn world() -> Option<World> {
    world_with(None)
}

impl World {
    fn send(&self, input: Value) -> crate::http::Response {
        self.gateway
            .post_intent(&self.token, &json!({"action": "email.send", "input": input}))
    }

    /// No spelling of the server password in the agent's response, the gateway's log or the
    /// audit log.
    fn assert_password_kept(&self, response: &str) {
        let audit = serde_json::to_string(&self.env.audit_tail(50)).expect("json");
        let log = self.gateway.log();
        let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
        let mut spellings = forbidden_spellings(&self.password);
        spellings.push(b64(&format!("\0{BASIC_USER}\0{}", self.password)));
        for s in spellings {
            assert!(!response.contains(&s), "the response leaks {s}: {response}");
            assert!(!log.contains(&s), "the log leaks {s}");
            assert!(!audit.contains(&s), "the audit log leaks {s}");
        }
    }
}

/// The message's header lines (unfolded) and body.
fn split_message(raw: &str) -> (Vec<(String, String)>, String) {
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers and body");
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            headers.last_mut().expect("a header to continue").1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.to_owned(), value.trim_start().to_owned()));
        }
    }
    (headers, body.to_owned())
}

#[test]
fn a_permitted_email_is_delivered_with_exactly_the_expected_headers_and_body() {
    let Some(w) = world() else { return };
    let r = w.send(json!({
        "to": ["alice@example.com", "bob@example.com"],
        "cc": ["carol@example.com"],
        "bcc": ["dave@example.com"],
        "subject": "Quarterly report",
        "text": "Hello,\n.\nthe numbers are in.\n",
    }));
    let body = r.json();
    assert_eq!(body["status"], "executed", "{body}");
    let result = &body["result"]["body"];
    assert_eq!(result["status"], "sent", "{body}");
    assert_eq!(
        result["accepted"],
        json!([
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com"
        ])
    );
    assert_eq!(result["rejected"], json!([]));

    let delivered = w.smtp.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    let m = &delivered[0];
    assert_eq!(m["mail_from"], "support@example.com");
    assert_eq!(
        m["rcpt_tos"],
        json!([
            "alice@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com"
        ]),
        "bcc is in the envelope"
    );
    let (headers, text) = split_message(m["data"].as_str().unwrap());
    let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Date",
            "Message-ID",
            "From",
            "To",
            "Cc",
            "Subject",
            "MIME-Version",
            "Content-Type",
            "Content-Transfer-Encoding"
        ],
        "exactly these headers, and no Bcc"
    );
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str()).unwrap();
    assert_eq!(get("From"), "support@example.com");
    assert_eq!(get("To"), "alice@example.com, bob@example.com");
    assert_eq!(get("Cc"), "carol@example.com");
    assert_eq!(get("Subject"), "Quarterly report");
    assert_eq!(get("MIME-Version"), "1.0");
    assert_eq!(get("Content-Type"), "text/plain; charset=utf-8");
    assert_eq!(get("Content-Transfer-Encoding"), "7bit");
    assert_eq!(get("Message-ID"), result["message_id"].as_str().unwrap());
    assert!(get("Message-ID").ends_with("@example.com>"));
    assert!(
        !m["data"].as_str().unwrap().contains("dave@"),
        "bcc never in the message"
    );
    assert_eq!(
        text, "Hello,\r\n.\r\nthe numbers are in.\r\n",
        "dot-stuffing undone by the server"
    );
    w.assert_password_kept(&r.raw);
}

/// The sender from the agent's input (`from: "{from}"`): policy sees it, the gateway checks it
/// like a header, and it is both the envelope sender and the `From` header.
#[test]
fn a_sender_from_input_is_checked_and_delivered_as_given() {
    let action = ACTION
        .replace("  from: support@example.com\n", "  from: \"{from}\"\n")
        .replace(
            "  required: [to, subject, text]\n",
            "  required: [from, to, subject, text]\n",
        )
        // A plain string, so that the gateway's own check (not the schema's `format`) is shown.
        .replace(
            "  properties:\n",
            "  properties:\n    from: {type: string, maxLength: 254}\n",
        );
    assert!(action.contains("from: \"{from}\"") && action.contains("    from: {type: string"));
    let policy = format!(
        "{POLICY}\n@id(\"send-as-example-com-only\")\nforbid (principal, action == Action::\"email.send\", resource)\nwhen {{ !(context.input.from like \"*@example.com\") }};\n"
    );
    let Some(w) = world_of(&action, &policy, None) else {
        return;
    };
    let r = w.send(json!({"from": "sales@example.com", "to": ["alice@example.com"], "subject": "s", "text": "t"}));
    let body = r.json();
    assert_eq!(body["status"], "executed", "{body}");
    let delivered = w.smtp.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["mail_from"], "sales@example.com");
    let (headers, _) = split_message(delivered[0]["data"].as_str().unwrap());
    let froms: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "From")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(froms, ["sales@example.com"]);

    // Policy sees the sender.
    let r = w.send(json!({"from": "ceo@evil.com", "to": ["alice@example.com"], "subject": "s", "text": "t"}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["status"], "denied");
    // A line break can't smuggle a header in through the sender, nor can a second address.
    for from in [
        "sales@example.com\r\nBcc: eve@evil.com",
        "sales@example.com\nX-Injected: 1",
        "sales@example.com, eve@evil.com",
    ] {
        let r = w.send(json!({"from": from, "to": ["alice@example.com"], "subject": "s", "text": "t"}));
        assert_eq!(r.status, 400, "{from:?}: {}", r.text());
        assert!(
            r.json().to_string().contains("`from` can't be used in the email"),
            "{from:?}: {}",
            r.text()
        );
    }
    assert_eq!(w.smtp.delivered().len(), 1, "nothing more was sent");
    w.assert_password_kept(&r.raw);
}

#[test]
fn text_and_html_bodies_arrive_as_an_alternative() {
    let Some(w) = world() else { return };
    let r = w.send(json!({
        "to": ["alice@example.com"], "subject": "Grüße", "text": "plain", "html": "<p>rich</p>",
    }));
    assert_eq!(r.json()["status"], "executed", "{}", r.text());
    let delivered = w.smtp.delivered();
    let data = delivered[0]["data"].as_str().unwrap();
    let (headers, body) = split_message(data);
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(get("Subject"), "=?utf-8?B?R3LDvMOfZQ==?=");
    let ct = get("Content-Type");
    let boundary = ct
        .strip_prefix("multipart/alternative; boundary=\"")
        .and_then(|b| b.strip_suffix('"'))
        .unwrap();
    assert_eq!(
        body,
        format!(
            "--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\nplain\r\n\
             --{boundary}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n<p>rich</p>\r\n\
             --{boundary}--\r\n"
        )
    );
}

#[test]
fn header_injection_is_invalid_input_and_nothing_is_sent() {
    let Some(w) = world() else { return };
    for subject in [
        "Hi\r\nBcc: eve@evil.com",
        "Hi\nX-Injected: 1",
        "Hi\rthere",
        "nul\u{0}byte",
    ] {
        let r = w.send(json!({"to": ["alice@example.com"], "subject": subject, "text": "t"}));
        assert_eq!(r.status, 400, "{subject:?}: {}", r.text());
        let body = r.json();
        assert!(
            body.to_string().contains("`subject` can't be used in the email"),
            "{body}"
        );
    }
    let r = w.send(json!({"to": ["alice@example.com>\r\nBcc: eve@evil.com"], "subject": "s", "text": "t"}));
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(w.smtp.delivered().is_empty(), "nothing was sent");
}

#[test]
fn recipients_outside_the_allowed_domains_are_denied_or_held_and_nothing_is_sent() {
    let Some(w) = world() else { return };
    let r = w.send(json!({"to": ["alice@example.com"], "bcc": ["eve@evil.com"], "subject": "s", "text": "t"}));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["status"], "denied");
    let r = w.send(json!({"to": ["mallory@evil.com"], "subject": "s", "text": "t"}));
    assert_eq!(r.status, 403, "{}", r.text());
    let r = w.send(json!({"to": ["pat@partner.org"], "subject": "s", "text": "t"}));
    assert_eq!(r.status, 202, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], "pending_approval", "{body}");
    assert!(
        body.to_string().contains("partner.org needs a person's approval"),
        "{body}"
    );
    assert!(w.smtp.delivered().is_empty(), "nothing was sent");
}

#[test]
fn a_wrong_password_fails_with_a_generic_error_and_leaks_nothing() {
    let wrong = random_secret("wrong");
    let Some(mut w) = world_with(Some(&wrong)) else { return };
    let r = w.send(json!({"to": ["alice@example.com"], "subject": "s", "text": "t"}));
    let body = r.json();
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(
        body["error"],
        "the mail server refused the gateway's login (SMTP reply code 535); nothing was sent"
    );
    assert!(w.smtp.delivered().is_empty());
    // The server echoed the password it was given in its reply: the stored one must not
    // appear anywhere either.
    w.assert_password_kept(&r.raw);
    w.password = wrong;
    w.assert_password_kept(&r.raw);
}

#[test]
fn refused_recipients_are_reported_and_only_the_accepted_get_the_message() {
    let Some(w) = world() else { return };
    let r = w.send(json!({"to": ["reject@example.com"], "subject": "s", "text": "t"}));
    let body = r.json();
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(
        body["error"],
        "the mail server refused every recipient (SMTP reply code 550); nothing was sent"
    );
    assert!(w.smtp.delivered().is_empty());

    let r = w.send(json!({"to": ["alice@example.com", "reject@example.com"], "subject": "s", "text": "t"}));
    let body = r.json();
    assert_eq!(body["status"], "executed", "{body}");
    assert_eq!(body["result"]["body"]["accepted"], json!(["alice@example.com"]));
    assert_eq!(
        body["result"]["body"]["rejected"],
        json!([{"address": "reject@example.com", "code": 550}])
    );
    let delivered = w.smtp.delivered();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["rcpt_tos"], json!(["alice@example.com"]));

    let r = w.send(json!({"to": ["alice@example.com"], "subject": "FAIL-DATA", "text": "t"}));
    let body = r.json();
    assert_eq!(
        body["error"], "the mail server refused the message (SMTP reply code 554); nothing was sent",
        "{body}"
    );
    w.assert_password_kept(&r.raw);
}

#[test]
fn a_dry_run_shows_the_message_and_redacts_the_password() {
    let Some(w) = world() else { return };
    let r = w.gateway.post_intent(
        &w.token,
        &json!({"action": "email.send", "dry_run": true,
                "input": {"to": ["alice@example.com"], "bcc": ["dave@example.com"], "subject": "s", "text": "t"}}),
    );
    let body = r.json();
    assert_eq!(body["status"], "dry_run", "{body}");
    let request = &body["request"];
    assert_eq!(request["method"], "SMTP");
    assert_eq!(request["headers"]["to"], "alice@example.com");
    assert!(request["headers"].get("bcc").is_none(), "{request}");
    assert_eq!(
        request["body"]["envelope"]["to"],
        json!(["alice@example.com", "dave@example.com"])
    );
    assert_eq!(
        request["body"]["auth"],
        json!({"username": BASIC_USER, "password": "<redacted>"})
    );
    assert!(w.smtp.delivered().is_empty());
    w.assert_password_kept(&r.raw);
}

/// `check` refuses an `smtp:` action whose credential is not a `basic` one (the SMTP login
/// needs a user name and a password), naming the action file and line.
#[test]
fn check_refuses_an_smtp_credential_that_is_not_basic() {
    let env = Env::new();
    env.write("actions/email.yaml", &ACTION.replace("SMTP_PORT", "2525"));
    env.write("policies/mail.cedar", POLICY);
    env.write(
        "portcullis.yaml",
        &CONFIG.replace(
            "credentials:\n",
            "credentials:\n  mail:\n    kind: bearer\n    secret: mail_password\n",
        ),
    );
    let out = env.cli(&["check"], None);
    assert_eq!(out.code, Some(1), "{out:?}");
    let line = ACTION
        .lines()
        .position(|l| l.starts_with("credential:"))
        .expect("credential line")
        + 1;
    assert!(
        out.stderr.contains(&format!(
            "email.yaml:{line}: action `email.send` sends mail, so its credential `mail` must be of kind `basic`"
        )),
        "{out:?}"
    );
}

/// A private CA and a certificate for 127.0.0.1 it signed, made with `openssl`: returns the
/// CA's PEM and the server's certificate and key files.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl {args:?}");
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=Portcullis test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "mail.key",
        "-out",
        "mail.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("write");
    run(&[
        "x509",
        "-req",
        "-in",
        "mail.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "mail.pem",
    ]);
    (dir.join("ca.pem"), dir.join("mail.pem"), dir.join("mail.key"))
}

/// Mail over STARTTLS (AUTH only once encrypted) and over implicit TLS, to a server whose
/// certificate comes from a private CA the operator adds with `egress.extra_roots`; without
/// it, the certificate is refused and nothing is sent.
#[test]
fn starttls_and_implicit_tls_verify_the_server_with_the_operators_extra_roots() {
    for (mode, tls) in [("--starttls", "starttls"), ("--implicit", "implicit")] {
        let env = Env::new();
        let password = random_secret("smtp");
        let (ca, cert, key) = private_ca(env.dir.path());
        let Some(smtp) = SmtpServer::start_with(env.dir.path(), &password, &[Path::new(mode), &cert, &key]) else {
            return;
        };
        env.write(
            "actions/email.yaml",
            &ACTION
                .replace("SMTP_PORT", &smtp.port.to_string())
                .replace("tls: none", &format!("tls: {tls}")),
        );
        env.write("policies/mail.cedar", POLICY);
        let credentials =
            format!("credentials:\n  mail:\n    kind: basic\n    username: {BASIC_USER}\n    secret: mail_password\n");
        let with_roots = CONFIG
            .replace("credentials:\n", &credentials)
            .replace("egress:\n", &format!("egress:\n  extra_roots: {}\n", ca.display()));
        let input = json!({"to": ["ops@example.com"], "subject": format!("Over {tls}"), "text": "Encrypted."});

        // Without the CA, the server's certificate is not trusted: nothing is sent.
        env.write("portcullis.yaml", &CONFIG.replace("credentials:\n", &credentials));
        env.set_secret("mail_password", &password);
        let token = env.add_agent(AGENT);
        let gateway = env.serve();
        let r = gateway.post_intent(&token, &json!({"action": "email.send", "input": input}));
        assert_eq!(r.json()["status"], "failed", "{mode}: {}", r.text());
        assert!(
            smtp.delivered().is_empty(),
            "{mode}: delivered over an untrusted certificate"
        );
        drop(gateway);

        env.write("portcullis.yaml", &with_roots);
        let gateway = env.serve();
        let r = gateway.post_intent(&token, &json!({"action": "email.send", "input": input}));
        assert_eq!(r.json()["status"], "executed", "{mode}: {}", r.text());
        let delivered = smtp.delivered();
        assert_eq!(delivered.len(), 1, "{mode}");
        assert!(
            delivered[0]["data"]
                .as_str()
                .expect("data")
                .contains(&format!("Subject: Over {tls}")),
            "{mode}: {delivered:?}"
        );
        assert!(!gateway.log().contains(&password), "{mode}");
    }
}
