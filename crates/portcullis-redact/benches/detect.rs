//! Throughput of the secret and personal-data detector on realistic mixed JSON.
//!
//! `cargo bench -p portcullis-redact --bench detect` prints, measured in the same run and
//! interleaved so that a noisy shared machine affects them alike:
//! - `serde_json::from_str::<Value>` on the text, the baseline;
//! - one Aho-Corasick pass over every builtin rule's keywords, the floor of any pre-filter;
//! - `Detector::find` on the raw JSON text;
//! - `Detector::redact_json` with `Treatment::Mask` on the parsed value;
//! - `Detector::scan_json` on the parsed value;
//!
//! each as the best of several rounds, with its ratio to the baseline, and the number of
//! findings so that a detector that finds nothing does not pass for a fast one.
//!
//! Pass a number of megabytes as the first argument after `--` to change the workload size.

use std::hint::black_box;
use std::time::{Duration, Instant};

use aho_corasick::AhoCorasick;
use portcullis_redact::detect::{Detector, Treatment, builtin_rules};
use serde_json::Value;

/// Workload size when none is given.
const DEFAULT_MEGABYTES: usize = 8;
/// Timed rounds per measurement; the best one is reported.
const ROUNDS: usize = 7;
/// The rules whose windows come from `find`'s scan of digits, not from keywords.
const NUMBER_RULES: &[&str] = &[
    "payment-card",
    "iban",
    "us-ssn",
    "phone-e164",
    "phone-nanp",
    "ipv4",
    "ipv6",
    "phone-uk",
    "phone-fr",
    "phone-de",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let megabytes = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse::<usize>().ok())
        .unwrap_or(DEFAULT_MEGABYTES);
    let text = workload(megabytes * 1_000_000);
    let value: Value = serde_json::from_str(&text)?;
    let detector = Detector::builtin();
    // For a profiler: only `find`, only `redact_json` or only `scan_json`, a few times.
    if std::env::args().any(|arg| arg == "--find-only") {
        for _ in 0..3 {
            black_box(detector.find(&text).len());
        }
        return Ok(());
    }
    if std::env::args().any(|arg| arg == "--scan-json-only") {
        for _ in 0..10 {
            black_box(detector.scan_json(&value).len());
        }
        return Ok(());
    }
    if std::env::args().any(|arg| arg == "--redact-json-only") {
        // Redacting again finds the same texts but the few findings, masked the first time.
        let mut copy = value.clone();
        for _ in 0..10 {
            black_box(detector.redact_json(&mut copy, Treatment::Mask).len());
        }
        return Ok(());
    }
    // For comparison, the keyword pass as Aho-Corasick automata reporting overlapping matches
    // (what `find` did before it searched with Teddy): keywords of rules without `(?i`
    // matched exactly, the others ASCII case-insensitively; one-character keywords and the
    // number rules (found by a scan instead) left out.
    let automata = [true, false].map(|exact| {
        let keywords: Vec<&str> = builtin_rules()
            .filter(|rule| !NUMBER_RULES.contains(&rule.id) && rule.regex.contains("(?i") != exact)
            .flat_map(|rule| rule.keywords.iter().copied())
            .filter(|keyword| keyword.len() > 1)
            .collect();
        AhoCorasick::builder().ascii_case_insensitive(!exact).build(keywords)
    });
    let [Ok(exact), Ok(folded)] = automata else {
        return Err("the keyword automata do not build".into());
    };

    let findings = detector.find(&text);
    let json_findings = detector.redact_json(&mut value.clone(), Treatment::Mask);
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for finding in &findings {
        *counts.entry(&finding.rule_id).or_default() += 1;
    }
    println!(
        "workload: {:.2} MB of mixed JSON, {} records; builtin rules: {}",
        text.len() as f64 / 1e6,
        value.as_array().map_or(0, Vec::len),
        detector.rule_ids().count()
    );
    println!("find: {} findings {counts:?}", findings.len());
    println!(
        "redact_json: {} findings; scan_json: {} findings",
        json_findings.len(),
        detector.scan_json(&value).len()
    );

    let mut best = [Duration::MAX; 5];
    for _ in 0..ROUNDS {
        best[0] = best[0].min(time(|| {
            black_box(serde_json::from_str::<Value>(&text).map(drop).is_ok())
        }));
        best[1] = best[1].min(time(|| {
            black_box(exact.find_overlapping_iter(&text).count() + folded.find_overlapping_iter(&text).count())
        }));
        best[2] = best[2].min(time(|| black_box(detector.find(&text).len())));
        let mut copy = value.clone();
        best[3] = best[3].min(time(|| {
            black_box(detector.redact_json(&mut copy, Treatment::Mask).len())
        }));
        best[4] = best[4].min(time(|| black_box(detector.scan_json(&value).len())));
    }
    let megabytes = text.len() as f64 / 1e6;
    let rate = |d: Duration| megabytes / d.as_secs_f64();
    let baseline = rate(best[0]);
    let names = [
        "serde_json::from_str::<Value> (baseline)",
        "keywords: overlapping aho-corasick (ref.)",
        "Detector::find on the text",
        "Detector::redact_json (Mask) on the value",
        "Detector::scan_json on the value",
    ];
    for (name, duration) in names.iter().zip(best) {
        println!(
            "{name:<44} {:>8.1} MB/s  {:>5.2}x baseline",
            rate(duration),
            rate(duration) / baseline
        );
    }
    Ok(())
}

fn time<T>(f: impl FnOnce() -> T) -> Duration {
    let start = Instant::now();
    black_box(f());
    start.elapsed()
}

/// A JSON array of API-response-like records, at least `size` bytes, the same on every run.
fn workload(size: usize) -> String {
    let mut rng = Rng(0x5EED_CAFE_F00D_0001);
    let mut out = String::with_capacity(size + 4096);
    out.push('[');
    let mut n = 0usize;
    while out.len() < size {
        if n > 0 {
            out.push(',');
        }
        match rng.below(10) {
            0..=2 => github_issue(&mut rng, n, &mut out),
            3..=4 => stripe_charge(&mut rng, n, &mut out),
            5..=6 => user(&mut rng, n, &mut out),
            7..=8 => log_line(&mut rng, n, &mut out),
            _ => release(&mut rng, n, &mut out),
        }
        n += 1;
    }
    out.push(']');
    out
}

const WORDS: &[&str] = &[
    "the",
    "request",
    "fails",
    "when",
    "config",
    "is",
    "missing",
    "a",
    "timeout",
    "after",
    "retry",
    "with",
    "backoff",
    "cache",
    "invalid",
    "panics",
    "on",
    "empty",
    "input",
    "should",
    "return",
    "error",
    "instead",
    "upgrade",
    "dependency",
    "to",
    "fix",
    "build",
    "windows",
    "linux",
    "macOS",
    "docs",
    "typo",
    "in",
    "README",
    "memory",
    "leak",
    "connection",
    "pool",
    "handler",
    "async",
    "runtime",
    "deadlock",
    "under",
    "load",
    "regression",
    "since",
    "release",
    "tests",
    "flaky",
    "CI",
    "pipeline",
    "serializer",
    "field",
    "rename",
];
const NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar",
];
const LABELS: &[&str] = &[
    "bug",
    "enhancement",
    "documentation",
    "good first issue",
    "help wanted",
    "P2",
];

fn github_issue(rng: &mut Rng, n: usize, out: &mut String) {
    let number = 1000 + n;
    let login = rng.pick(NAMES);
    let repo = format!("acme-{}/{}-service", rng.pick(NAMES), rng.pick(WORDS));
    out.push_str(&format!(
        r#"{{"url":"https://api.github.com/repos/{repo}/issues/{number}","repository_url":"https://api.github.com/repos/{repo}","html_url":"https://github.com/{repo}/issues/{number}","id":{},"node_id":"I_kwDOB{}","number":{number},"title":"{}","user":{{"login":"{login}","id":{},"avatar_url":"https://avatars.githubusercontent.com/u/{}?v=4","type":"User","site_admin":false}},"labels":[{{"id":{},"name":"{}","color":"{:06x}","default":true}}],"state":"{}","locked":false,"comments":{},"created_at":"{}","updated_at":"{}","closed_at":null,"author_association":"CONTRIBUTOR","body":"{}","reactions":{{"total_count":{},"+1":{},"-1":0,"heart":{}}}}}"#,
        1_800_000_000 + rng.below(100_000_000),
        rng.alnum(12),
        sentence(rng, 8),
        10_000 + rng.below(90_000_000),
        10_000 + rng.below(90_000_000),
        rng.below(5_000_000_000),
        rng.pick(LABELS),
        rng.below(0xFF_FFFF),
        if rng.below(3) == 0 { "closed" } else { "open" },
        rng.below(40),
        timestamp(rng),
        timestamp(rng),
        issue_body(rng, n),
        rng.below(30),
        rng.below(20),
        rng.below(5),
    ));
}

fn issue_body(rng: &mut Rng, n: usize) -> String {
    let mut body = format!(
        "### Describe the bug\n\n{}.\n\n### To reproduce\n\n```\n$ cargo run --release -- --config ./conf/app.toml\nthread 'main' panicked at src/config.rs:{}:{}:\ncalled `Result::unwrap()` on an `Err` value: Io(Os {{ code: 2, kind: NotFound }})\n```\n\nVersion: {}, commit {}, rustc 1.{}.0, tokio::runtime::Builder. See https://docs.rs/tokio/1.{}.0/tokio/ and #{}.\n\n{}",
        sentence(rng, 20),
        rng.below(400),
        rng.below(80),
        version(rng),
        rng.hex(40),
        70 + rng.below(25),
        30 + rng.below(10),
        rng.below(n + 1),
        sentence(rng, 30),
    );
    // The rare issue in which someone pasted their token.
    if n % 997 == 13 {
        body.push_str("\n\nmy token is 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 sorry");
    }
    body.replace('\n', "\\n").replace('"', "\\\"")
}

fn stripe_charge(rng: &mut Rng, n: usize, out: &mut String) {
    out.push_str(&format!(
        r#"{{"id":"ch_3{}","object":"charge","amount":{},"amount_captured":{},"amount_refunded":0,"balance_transaction":"txn_3{}","billing_details":{{"address":{{"city":"Springfield","country":"US","line1":null,"postal_code":"{:05}","state":"IL"}},"email":null,"name":"{}","phone":null}},"captured":true,"created":{},"currency":"usd","customer":"cus_{}","description":"Subscription update","livemode":false,"metadata":{{"order_id":"{}"}},"outcome":{{"network_status":"approved_by_network","risk_level":"normal","risk_score":{},"seller_message":"Payment complete.","type":"authorized"}},"paid":true,"payment_intent":"pi_3{}","payment_method":"pm_1{}","payment_method_details":{{"card":{{"brand":"visa","checks":{{"address_line1_check":null,"cvc_check":"pass"}},"country":"US","exp_month":{},"exp_year":{},"fingerprint":"{}","funding":"credit","last4":"{:04}","network":"visa"}},"type":"card"}},"receipt_url":"https://pay.stripe.com/receipts/payment/{}","refunded":false,"status":"succeeded"}}"#,
        rng.alnum(24),
        rng.below(100_000),
        rng.below(100_000),
        rng.alnum(24),
        rng.below(100_000),
        rng.pick(NAMES),
        1_600_000_000 + rng.below(100_000_000),
        rng.alnum(14),
        uuid(rng),
        rng.below(100),
        rng.alnum(24),
        rng.alnum(24),
        1 + rng.below(12),
        2025 + rng.below(8),
        rng.alnum(16),
        rng.below(10_000),
        rng.alnum(60),
    ));
    // A card number that leaked into metadata, once in a long while.
    if n % 1499 == 7 {
        out.truncate(out.len() - 1);
        out.push_str(r#","notes":"customer read out 4111 1111 1111 1111 on the phone"}"#);
    }
}

fn user(rng: &mut Rng, n: usize, out: &mut String) {
    let name = rng.pick(NAMES);
    // Most records are already masked upstream; a few are not.
    let (email, phone) = if n % 211 == 5 {
        (
            format!("{name}.{n}@example.com"),
            format!("+1 415 555 {:04}", rng.below(10_000)),
        )
    } else {
        (format!("{}***@***", &name[..1]), "***".to_owned())
    };
    out.push_str(&format!(
        r#"{{"id":"{}","username":"{name}{}","email":"{email}","phone":"{phone}","profile":{{"display_name":"{}","locale":"en-US","timezone":"Europe/Berlin","avatar":"https://cdn.example.net/avatars/{}.png"}},"roles":["member","{}"],"mfa_enabled":{},"login_count":{},"balance":{}.{:02},"last_login":"{}","created_at":"{}"}}"#,
        uuid(rng),
        rng.below(1000),
        sentence(rng, 2),
        rng.hex(32),
        rng.pick(WORDS),
        rng.below(2) == 0,
        rng.below(5000),
        rng.below(10_000),
        rng.below(100),
        timestamp(rng),
        timestamp(rng),
    ));
}

fn log_line(rng: &mut Rng, _n: usize, out: &mut String) {
    let methods = ["GET", "POST", "PUT", "DELETE"];
    let client = if rng.below(40) == 0 {
        // A client address: personal data the detector should report.
        format!("203.0.113.{}", rng.below(255))
    } else {
        "-".to_owned()
    };
    out.push_str(&format!(
        r#"{{"ts":"{}","level":"{}","target":"app::http::server","msg":"{} /api/v1/{}/{} {} {}ms","request_id":"{}","client":"{client}","span":{{"trace_id":"{}","span_id":"{}"}},"fields":{{"status":{},"bytes":{},"duration_ms":{}.{:03},"user_agent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"}}}}"#,
        timestamp(rng),
        ["INFO", "DEBUG", "WARN", "ERROR"][rng.below(4)],
        methods[rng.below(4)],
        rng.pick(WORDS),
        rng.below(100_000),
        [200, 201, 204, 400, 404, 500][rng.below(6)],
        rng.below(2000),
        uuid(rng),
        rng.hex(32),
        rng.hex(16),
        [200, 404, 500][rng.below(3)],
        rng.below(1_000_000),
        rng.below(2000),
        rng.below(1000),
    ));
}

fn release(rng: &mut Rng, _n: usize, out: &mut String) {
    out.push_str(&format!(
        r#"{{"tag_name":"v{}","name":"Release {}","target_commitish":"{}","draft":false,"prerelease":{},"published_at":"{}","tarball_url":"https://api.github.com/repos/acme/app/tarball/v{}","assets":[{{"name":"app-x86_64-unknown-linux-gnu.tar.gz","size":{},"download_count":{},"digest":"sha256:{}"}}],"body":"Changes:\n- {}\n- bump serde to 1.0.{}\n- {}"}}"#,
        version(rng),
        version(rng),
        rng.hex(40),
        rng.below(4) == 0,
        timestamp(rng),
        version(rng),
        rng.below(50_000_000),
        rng.below(100_000),
        rng.hex(64),
        sentence(rng, 6),
        rng.below(250),
        sentence(rng, 9),
    ));
}

fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut out = String::new();
    for i in 0..words {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(rng.pick(WORDS));
    }
    out
}

fn version(rng: &mut Rng) -> String {
    format!("{}.{}.{}", rng.below(5), rng.below(40), rng.below(20))
}

fn timestamp(rng: &mut Rng) -> String {
    format!(
        "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        20 + rng.below(6),
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

fn uuid(rng: &mut Rng) -> String {
    let hex = rng.hex(32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..]
    )
}

/// SplitMix64: small, fast and deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn hex(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16)]))
            .collect()
    }

    fn alnum(&mut self, len: usize) -> String {
        const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..len).map(|_| char::from(ALNUM[self.below(ALNUM.len())])).collect()
    }
}
