//! Tiny HTTP/1.1 servers on loopback, written by hand so that tests control every byte.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use url::Url;

/// Answers every connection with one response, then closes it; records each request.
pub struct Server {
    pub addr: SocketAddr,
    requests: mpsc::UnboundedReceiver<Vec<u8>>,
}

/// What a routed server answers to a request target (path and query).
type Route = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// A listening socket not yet answering: its URLs are known before its answers are, so that
/// two servers can redirect to each other.
pub struct Bound {
    pub addr: SocketAddr,
    listener: TcpListener,
}

impl Bound {
    /// A socket on `ip`, or `None` if that address can't be bound.
    pub async fn on(ip: &str) -> Option<Self> {
        let listener = TcpListener::bind((ip, 0)).await.ok()?;
        let addr = listener.local_addr().unwrap();
        Some(Self { addr, listener })
    }

    /// A URL on this server, host spelled as its IP address.
    pub fn url(&self, path_and_query: &str) -> Url {
        url_of(self.addr, path_and_query)
    }

    /// Answers each request with `route(target)`, `target` being its path and query.
    pub fn serve(self, route: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Server {
        self.serve_after(Duration::ZERO, route)
    }

    /// [`Self::serve`], each answer sent `delay` after the request was read.
    pub fn serve_after(self, delay: Duration, route: impl Fn(&str) -> Vec<u8> + Send + Sync + 'static) -> Server {
        let (tx, requests) = mpsc::unbounded_channel();
        let route: Route = Arc::new(route);
        let listener = self.listener;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, Arc::clone(&route), delay, tx.clone()));
            }
        });
        Server {
            addr: self.addr,
            requests,
        }
    }
}

impl Server {
    /// A server on 127.0.0.1.
    pub async fn start(response: Vec<u8>) -> Self {
        Self::start_on("127.0.0.1", response).await.unwrap()
    }

    /// A server on `ip`, or `None` if that address can't be bound (no IPv6 on this machine).
    pub async fn start_on(ip: &str, response: Vec<u8>) -> Option<Self> {
        Some(Bound::on(ip).await?.serve(move |_| response.clone()))
    }

    /// A URL on this server with `path_and_query` (starting with `/`), host spelled as `host`.
    pub fn url_as(&self, host: &str, path_and_query: &str) -> Url {
        Url::parse(&format!("http://{host}:{}{path_and_query}", self.addr.port())).unwrap()
    }

    /// A URL on this server, host spelled as its IP address.
    pub fn url(&self, path_and_query: &str) -> Url {
        url_of(self.addr, path_and_query)
    }

    /// The requests received so far, as raw bytes.
    pub fn received(&mut self) -> Vec<String> {
        let mut all = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            all.push(String::from_utf8_lossy(&request).into_owned());
        }
        all
    }
}

fn url_of(addr: SocketAddr, path_and_query: &str) -> Url {
    let host = match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    Url::parse(&format!("http://{host}:{}{path_and_query}", addr.port())).unwrap()
}

async fn answer(mut stream: TcpStream, route: Route, delay: Duration, tx: mpsc::UnboundedSender<Vec<u8>>) {
    let Some(request) = read_request(&mut stream).await else {
        return;
    };
    let head = String::from_utf8_lossy(&request);
    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let response = route(&target);
    let _ = tx.send(request);
    tokio::time::sleep(delay).await;
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// Reads one request: the head, then as many body bytes as `content-length` says.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

/// A complete HTTP/1.1 response with a `content-length`.
pub fn response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("connection: close\r\n\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// A response with status `status` and a `Location`.
pub fn redirect(status: u16, location: &str) -> Vec<u8> {
    response(&format!("{status} Redirect"), &[("location", location)], b"")
}

/// A chunked HTTP/1.1 response whose body is `chunks` chunks of `size` bytes: no length is
/// announced, so only counting bytes can stop it.
pub fn chunked(chunks: usize, size: usize) -> Vec<u8> {
    let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n".to_vec();
    for _ in 0..chunks {
        out.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'a', size));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// A server that accepts connections and never says a word.
pub async fn silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A server that closes every connection as soon as it is accepted.
pub async fn hanging_up() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    addr
}

/// A loopback port nothing listens on (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A keep-alive server that forgets: on each connection it answers the first request with
/// `200 OK` and keeps the connection open, then reads the next request and closes without a
/// word, as a server whose keep-alive timeout fires just as a request arrives. Counts requests.
pub async fn forgetful() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                if read_request(&mut stream).await.is_none() {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                if read_request(&mut stream).await.is_some() {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, seen)
}
