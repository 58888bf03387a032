//! Round-trip latency of an MCP `tools/call` through the gateway, against calling the
//! upstream directly.
//!
//! `cargo bench -p portcullis --bench mcp` starts, in this process, a tiny HTTP/1.1
//! upstream on loopback (its own thread and single-threaded runtime, as if it were another
//! process) and a gateway as `portcullis serve` assembles it (`portcullis_engine::check`,
//! [`Gateway::open`] on SQLite in a temporary directory, [`portcullis_server::serve`] on a
//! multi-threaded runtime) whose `github.create_issue` action calls that upstream with a
//! bearer credential from the encrypted store. One client on the main thread, over one
//! keep-alive connection each, then sends, in interleaved rounds so that a noisy shared
//! machine affects both alike:
//! - the baseline: the `POST /repos/acme/widgets/issues` the gateway would send, straight
//!   to the upstream;
//! - a JSON-RPC `tools/call` of `github.create_issue` to `/mcp` over streamable HTTP
//!   (stateless, JSON responses): bearer authentication, strict JSON, schema validation,
//!   the Cedar decision, the durable audit of the decision and of the outcome, credential
//!   injection, the upstream call, projection and redaction of the response.
//!
//! Each call is timed alone, one at a time (latency at low load, not under 1,000 req/s).
//! It prints p50, p99 and p99.9 in µs, the ratio of each to the baseline's and the added
//! latency, with counts that keep a broken run from looking fast: the calls that did not
//! succeed, the upstream hits that carried the injected credential (one per gateway call)
//! and the audit events, whose hash chain is verified at the end. No log subscriber is
//! installed, so log lines cost what a disabled level costs.
//!
//! Pass the number of calls of each kind as the first argument after `--` (default 5000).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use portcullis_core::{AgentId, sha256_hex};
use portcullis_engine::{Gateway, Live};
use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const DEFAULT_CALLS: usize = 5_000;
const ROUNDS: usize = 20;
const WARMUP: usize = 200;
const AGENT: &str = "triage-bot";
const AGENT_TOKEN: &str = "pcl_bench-agent-token-0123456789abcdef";
const UPSTREAM_TOKEN: &str = "ghp_bench0upstream0token0which0is0not0real";
const PROTOCOL: &str = "2025-11-25";
/// The header that tells the upstream a request came from the bench, not the gateway.
const DIRECT_MARK: &str = "x-bench-direct";

const CONFIG: &str = r#"
listen: 127.0.0.1:0
store: sqlite://state.db
master_key: file:MASTER_KEY_PATH
agents:
  triage-bot: {attributes: {team: support}, groups: [triage]}
credentials:
  github: {kind: bearer, secret: github_token}
egress:
  allow: ["127.0.0.1/32"]
actions: ["actions/*.yaml"]
policies: ["policies/*.cedar"]
entities:
  - {type: RepoList, id: allowed}
  - {type: Repo, id: "acme/widgets", parents: [{type: RepoList, id: allowed}]}
  - {type: Repo, id: "acme/docs", parents: [{type: RepoList, id: allowed}]}
"#;

/// `examples/github`, pointed at the upstream on loopback.
const ACTIONS: &str = r#"
name: github.create_issue
description: Create an issue in a GitHub repository
input:
  type: object
  required: [owner, repo, title]
  properties:
    owner: {type: string, pattern: "^[A-Za-z0-9-]{1,39}$"}
    repo:  {type: string, pattern: "^[A-Za-z0-9._-]{1,100}$"}
    title: {type: string, minLength: 1, maxLength: 256}
    body:  {type: string, maxLength: 65536}
    labels:
      type: array
      maxItems: 10
      uniqueItems: true
      items: {type: string, pattern: "^[a-z0-9][a-z0-9._-]{0,49}$"}
resource: {type: Repo, id: "{owner}/{repo}"}
request:
  method: POST
  url: http://127.0.0.1:UPSTREAM_PORT/repos/{owner}/{repo}/issues
  headers:
    Accept: application/vnd.github+json
    User-Agent: portcullis-bench
  body: {title: "{title}", body: "{body}", labels: "{labels}"}
credential: github
response:
  keep: [/number, /html_url, /state]
"#;

const POLICIES: &str = r#"
@id("triage-opens-issues-in-allowed-repos")
permit (principal in AgentGroup::"triage", action == Action::"github.create_issue", resource in RepoList::"allowed");

@id("no-prod-label")
forbid (principal, action == Action::"github.create_issue", resource)
when { context.input has labels && context.input.labels.contains("prod") };

@id("no-secrets-in-issues")
forbid (principal, action == Action::"github.create_issue", resource)
when { context.findings.categories.contains("secret") };
"#;

fn main() -> BenchResult<()> {
    let calls = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(DEFAULT_CALLS);
    let dir = tempfile::tempdir()?;
    let upstream = Upstream::start()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (gateway, port) = runtime.block_on(start_gateway(dir.path(), upstream.port))?;

    let arguments = json!({
        "owner": "acme",
        "repo": "widgets",
        "title": "Request fails with a timeout when the config file is missing",
        "body": "### Describe the bug\n\nThe request fails after a 30 s timeout when `conf/app.toml` is missing.\n\n\
                 ### To reproduce\n\n```\n$ widgets serve --config ./conf/app.toml\n```\n\nVersion 1.4.2 on Linux.",
        "labels": ["bug", "triage"]
    });
    let direct_body = json!({"title": arguments["title"], "body": arguments["body"], "labels": arguments["labels"]});
    let direct_body = direct_body.to_string();
    let direct_headers = format!(
        "content-type: application/json\r\naccept: application/vnd.github+json\r\nuser-agent: portcullis-bench\r\n\
         authorization: Bearer {UPSTREAM_TOKEN}\r\n{DIRECT_MARK}: 1\r\n"
    );
    let mcp_body = |id: usize| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
               "params": {"name": "github.create_issue", "arguments": arguments}})
        .to_string()
    };
    let mcp_headers = format!(
        "content-type: application/json\r\naccept: application/json, text/event-stream\r\n\
         authorization: Bearer {AGENT_TOKEN}\r\nmcp-protocol-version: {PROTOCOL}\r\n"
    );

    let mut direct = Client::connect(upstream.port)?;
    let mut mcp = Client::connect(port)?;
    let sample = mcp.post("/mcp", &mcp_headers, &mcp_body(0))?;
    println!("tools/call answer: {}", String::from_utf8_lossy(&sample.1));
    let mut failed = [0usize; 2];
    let mut samples = [Vec::with_capacity(calls), Vec::with_capacity(calls)];
    let per_round = calls.div_ceil(ROUNDS);
    let mut id = 1;
    for round in 0..=ROUNDS {
        // Round 0 warms up and is not counted.
        let (count, keep) = if round == 0 { (WARMUP, false) } else { (per_round, true) };
        for _ in 0..count {
            let started = Instant::now();
            let answer = direct.post("/repos/acme/widgets/issues", &direct_headers, &direct_body);
            let elapsed = started.elapsed();
            if keep {
                samples[0].push(elapsed);
                failed[0] += usize::from(!answer.is_ok_and(|(status, _)| status == 201));
            }
        }
        for _ in 0..count {
            let body = mcp_body(id);
            id += 1;
            let started = Instant::now();
            let answer = mcp.post("/mcp", &mcp_headers, &body);
            let elapsed = started.elapsed();
            if keep {
                samples[1].push(elapsed);
                failed[1] += usize::from(!answer.is_ok_and(|(status, body)| status == 200 && succeeded(&body)));
            }
        }
    }
    let gateway_calls = id;
    let audit = runtime.block_on(async {
        gateway.store().flush_audit(Duration::from_secs(30)).await;
        gateway.store().verify_audit().await
    })?;

    println!();
    println!(
        "{:<34} {:>7} {:>9} {:>9} {:>9} {:>10} {:>7}",
        "round trip", "calls", "p50 µs", "p99 µs", "p99.9 µs", "p50 ratio", "failed"
    );
    let [base, through] = &mut samples;
    let base = percentiles(base);
    let through = percentiles(through);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (label, p, n, f) in [
        ("POST to the upstream (baseline)", base, per_round * ROUNDS, failed[0]),
        ("MCP tools/call via the gateway", through, per_round * ROUNDS, failed[1]),
    ] {
        println!(
            "{label:<34} {n:>7} {:>9.1} {:>9.1} {:>9.1} {:>10.2} {f:>7}",
            us(p[0]),
            us(p[1]),
            us(p[2]),
            p[0].as_secs_f64() / base[0].as_secs_f64()
        );
    }
    println!(
        "{:<34} {:>7} {:>9.1} {:>9.1} {:>9.1}",
        "added by the gateway",
        "",
        us(through[0].saturating_sub(base[0])),
        us(through[1].saturating_sub(base[1])),
        us(through[2].saturating_sub(base[2]))
    );
    let [direct_hits, gateway_hits, injected] = upstream.counts.each_ref().map(|c| c.load(Ordering::SeqCst));
    let direct_calls = WARMUP + per_round * ROUNDS;
    println!(
        "upstream: {direct_hits} direct requests of {direct_calls} sent; {gateway_hits} from the gateway of \
         {gateway_calls} tool calls, {injected} with the injected credential; audit: {} events, chain {}",
        audit.events,
        if audit.ok { "verified" } else { "BROKEN" }
    );
    stage_means(&gateway);
    let expected = [direct_calls, gateway_calls, gateway_calls];
    if failed != [0, 0] || [direct_hits, gateway_hits, injected] != expected || !audit.ok {
        return Err("some calls failed or did not reach the upstream as expected".into());
    }
    Ok(())
}

/// A successful tool result (`isError: false`) with the projected issue number.
fn succeeded(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v["result"]["isError"] == false && v["result"]["structuredContent"]["number"] == 1347)
}

/// Writes the configuration, opens the gateway with the agent's token and the upstream
/// credential in its store, and serves it on an ephemeral port, as `portcullis serve` does.
async fn start_gateway(dir: &Path, upstream_port: u16) -> BenchResult<(Arc<Gateway>, u16)> {
    let key_path = dir.join("master.key");
    std::fs::write(&key_path, portcullis_secrets::MasterKey::generate_encoded())?;
    let write = |rel: &str, text: &str| -> std::io::Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = text
            .replace("UPSTREAM_PORT", &upstream_port.to_string())
            .replace("MASTER_KEY_PATH", &key_path.display().to_string());
        std::fs::write(path, text)
    };
    write("portcullis.yaml", CONFIG)?;
    write("actions/github.yaml", ACTIONS)?;
    write("policies/github.cedar", POLICIES)?;
    let loaded = portcullis_engine::check(&dir.join("portcullis.yaml"))
        .map_err(|p| format!("the config does not load: {p:?}"))?;
    let gateway = Arc::new(Gateway::open(loaded).await?);
    let store = gateway.store();
    store
        .add_agent(&AgentId::new(AGENT)?, &sha256_hex(AGENT_TOKEN.as_bytes()))
        .await?;
    let key = portcullis_secrets::MasterKey::load(&format!("file:{}", key_path.display()))?;
    store
        .put_secret(&portcullis_secrets::seal(
            &key,
            "github_token",
            UPSTREAM_TOKEN.as_bytes(),
        )?)
        .await?;
    let live = Live::new(Arc::clone(&gateway));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    gateway.set_served_at(local);
    tokio::spawn(portcullis_server::serve(live, listener, std::future::pending::<()>()));
    Ok((gateway, local.port()))
}

/// The upstream: answers every request with the same 1 KB GitHub issue, and counts the
/// requests from the bench, those from the gateway, and those of the gateway's that carried
/// the credential it injects.
struct Upstream {
    port: u16,
    counts: Arc<[AtomicUsize; 3]>,
}

impl Upstream {
    fn start() -> BenchResult<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let counts = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)]);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let counters = Arc::clone(&counts);
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                while let Ok((stream, _)) = listener.accept().await {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(upstream_connection(stream, Arc::clone(&counters)));
                }
            });
        });
        Ok(Self { port, counts })
    }
}

/// Serves one keep-alive connection: requests with a `content-length` body (what the
/// gateway and the bench send), each answered with [`issue_response`].
async fn upstream_connection(stream: tokio::net::TcpStream, counts: Arc<[AtomicUsize; 3]>) -> std::io::Result<()> {
    let response = issue_response();
    let expected = format!("Bearer {UPSTREAM_TOKEN}");
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let (mut length, mut authorized, mut direct) = (0, false, false);
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = value.parse().map_err(std::io::Error::other)?;
            } else if name.eq_ignore_ascii_case("authorization") {
                authorized = value == expected;
            } else if name.eq_ignore_ascii_case(DIRECT_MARK) {
                direct = true;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Err(std::io::Error::other("chunked requests are not expected"));
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body).await?;
        counts[usize::from(!direct)].fetch_add(1, Ordering::SeqCst);
        counts[2].fetch_add(usize::from(authorized && !direct), Ordering::SeqCst);
        write.write_all(&response).await?;
    }
}

/// A GitHub "create an issue" answer of about 1 KB.
fn issue_response() -> Vec<u8> {
    let body = json!({
        "id": 1_801_243_576, "node_id": "I_kwDOBbench01", "number": 1347,
        "url": "https://api.github.com/repos/acme/widgets/issues/1347",
        "html_url": "https://github.com/acme/widgets/issues/1347",
        "title": "Request fails with a timeout when the config file is missing",
        "user": {"login": "triage-bot", "id": 4_711, "type": "Bot", "site_admin": false,
                 "avatar_url": "https://avatars.githubusercontent.com/u/4711?v=4"},
        "labels": [{"id": 208_045_946, "name": "bug", "color": "d73a4a", "default": true},
                   {"id": 208_045_947, "name": "triage", "color": "fbca04", "default": false}],
        "state": "open", "locked": false, "assignees": [], "milestone": null, "comments": 0,
        "created_at": "2026-01-05T10:00:00Z", "updated_at": "2026-01-05T10:00:00Z", "closed_at": null,
        "author_association": "NONE",
        "body": "### Describe the bug\n\nThe request fails after a 30 s timeout when `conf/app.toml` is missing.\n\n\
                 ### To reproduce\n\n```\n$ widgets serve --config ./conf/app.toml\n```\n\nVersion 1.4.2 on Linux.",
        "reactions": {"total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "hooray": 0, "confused": 0, "heart": 0},
        "timeline_url": "https://api.github.com/repos/acme/widgets/issues/1347/timeline",
        "state_reason": null
    })
    .to_string();
    let mut out = format!(
        "HTTP/1.1 201 Created\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// A minimal blocking HTTP/1.1 client over one keep-alive connection, the same for both
/// round trips, so that its cost is in the baseline too.
struct Client {
    reader: BufReader<TcpStream>,
    host: String,
    line: String,
}

impl Client {
    fn connect(port: u16) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            reader: BufReader::new(stream),
            host: format!("127.0.0.1:{port}"),
            line: String::new(),
        })
    }

    /// POSTs `body` with `headers` (each ending in CRLF); the status and the body.
    fn post(&mut self, path: &str, headers: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\n{headers}content-length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body.as_bytes());
        self.reader.get_mut().write_all(&request)?;
        self.read_response()
    }

    fn read_response(&mut self) -> std::io::Result<(u16, Vec<u8>)> {
        let status = self.read_line()?;
        let status: u16 = status
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("not an HTTP status line: {status:?}")))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            let line = self.read_line()?;
            let Some((name, value)) = line.split_once(':') else {
                break;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(std::io::Error::other)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let size = usize::from_str_radix(self.read_line()?.split(';').next().unwrap_or("").trim(), 16)
                    .map_err(std::io::Error::other)?;
                let start = body.len();
                body.resize(start + size, 0);
                self.reader.read_exact(&mut body[start..])?;
                self.read_line()?;
                if size == 0 {
                    break;
                }
            }
        } else {
            body.resize(length.unwrap_or(0), 0);
            self.reader.read_exact(&mut body)?;
        }
        Ok((status, body))
    }

    /// One line without its CRLF; an error at the end of the stream.
    fn read_line(&mut self) -> std::io::Result<String> {
        self.line.clear();
        if self.reader.read_line(&mut self.line)? == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        Ok(self.line.trim_end().to_owned())
    }
}

/// Where the gateway's time went, from its own metrics (means over every call, the
/// warm-up included): the whole intent, each pipeline stage, and the wait for an audit
/// event's commit.
fn stage_means(gateway: &Gateway) {
    let text = gateway.metrics().render(portcullis_engine::metrics::Gauges::default());
    let mut sums = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else { continue };
        for (suffix, slot) in [("_sum", 0), ("_count", 1)] {
            let Some((family, labels)) = series.split_once(suffix) else {
                continue;
            };
            if family.ends_with("_seconds") && (labels.is_empty() || labels.starts_with('{')) {
                let entry = sums.entry(format!("{family}{labels}")).or_default();
                if slot == 0 { entry.0 = value } else { entry.1 = value }
            }
        }
    }
    println!("gateway metrics, mean per observation:");
    for (series, (sum, count)) in sums.iter().filter(|(_, (_, count))| *count > 0.0) {
        println!("  {series:<64} {:>9.1} µs  ({count} observations)", sum / count * 1e6);
    }
}

/// p50, p99 and p99.9 (nearest rank).
fn percentiles(samples: &mut [Duration]) -> [Duration; 3] {
    samples.sort_unstable();
    [0.5, 0.99, 0.999].map(|q| {
        let rank = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len().max(1));
        samples.get(rank - 1).copied().unwrap_or_default()
    })
}
