//! Starting the real processes: the demo upstream (python3) and the `portcullis` binary,
//! each in the test's own temporary directory, each killed when its guard is dropped.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{self, Response};

/// The binary under test, built by cargo for this test target.
pub const PORTCULLIS: &str = env!("CARGO_BIN_EXE_portcullis");

/// How long a process may take to come up.
const STARTUP: Duration = Duration::from_secs(30);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A child process killed (and reaped) on drop.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The DEMO upstream of `examples/demo-upstream/upstream.py`, on 127.0.0.1.
#[derive(Debug)]
pub struct Upstream {
    _child: KillOnDrop,
    pub port: u16,
}

impl Upstream {
    fn start(dir: &Path) -> Self {
        let port_file = dir.join("upstream.port");
        let child = Command::new("python3")
            .arg(repo_root().join("examples/demo-upstream/upstream.py"))
            .arg(&port_file)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 must be installed to run the demo upstream");
        let child = KillOnDrop(child);
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(text) = std::fs::read_to_string(&port_file)
                && let Ok(port) = text.trim().parse()
            {
                return Self { _child: child, port };
            }
            assert!(Instant::now() < deadline, "the demo upstream did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Every request the upstream received, in order.
    pub fn requests(&self) -> Vec<Value> {
        let r = http::get(self.addr(), "/__requests", None);
        assert_eq!(r.status, 200);
        match r.json() {
            Value::Array(a) => a,
            other => panic!("unexpected /__requests answer: {other}"),
        }
    }

    /// Asserts the upstream received nothing at all.
    pub fn assert_untouched(&self, context: &str) {
        let got = self.requests();
        assert!(got.is_empty(), "{context}: the upstream received {got:#?}");
    }
}

/// Values of header `name` (lowercase) in a request recorded by the upstream.
pub fn recorded_headers(request: &Value, name: &str) -> Vec<String> {
    request["headers"]
        .as_array()
        .expect("recorded headers")
        .iter()
        .filter(|h| h[0] == name)
        .map(|h| h[1].as_str().expect("header value").to_owned())
        .collect()
}

/// A running `portcullis serve`.
#[derive(Debug)]
pub struct Gateway {
    _child: KillOnDrop,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Gateway {
    /// Everything the gateway wrote to standard error so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    pub fn post_intent(&self, token: &str, body: &Value) -> Response {
        http::post_json(self.addr, "/v1/intents", Some(token), body.to_string().as_bytes())
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        http::get(self.addr, path, token)
    }

    /// The base URL, for `PORTCULLIS_URL`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends the process a signal (`HUP`, `TERM`…) with `kill`.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self._child.0.id().to_string())
            .status()
            .expect("kill");
        assert!(sent.success(), "kill -{name} failed");
    }

    /// Waits up to `limit` for the process to exit; its exit code, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self._child.0.try_wait().expect("try_wait") {
                return Some(status.code());
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `limit` until the log holds `needle` `times` times; panics with the log
    /// otherwise.
    pub fn wait_for_log(&self, needle: &str, times: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.log().matches(needle).count() < times {
            assert!(
                Instant::now() < deadline,
                "`{needle}` did not appear {times} time(s) in the log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The outcome of one CLI run.
#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// One test's world: a temporary directory with a config, a master key, the demo upstream.
#[derive(Debug)]
pub struct Env {
    pub upstream: Upstream,
    // Dropped last: the processes above run inside it.
    pub dir: tempfile::TempDir,
}

impl Env {
    /// A temporary directory with a fresh master key (`master.key`) and a running upstream.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let upstream = Upstream::start(dir.path());
        let env = Self { upstream, dir };
        let key = env.cli(&["secret", "keygen"], None);
        assert!(key.success(), "secret keygen failed: {key:?}");
        env.write("master.key", &key.stdout);
        env
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("portcullis.yaml")
    }

    /// Writes a file under the directory, replacing `UPSTREAM_PORT` with the upstream's port.
    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        let text = text.replace("UPSTREAM_PORT", &self.upstream.port.to_string());
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Runs `portcullis --config portcullis.yaml ARGS…` with `stdin` (closed when `None`).
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(PORTCULLIS)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("PORTCULLIS_LOG")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait portcullis");
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `portcullis --config portcullis.yaml ARGS…` with extra environment variables
    /// (`PORTCULLIS_URL` and `PORTCULLIS_TOKEN` are taken only from `envs`).
    pub fn cli_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let out = Command::new(PORTCULLIS)
            .arg("--config")
            .arg(self.config())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("PORTCULLIS_LOG")
            .env_remove("PORTCULLIS_URL")
            .env_remove("PORTCULLIS_TOKEN")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("spawn portcullis");
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// `portcullis approvals token NAME`; returns the login token printed on standard output.
    pub fn person_token(&self, name: &str) -> String {
        let out = self.cli(&["approvals", "token", name], None);
        assert!(out.success(), "approvals token {name} failed: {out:?}");
        let token = out.stdout.trim().to_owned();
        assert!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "token: {token:?}"
        );
        token
    }

    /// `portcullis secret set NAME` with the value on standard input.
    pub fn set_secret(&self, name: &str, value: &str) {
        let out = self.cli(&["secret", "set", name], Some(value));
        assert!(out.success(), "secret set {name} failed: {out:?}");
    }

    /// `portcullis agent add NAME`; returns the token printed on standard output.
    pub fn add_agent(&self, name: &str) -> String {
        let out = self.cli(&["agent", "add", name], None);
        assert!(out.success(), "agent add {name} failed: {out:?}");
        let token = out.stdout.trim().to_owned();
        assert!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "token: {token:?}"
        );
        token
    }

    /// Starts `portcullis -v serve --listen 127.0.0.1:0` and waits for its address.
    pub fn serve(&self) -> Gateway {
        self.serve_logging(None)
    }

    /// [`Self::serve`] with `PORTCULLIS_LOG` set to `filter` (e.g. `debug`).
    pub fn serve_logging(&self, filter: Option<&str>) -> Gateway {
        self.serve_env(filter, &[])
    }

    /// [`Self::serve_logging`] with more environment variables.
    pub fn serve_env(&self, filter: Option<&str>, envs: &[(&str, &str)]) -> Gateway {
        let mut command = Command::new(PORTCULLIS);
        command.env_remove("PORTCULLIS_LOG");
        if let Some(filter) = filter {
            command.env("PORTCULLIS_LOG", filter);
        }
        command.envs(envs.iter().copied());
        let mut child = command
            .arg("--config")
            .arg(self.config())
            .args(["-v", "serve", "--listen", "127.0.0.1:0"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis serve");
        let stderr = child.stderr.take().expect("stderr");
        let child = KillOnDrop(child);
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        // Keeps draining stderr for the gateway's whole life, so its pipe never fills up.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.trim().to_owned());
                }
                let mut l = sink.lock().expect("log lock");
                l.push_str(&line);
                l.push('\n');
            }
        });
        let addr = match rx.recv_timeout(STARTUP) {
            Ok(a) => a,
            Err(_) => panic!("the gateway did not start; its log:\n{}", log.lock().expect("log lock")),
        };
        let addr: SocketAddr = addr.parse().expect("listen address");
        assert!(
            addr.ip().is_loopback(),
            "the gateway must listen on loopback only: {addr}"
        );
        Gateway {
            _child: child,
            addr,
            log,
        }
    }

    /// Runs a python3 script with the store's SQLite file as `sys.argv[1]`.
    pub fn sqlite(&self, script: &str) -> Output {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(self.path("portcullis.db"))
            .stdin(Stdio::null())
            .output()
            .expect("python3");
        Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Parsed `portcullis audit tail -n N`.
    pub fn audit_tail(&self, n: u32) -> Vec<Value> {
        let out = self.cli(&["audit", "tail", "-n", &n.to_string()], None);
        assert!(out.success(), "audit tail failed: {out:?}");
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}")))
            .collect()
    }

    /// `portcullis audit verify`.
    pub fn audit_verify(&self) -> Output {
        self.cli(&["audit", "verify"], None)
    }
}

/// A secret nobody could guess, with characters whose encodings differ from the value
/// (`/`, `+`, `=`, `&`, `:`), so that every encoding the tests look for is distinct.
pub fn random_secret(label: &str) -> String {
    let bytes: [u8; 12] = rand::random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{label}-{}/+={}&:{}", &hex[..8], &hex[8..16], &hex[16..])
}

/// Runs `f(0..n)` on `n` threads released together; the results in index order.
pub fn concurrently<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let start = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (start, f) = (&start, &f);
                s.spawn(move || {
                    start.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    })
}
