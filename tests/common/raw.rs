//! Raw-socket helpers for the adversarial tests: an upstream that records the exact bytes
//! the gateway sends it and parses them the way a *lenient* backend would, and a client
//! that writes exact bytes to the gateway and reads what comes back.
//!
//! The upstream's leniency is the point: it believes `Content-Length` only when it is one
//! plain decimal value (anything else means "no body", as many servers read it) and
//! honours `chunked`. A request the gateway frames differently from that shows up here as
//! an extra, smuggled request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the upstream answers each request with unless told otherwise.
pub const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// Stop reading a request head that grows beyond this (the upstream then closes).
const MAX_HEAD: usize = 1 << 20;

/// One request as the upstream parsed it: names and values exactly as sent (values
/// without surrounding whitespace), the body after de-chunking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Which upstream connection carried it (0 = the first accepted).
    pub conn: usize,
}

/// Spellings of `/admin` that application servers (Tomcat, Spring, IIS, PHP) read as
/// `/admin` while a naive gateway routes them elsewhere: the gateway must refuse them all.
pub const ADMIN_VARIANTS: &[&str] = &[
    "/admin;x",
    "/admin;jsessionid=1/secret",
    "/admin;/secret",
    "/admin%3Bx",
    "/admin.",
    "/admin%2e",
    "/admin./secret",
    "/admin%20",
    "/admin%c0%af",
    "/%2561dmin",
    "/admin..;/",
];

/// Paths under `/public` that such servers resolve to `/admin`.
pub const PUBLIC_CLIMBS: &[&str] = &[
    "/public/..%3B/admin",
    "/public/%252e%252e/admin",
    "/public/%c0%ae%c0%ae/admin",
];

/// Every value of header `name` in `headers` (ASCII case-insensitive; `_` is NOT `-`).
fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

impl RawRequest {
    /// Every value of header `name` (ASCII case-insensitive; `_` is NOT read as `-`).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of a header whose name, lower-cased with `_` read as `-`, is `canon`
    /// (the way many frameworks read header names).
    pub fn header_canonical(&self, canon: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.to_ascii_lowercase().replace('_', "-") == canon)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// One accepted connection: everything read from it, and the requests parsed from it.
#[derive(Debug, Clone, Default)]
pub struct RawConn {
    pub bytes: Vec<u8>,
    pub requests: Vec<RawRequest>,
    /// Set when the upstream gave up on the connection (unparsable bytes).
    pub garbage: bool,
}

struct Shared {
    conns: Mutex<Vec<RawConn>>,
    response: Mutex<Vec<u8>>,
    keep_bytes: std::sync::atomic::AtomicBool,
    delay_ms: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Vec<RawConn>) -> R) -> R {
        f(&mut self.conns.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A keep-alive HTTP/1.1 upstream on `127.0.0.1:0` that records what it receives.
pub struct RawUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl RawUpstream {
    /// An upstream answering every request with [`OK_RESPONSE`].
    pub async fn start() -> RawUpstream {
        RawUpstream::start_with_response(OK_RESPONSE).await
    }

    /// An upstream answering every request with exactly `response` (for response-side
    /// tests, e.g. a `Content-Length: 5, 5` answer).
    pub async fn start_with_response(response: &[u8]) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            conns: Mutex::new(Vec::new()),
            response: Mutex::new(response.to_vec()),
            keep_bytes: std::sync::atomic::AtomicBool::new(true),
            delay_ms: std::sync::atomic::AtomicU64::new(0),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let id = s.with(|c| {
                    c.push(RawConn::default());
                    c.len() - 1
                });
                tokio::spawn(serve(stream, id, s.clone()));
            }
        });
        RawUpstream { addr, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers later requests with `response` instead.
    pub fn set_response(&self, response: &[u8]) {
        *self.shared.response.lock().unwrap() = response.to_vec();
    }

    /// Waits this long before answering each request (a slow application).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Whether to keep the raw bytes (on by default; a long fuzz run turns it off so the
    /// recording does not count as the gateway's memory).
    pub fn keep_bytes(&self, keep: bool) {
        self.shared
            .keep_bytes
            .store(keep, std::sync::atomic::Ordering::Relaxed);
    }

    /// Every request parsed so far, connection by connection, in arrival order.
    pub fn requests(&self) -> Vec<RawRequest> {
        self.shared.with(|c| {
            c.iter()
                .flat_map(|conn| conn.requests.iter().cloned())
                .collect()
        })
    }

    pub fn request_count(&self) -> usize {
        self.shared
            .with(|c| c.iter().map(|conn| conn.requests.len()).sum())
    }

    /// Every byte received, all connections concatenated in the order they were accepted.
    pub fn bytes(&self) -> Vec<u8> {
        self.shared
            .with(|c| c.iter().flat_map(|conn| conn.bytes.clone()).collect())
    }

    /// The per-connection record.
    pub fn connections(&self) -> Vec<RawConn> {
        self.shared.with(|c| c.clone())
    }

    /// Forgets what was recorded (connections stay open).
    pub fn clear(&self) {
        self.shared.with(|c| {
            for conn in c.iter_mut() {
                conn.bytes.clear();
                conn.requests.clear();
            }
        });
    }
}

async fn serve(mut stream: TcpStream, id: usize, shared: Arc<Shared>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // Parse everything complete in the buffer.
        loop {
            match parse_request(&buf) {
                Parse::Done(mut req, used) => {
                    buf.drain(..used);
                    req.conn = id;
                    let close = req
                        .header_all("connection")
                        .iter()
                        .any(|v| v.to_ascii_lowercase().contains("close"));
                    shared.with(|c| c[id].requests.push(req));
                    let response = shared.response.lock().unwrap().clone();
                    let delay = shared.delay_ms.load(std::sync::atomic::Ordering::Relaxed);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    if stream.write_all(&response).await.is_err() || close {
                        return;
                    }
                }
                Parse::Partial if buf.len() > MAX_HEAD => {
                    shared.with(|c| c[id].garbage = true);
                    return;
                }
                Parse::Partial => break,
                Parse::Garbage => {
                    shared.with(|c| c[id].garbage = true);
                    return;
                }
            }
        }
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if shared.keep_bytes.load(std::sync::atomic::Ordering::Relaxed) {
            shared.with(|c| c[id].bytes.extend_from_slice(&chunk[..n]));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

enum Parse<T> {
    Done(T, usize),
    Partial,
    Garbage,
}

/// The end of the head (index just past the blank line), accepting CRLF or bare LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            let rest = &buf[i + 1..];
            if rest.starts_with(b"\r\n") {
                return Some(i + 3);
            }
            if rest.starts_with(b"\n") {
                return Some(i + 2);
            }
        }
        i += 1;
    }
    None
}

fn lines(head: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(head)
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect()
}

/// Headers of a head: `name: value` lines (lines without a colon are ignored, leniently).
fn parse_headers(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim_matches([' ', '\t']).to_string()))
        .collect()
}

enum Framing {
    None,
    Length(usize),
    Chunked,
}

/// How a lenient server frames a body: chunked when any `Transfer-Encoding` mentions it,
/// else `Content-Length` when there is exactly one and it is plain decimal, else nothing.
fn framing(headers: &[(String, String)]) -> Framing {
    let te_chunked = headers.iter().any(|(k, v)| {
        k.trim().eq_ignore_ascii_case("transfer-encoding")
            && v.to_ascii_lowercase().contains("chunked")
    });
    if te_chunked {
        return Framing::Chunked;
    }
    let cls: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    match cls.as_slice() {
        [one] if !one.is_empty() && one.len() < 12 && one.bytes().all(|b| b.is_ascii_digit()) => {
            Framing::Length(one.parse().unwrap_or(0))
        }
        _ => Framing::None,
    }
}

/// A chunked body starting at `buf[0]`: the de-chunked bytes and how much was consumed.
fn dechunk(buf: &[u8]) -> Parse<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let Some(nl) = buf[i..].iter().position(|b| *b == b'\n') else {
            return if buf.len() - i > 1024 {
                Parse::Garbage
            } else {
                Parse::Partial
            };
        };
        let line = String::from_utf8_lossy(&buf[i..i + nl]);
        let size_text = line.trim_end_matches('\r');
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Parse::Garbage;
        };
        i += nl + 1;
        if size == 0 {
            // Trailers until a blank line.
            loop {
                let Some(nl) = buf[i..].iter().position(|b| *b == b'\n') else {
                    return Parse::Partial;
                };
                let blank = nl == 0 || (nl == 1 && buf[i] == b'\r');
                i += nl + 1;
                if blank {
                    return Parse::Done(out, i);
                }
            }
        }
        if size > MAX_HEAD * 16 {
            return Parse::Garbage;
        }
        if buf.len() < i + size {
            return Parse::Partial;
        }
        out.extend_from_slice(&buf[i..i + size]);
        i += size;
        if buf[i..].starts_with(b"\r\n") {
            i += 2;
        } else if buf[i..].starts_with(b"\n") {
            i += 1;
        } else if buf.len() - i < 2 {
            return Parse::Partial;
        } else {
            return Parse::Garbage;
        }
    }
}

/// Parses one request at the start of `buf` the way a lenient server would; the
/// adversarial tests call it directly to check the upstream's own reading.
pub fn parse_one(buf: &[u8]) -> Option<(RawRequest, usize)> {
    match parse_request(buf) {
        Parse::Done(r, n) => Some((r, n)),
        _ => None,
    }
}

fn parse_request(buf: &[u8]) -> Parse<RawRequest> {
    // Leading blank lines before a request line are ignored (RFC 9112 §2.2).
    let mut start = 0;
    while start < buf.len() && (buf[start] == b'\r' || buf[start] == b'\n') {
        start += 1;
    }
    if start == buf.len() {
        return Parse::Partial;
    }
    let Some(end) = head_end(&buf[start..]).map(|e| e + start) else {
        return Parse::Partial;
    };
    let lines = lines(&buf[start..end]);
    let parts: Vec<&str> = lines[0].split(' ').collect();
    let [method, target, version] = parts.as_slice() else {
        return Parse::Garbage;
    };
    if method.is_empty() || !version.starts_with("HTTP/") {
        return Parse::Garbage;
    }
    let headers = parse_headers(&lines[1..]);
    let (body, used) = match framing(&headers) {
        Framing::None => (Vec::new(), end),
        Framing::Length(n) if buf.len() >= end + n => (buf[end..end + n].to_vec(), end + n),
        Framing::Length(_) => return Parse::Partial,
        Framing::Chunked => match dechunk(&buf[end..]) {
            Parse::Done(b, n) => (b, end + n),
            Parse::Partial => return Parse::Partial,
            Parse::Garbage => return Parse::Garbage,
        },
    };
    Parse::Done(
        RawRequest {
            method: method.to_string(),
            target: target.to_string(),
            version: version.to_string(),
            headers,
            body,
            conn: 0,
        },
        used,
    )
}

/// One response as the client read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status_line: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Parses one response at the start of `buf`. A response without `Content-Length` or
/// chunking is complete only when the connection closed (`eof`).
fn parse_response(buf: &[u8], eof: bool) -> Parse<RawResponse> {
    let Some(end) = head_end(buf) else {
        return if eof && !buf.is_empty() {
            Parse::Garbage
        } else {
            Parse::Partial
        };
    };
    let lines = lines(&buf[..end]);
    let status_line = lines[0].clone();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let Some(status) = parts.next().and_then(|s| s.parse::<u16>().ok()) else {
        return Parse::Garbage;
    };
    if !version.starts_with("HTTP/") {
        return Parse::Garbage;
    }
    let headers = parse_headers(&lines[1..]);
    let no_body = (100..200).contains(&status) || status == 204 || status == 304;
    let (body, used) = if no_body {
        (Vec::new(), end)
    } else {
        match framing(&headers) {
            Framing::Chunked => match dechunk(&buf[end..]) {
                Parse::Done(b, n) => (b, end + n),
                Parse::Partial if !eof => return Parse::Partial,
                _ => return Parse::Garbage,
            },
            Framing::Length(n) if buf.len() >= end + n => (buf[end..end + n].to_vec(), end + n),
            Framing::Length(_) if !eof => return Parse::Partial,
            Framing::Length(_) => return Parse::Garbage,
            Framing::None => {
                let has_cl = headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
                if has_cl {
                    // A Content-Length this client cannot read: report what is there.
                    (buf[end..].to_vec(), buf.len())
                } else if eof {
                    (buf[end..].to_vec(), buf.len())
                } else {
                    return Parse::Partial;
                }
            }
        }
    };
    Parse::Done(
        RawResponse {
            status_line,
            status,
            headers,
            body,
        },
        used,
    )
}

/// Everything read back from the gateway on one connection.
#[derive(Debug, Clone, Default)]
pub struct RawReply {
    pub responses: Vec<RawResponse>,
    /// The gateway closed (or reset) the connection.
    pub closed: bool,
    /// Bytes after the last complete response (a truncated or unparsable answer).
    pub rest: Vec<u8>,
    /// Everything received, as received.
    pub raw: Vec<u8>,
}

impl RawReply {
    /// The first response's status (0 when nothing came back).
    pub fn status(&self) -> u16 {
        self.responses.first().map_or(0, |r| r.status)
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }

    pub fn first(&self) -> &RawResponse {
        self.responses
            .first()
            .unwrap_or_else(|| panic!("no response; got {:?}", String::from_utf8_lossy(&self.raw)))
    }

    /// A one-line description for assertion messages.
    pub fn summary(&self) -> String {
        format!(
            "statuses {:?}, closed {}, {} stray bytes; raw: {:?}",
            self.statuses(),
            self.closed,
            self.rest.len(),
            String::from_utf8_lossy(&self.raw[..self.raw.len().min(600)])
        )
    }
}

/// How long to wait for answers.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// For the first byte of the first response.
    pub first: Duration,
    /// For more bytes once something arrived (and after each complete response).
    pub idle: Duration,
    /// Stop as soon as this many final (non-1xx) responses are complete (then wait
    /// `grace` for extras).
    pub expect: Option<usize>,
    pub grace: Duration,
}

impl Default for ReadLimits {
    fn default() -> ReadLimits {
        ReadLimits {
            first: Duration::from_secs(5),
            idle: Duration::from_millis(800),
            expect: None,
            grace: Duration::from_millis(300),
        }
    }
}

/// A raw client connection to the gateway. It never half-closes its write side: pingora
/// reads a client's `SHUT_WR` as "downstream gone".
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    raw: Vec<u8>,
    closed: bool,
}

impl RawClient {
    pub async fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).ok();
        RawClient {
            stream,
            buf: Vec::new(),
            raw: Vec::new(),
            closed: false,
        }
    }

    /// Writes `bytes`; false when the gateway already closed the connection.
    pub async fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Reads until the connection closes or the limits say stop; returns the responses
    /// completed by this call.
    pub async fn read(&mut self, limits: ReadLimits) -> RawReply {
        let mut responses = Vec::new();
        let mut chunk = vec![0u8; 16 * 1024];
        let mut got_any = false;
        while !self.closed {
            let finals = responses
                .iter()
                .filter(|r: &&RawResponse| r.status >= 200)
                .count();
            let wait = match limits.expect {
                Some(n) if finals >= n => limits.grace,
                _ if got_any => limits.idle,
                _ => limits.first,
            };
            match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => {
                    got_any = true;
                    self.buf.extend_from_slice(&chunk[..n]);
                    self.raw.extend_from_slice(&chunk[..n]);
                }
            }
            self.drain_responses(&mut responses);
        }
        RawReply {
            responses,
            closed: self.closed,
            rest: self.buf.clone(),
            raw: self.raw.clone(),
        }
    }

    fn drain_responses(&mut self, out: &mut Vec<RawResponse>) {
        loop {
            match parse_response(&self.buf, self.closed) {
                Parse::Done(r, used) => {
                    self.buf.drain(..used);
                    out.push(r);
                }
                Parse::Partial | Parse::Garbage => return,
            }
        }
    }
}

/// Opens a connection, writes `bytes` in one go, and reads answers with the default limits.
pub async fn exchange(port: u16, bytes: &[u8]) -> RawReply {
    exchange_with(port, bytes, ReadLimits::default()).await
}

pub async fn exchange_with(port: u16, bytes: &[u8], limits: ReadLimits) -> RawReply {
    let mut c = RawClient::connect(port).await;
    c.write(bytes).await;
    c.read(limits).await
}

/// Waits for writes already in flight to reach the upstream.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}
