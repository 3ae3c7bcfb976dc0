//! A bounded black-box fuzz run (issue 10): random and mutated HTTP/1.1 requests — nasty
//! paths, hosts, header names and values, duplicate headers, Content-Length and
//! Transfer-Encoding variants, bodies hiding a second request — sent over several
//! concurrent raw connections to the real gateway, whose app upstream is a raw socket
//! that parses what it gets the lenient way and records it.
//!
//! Pass criteria, checked at the end:
//! (a) no response with status >= 500 (the upstream never misbehaves);
//! (b) nothing smuggled: no `X-Loopwise-User: fuzz` ever reaches the upstream; every
//!     request the upstream parsed was framed by the gateway (it carries the gateway's one
//!     `X-Request-Id`); and the upstream parsed no more requests than the fuzzer got
//!     proxied 2xx answers for — matched one to one by that id, except that a request
//!     pingora answered 400 after forwarding it (bytes arriving behind a bodiless request
//!     while the upstream answers) counts for the message that caused it;
//! (c) no panic anywhere in the process;
//! (d) a plain `GET /public/ok` keeps succeeding during the run and at the end;
//! (e) VmRSS grows by less than 256 MB.
//!
//! `LOOPGATE_FUZZ_SECS` (default 45) sets the duration, `LOOPGATE_FUZZ_SEED` replays a
//! run (the seed is printed). Concurrency makes the interleaving differ between runs of
//! one seed; each connection's sequence of messages is the same. Every message carries
//! `X-Fuzz-Seq: <connection>-<n>`, so a failure names the messages behind it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::gw::*;
use common::raw::*;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Concurrent fuzzing connections.
const WORKERS: usize = 10;
/// How often the liveness probe asks for `/public/ok`.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// xorshift64*: small, seedable, good enough to pick from corpora.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// Random bytes biased towards what breaks parsers: delimiters, controls, high bytes.
    fn nasty_bytes(&mut self, n: usize) -> Vec<u8> {
        const SPECIAL: &[u8] = b"\r\n\t \0:;,./\\#?%@\"'<>{}[]|^`~+=&\x7f\x80\xc0\xaf\xff";
        (0..n)
            .map(|_| {
                if self.chance(50) {
                    *self.pick(SPECIAL)
                } else if self.chance(70) {
                    b'a' + self.below(26) as u8
                } else {
                    self.next() as u8
                }
            })
            .collect()
    }

    fn token(&mut self, max: usize) -> String {
        const TCHAR: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~";
        let n = 1 + self.below(max);
        (0..n).map(|_| *self.pick(TCHAR) as char).collect()
    }
}

const PATHS: &[&str] = &[
    "/public/ok",
    "/public/x",
    "/public/",
    "/public",
    "/",
    "/page",
    "/admin",
    "/admin/secret",
    "/api/x",
    "/oauth2/sign_out",
    "/oauth2/start?rd=/x",
    "/oauth2/start?rd=//evil.example",
    "/oauth2/callback?code=x&state=y",
    "/oauth2/userinfo",
    "/oauth2/auth",
    "/admin%23x",
    "/admin%3fx",
    "/admin#/../public",
    "/public/../admin",
    "/public/./../admin",
    "//admin",
    "/public/%2e%2e/admin",
    "/public/%2fadmin",
    "/public/%5c..%5cadmin",
    "/public\\..\\admin",
    "/ADMIN",
    "/public/..;/admin",
    "/legacy;jsessionid=1/x",
    "*",
    "http://admin.example.edu/x",
    "http://127.0.0.1/public/x",
    "https://evil.example/public/x",
    "/public/ok?x=1&y=%00",
    "/public/%00",
    "/public/%ZZ",
    "/public/%",
    "/public/ok?rd=%2f%2fevil",
];

const HOSTS: &[&str] = &[
    "admin.example.edu",
    "ADMIN.Example.EDU.",
    "admin.example.edu:abc",
    "admin.example.edu:80:80",
    "admin.example.edu,www.example.edu",
    "admin.example.edu/x",
    "admin.example.edu#x",
    "admin.example.edu?x",
    "admin.example.edu\\x",
    "admin.example.edu;x",
    "admin%2eexample.edu",
    "",
    "[::1]",
    "[::1",
    "127.0.0.1:0",
    "user@127.0.0.1",
    "127.0.0.1:99999",
];

/// The request hidden in bodies: if a lenient upstream ever parses it, it arrives with an
/// identity the gateway never set.
const EMBEDDED: &str = "GET /public/smuggled HTTP/1.1\r\nHost: x\r\nX-Loopwise-User: fuzz\r\nx_loopwise_user: fuzz\r\n\r\n";

/// The first headers of [`fixed_headers`] are well-formed (identity, forwarding and
/// connection games); clean messages pick only from those.
const CLEAN_HEADERS: usize = 30;

fn fixed_headers(session: &str) -> Vec<String> {
    let long_token = "a".repeat(5000);
    let many: Vec<String> = (0..60).map(|i| format!("loopgate_session_{i}=")).collect();
    [
        "X-Loopwise-User: fuzz",
        "x_loopwise_user: fuzz",
        "X-LOOPWISE-USER: fuzz",
        "X-Loopwise-Roles: school_admin",
        "X-Forwarded-User: fuzz",
        "X-Auth-Request-User: fuzz",
        "X-Forwarded-For: 6.6.6.6",
        "Forwarded: for=6.6.6.6;host=evil",
        "X-Real-IP: 6.6.6.6",
        "X-Forwarded-Host: evil",
        "X-Forwarded-Proto: https",
        "X-Original-URL: /admin",
        "X-Rewrite-URL: /admin",
        "X-Forwarded-Uri: /admin#/../public",
        "X-Forwarded-Method: GET",
        "Remote-User: fuzz",
        "X-WEBAUTH-USER: fuzz",
        "REMOTE_USER: fuzz",
        "Connection: close",
        "Connection: keep-alive",
        "Connection: x-loopwise-user",
        "Connection: content-length",
        "Connection: transfer-encoding, host",
        "Connection: upgrade",
        "Upgrade: websocket",
        "Keep-Alive: timeout=5",
        "Expect: 100-continue",
        "TE: trailers",
        "Trailer: X-Loopwise-User",
        "Proxy-Connection: keep-alive",
        "Authorization: Bearer abc",
        "Authorization: Basic YTpi",
        "Authorization: Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZGEifQ.",
        "Cookie: loopgate_session=garbage",
        "Cookie: loopgate_session=v1.AAAA",
        "Cookie: loopgate_session_0=x; loopgate_session_1=y",
        "Cookie: loopgate_session_login_x=1",
        "Cookie: theme=dark",
        "X-Request-Id: evil\" level=error msg=forged",
        "X-Request-Id: req-123.A_b",
        "Accept: text/html",
        "Accept: application/json",
        "Sec-Fetch-Mode: navigate",
        "Sec-Fetch-Site: cross-site",
        "Origin: http://evil.example",
        "Content-Type: application/x-www-form-urlencoded",
        "Range: bytes=0-1",
        " obs-fold continuation",
        "\tX-Loopwise-User: fuzz",
        "NoColonLine",
        "Space-Before-Colon : x",
        ": empty name",
        "X-Nul: a\0b",
        "Host : admin.example.edu",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("Cookie: {session}"),
        format!("Cookie: {session}; {session}"),
        format!("Cookie: {session}; loopgate_session=garbage"),
        format!("Cookie: {}", many.join("; ")),
        format!("Authorization: Bearer {long_token}"),
        format!("X-Request-Id: {}", "r".repeat(200)),
        format!("X-Big: {}", "b".repeat(9000)),
    ])
    .collect()
}

/// One generated message and how many answers a well-behaved gateway would give.
struct Message {
    bytes: Vec<u8>,
    expect: usize,
    seq: String,
}

struct Generator {
    rng: Rng,
    port: u16,
    headers: Vec<String>,
    /// This worker's number and its message counter: every message carries
    /// `X-Fuzz-Seq: <worker>-<n>`, so what reached the upstream can be traced back.
    worker: usize,
    sent: usize,
}

impl Generator {
    fn method(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        match r.below(100) {
            0..=39 => b"GET".to_vec(),
            40..=64 => b"POST".to_vec(),
            65..=84 => r
                .pick(&["PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"])
                .as_bytes()
                .to_vec(),
            85..=92 => r
                .pick(&["get", "G\tET", "", "POST ", "GET\0", "GE T", "PRI"])
                .as_bytes()
                .to_vec(),
            93..=97 => r.token(12).into_bytes(),
            _ => {
                let n = 1 + r.below(10);
                r.nasty_bytes(n)
            }
        }
    }

    fn path(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        // Proxied paths most often: that is where a framing disagreement with the
        // upstream would show.
        let base = if r.chance(45) {
            *r.pick(&["/public/x", "/public/ok", "/public/"])
        } else {
            let list = *r.pick(&[PATHS, ADMIN_VARIANTS, PUBLIC_CLIMBS]);
            *r.pick(list)
        };
        let mut p = base.as_bytes().to_vec();
        let edits = if r.chance(60) { r.below(4) } else { 0 };
        for _ in 0..edits {
            let at = r.below(p.len() + 1);
            match r.below(7) {
                0 => {
                    let esc = format!("%{:02x}", r.next() as u8);
                    p.splice(at..at, esc.into_bytes());
                }
                1 => {
                    let c = *r.pick(b";./\\#?%~@:&=+ ");
                    p.insert(at, c);
                }
                2 => {
                    let seg = r.pick(&["/..", "/.", "//", "/%2e%2e", "/..;", ";x", "%00", "%2F"]);
                    p.splice(at..at, seg.bytes());
                }
                3 => {
                    for b in p.iter_mut() {
                        if r.chance(30) {
                            b.make_ascii_uppercase();
                        }
                    }
                }
                4 => {
                    let n = 1 + r.below(6);
                    let junk = r.nasty_bytes(n);
                    p.splice(at..at, junk);
                }
                5 => {
                    let n = 1 + r.below(4);
                    let junk = r.bytes(n);
                    p.splice(at..at, junk);
                }
                _ => {
                    let end = (at + 1 + r.below(5)).min(p.len());
                    if at < end {
                        let copy = p[at..end].to_vec();
                        p.splice(at..at, copy);
                    }
                }
            }
        }
        if r.chance(2) {
            p.extend(std::iter::repeat_n(b'a', 9000));
        }
        p
    }

    fn version(&mut self) -> &'static str {
        const ODD: &[&str] = &[
            "HTTP/1.0",
            "HTTP/0.9",
            "HTTP/2.0",
            "HTTP/1.2",
            "http/1.1",
            "HTTP/1.1 x",
            "",
            "HTTP/1.10",
            "HTTP/ 1.1",
        ];
        if self.rng.chance(85) {
            "HTTP/1.1"
        } else {
            ODD[self.rng.below(ODD.len())]
        }
    }

    fn body(&mut self) -> Vec<u8> {
        let r = &mut self.rng;
        match r.below(6) {
            0 => Vec::new(),
            1 => {
                let n = r.below(200);
                r.nasty_bytes(n)
            }
            2 => EMBEDDED.as_bytes().to_vec(),
            3 => format!("0\r\n\r\n{EMBEDDED}").into_bytes(),
            4 => format!("hello{EMBEDDED}").into_bytes(),
            _ => b"a=1&b=2".to_vec(),
        }
    }

    /// Framing header lines and the bytes after the head, for `body`.
    fn framing(&mut self, body: &[u8]) -> (Vec<String>, Vec<u8>) {
        let r = &mut self.rng;
        let n = body.len();
        let chunked = |b: &[u8]| -> Vec<u8> {
            let mut out = Vec::new();
            if !b.is_empty() {
                out.extend(format!("{:x}\r\n", b.len()).into_bytes());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            out
        };
        let te = |v: &str| format!("Transfer-Encoding: {v}");
        match r.below(22) {
            0..=5 => (vec![], body.to_vec()),
            6..=9 => (vec![format!("Content-Length: {n}")], body.to_vec()),
            10 => (
                vec![format!(
                    "Content-Length: {}",
                    n.saturating_sub(1 + r.below(6))
                )],
                body.to_vec(),
            ),
            11 if r.chance(30) => (vec![format!("Content-Length: {}", n + 3)], body.to_vec()),
            11 => (vec![format!("Content-Length: {n}, {n}")], body.to_vec()),
            12 => {
                let v = r
                    .pick(&[
                        "{n},{n}",
                        "+{n}",
                        "-1",
                        "0x{n}",
                        " {n} ",
                        "0000{n}",
                        "99999999999999999999",
                        "{n}.0",
                        "{n} {n}",
                    ])
                    .replace("{n}", &n.to_string());
                (vec![format!("Content-Length: {v}")], body.to_vec())
            }
            13 => (
                vec![
                    format!("Content-Length: {n}"),
                    format!("Content-Length: {n}"),
                ],
                body.to_vec(),
            ),
            14..=15 => (vec![te("chunked")], chunked(body)),
            16 => (
                vec![format!("Content-Length: {n}"), te("chunked")],
                chunked(body),
            ),
            17 => {
                let v = *r.pick(&[
                    "gzip, chunked",
                    "chunked, gzip",
                    "Chunked",
                    " chunked",
                    "chunked\t",
                    "identity",
                    "xchunked",
                    "chunked;q=1",
                    "\"chunked\"",
                ]);
                (vec![te(v)], chunked(body))
            }
            18 => (vec![te("chunked"), te("chunked")], chunked(body)),
            19 => {
                // Broken chunk sizes and extensions.
                let size = *r.pick(&["ffffffffffffffffff", "-1", "5;ext=\"x\"", "0x5", " 5", "5 "]);
                let mut b = format!("{size}\r\nhello\r\n0\r\n\r\n").into_bytes();
                b.extend_from_slice(body);
                (vec![te("chunked")], b)
            }
            20 => {
                // Trailers that try to set identity.
                let mut b = chunked(body);
                b.truncate(b.len() - 2);
                b.extend_from_slice(b"X-Loopwise-User: fuzz\r\n\r\n");
                (vec![te("chunked"), "Trailer: X-Loopwise-User".into()], b)
            }
            _ => (vec!["Transfer-Encoding: chunked".into()], body.to_vec()),
        }
    }

    fn message(&mut self) -> Message {
        self.sent += 1;
        let seq = format!("{}-{}", self.worker, self.sent);
        // A third of the messages are well-formed but for their framing and headers: they
        // reach the upstream, where a framing disagreement would show.
        let clean = self.rng.chance(33);
        let eol: &[u8] = match self.rng.below(100) {
            _ if clean => b"\r\n",
            0..=91 => b"\r\n",
            92..=97 => b"\n",
            _ => b"\r",
        };
        let mut m = Vec::new();
        if clean {
            m.extend_from_slice(if self.rng.chance(70) { b"POST" } else { b"GET" });
            m.extend_from_slice(b" /public/x HTTP/1.1");
        } else {
            m.extend(self.method());
            m.push(b' ');
            if self.rng.chance(3) {
                m.push(b' ');
            }
            m.extend(self.path());
            let version = self.version();
            if !version.is_empty() {
                m.push(b' ');
                m.extend_from_slice(version.as_bytes());
            }
        }
        m.extend_from_slice(eol);

        let mut lines: Vec<Vec<u8>> = Vec::new();
        let own_host = format!("Host: 127.0.0.1:{}", self.port);
        match self.rng.below(100) {
            _ if clean => lines.push(own_host.into_bytes()),
            0..=74 => lines.push(own_host.into_bytes()),
            75..=89 => lines.push(format!("Host: {}", self.rng.pick(HOSTS)).into_bytes()),
            90..=94 => {}
            _ => {
                lines.push(own_host.into_bytes());
                lines.push(format!("Host: {}", self.rng.pick(HOSTS)).into_bytes());
            }
        }
        // Mostly `Connection: close`, so every answer the gateway gives is read before the
        // socket is dropped (an unread proxied answer would look like a smuggled request).
        if self.rng.chance(65) {
            lines.push(b"Connection: close".to_vec());
        }
        let extra = self.rng.below(if clean { 3 } else { 8 });
        for _ in 0..extra {
            if clean {
                let h = self.rng.pick(&self.headers[..CLEAN_HEADERS]).clone();
                lines.push(h.into_bytes());
            } else if self.rng.chance(75) {
                let h = self.rng.pick(&self.headers).clone();
                lines.push(h.into_bytes());
            } else {
                let mut name = self.rng.token(20).into_bytes();
                if self.rng.chance(20) {
                    let n = 1 + self.rng.below(3);
                    name.extend(self.rng.nasty_bytes(n));
                }
                let n = self.rng.below(60);
                let value = self.rng.nasty_bytes(n);
                let mut line = name;
                line.extend_from_slice(b": ");
                line.extend(value);
                lines.push(line);
            }
        }
        let at = self.rng.below(lines.len() + 1);
        lines.insert(at, format!("X-Fuzz-Seq: {seq}").into_bytes());
        let body = self.body();
        let (framing, payload) = self.framing(&body);
        for f in framing {
            let at = self.rng.below(lines.len() + 1);
            lines.insert(at, f.into_bytes());
        }
        for l in lines {
            m.extend(l);
            m.extend_from_slice(eol);
        }
        m.extend_from_slice(eol);
        m.extend(payload);

        // Byte-level mutations on a few messages (never of the X-Fuzz-Seq line, which
        // traces what reaches the upstream back to its message).
        if !clean && self.rng.chance(10) {
            let tag = format!("X-Fuzz-Seq: {seq}").into_bytes();
            let ops = 1 + self.rng.below(4);
            for _ in 0..ops {
                if m.is_empty() {
                    break;
                }
                let before = m.clone();
                let at = self.rng.below(m.len());
                match self.rng.below(4) {
                    0 => m[at] = self.rng.next() as u8,
                    1 => {
                        let n = 1 + self.rng.below(8);
                        let junk = self.rng.nasty_bytes(n);
                        m.splice(at..at, junk);
                    }
                    2 => {
                        let end = (at + 1 + self.rng.below(16)).min(m.len());
                        m.drain(at..end);
                    }
                    _ => {
                        let end = (at + 1 + self.rng.below(32)).min(m.len());
                        let copy = m[at..end].to_vec();
                        m.splice(at..at, copy);
                    }
                }
                let intact = m
                    .windows(tag.len() + eol.len())
                    .any(|w| w[..tag.len()] == tag[..] && &w[tag.len()..] == eol);
                if !intact {
                    m = before;
                }
            }
        }
        let mut expect = 1;
        if self.rng.chance(15) {
            m.extend(
                format!(
                    "GET /public/after HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Fuzz-Seq: {seq}\r\n\r\n",
                    self.port
                )
                .into_bytes(),
            );
            expect = 2;
        }
        m.truncate(24 * 1024);
        Message {
            bytes: m,
            expect,
            seq,
        }
    }
}

#[derive(Default)]
struct Totals {
    messages: usize,
    responses: usize,
    no_answer: usize,
    proxied_2xx: usize,
    /// The X-Fuzz-Seq and X-Request-Id of every proxied 2xx answer (fuzz messages and
    /// probes), see `answer_key`: each request the upstream parsed must match one, or be a
    /// late 400 (see `Answered`).
    ok_ids: std::collections::HashMap<(String, String), usize>,
    by_class: [usize; 6],
    /// (status, the message that caused it), the first few.
    server_errors: Vec<(u16, String)>,
    server_error_count: usize,
    unparsable: usize,
    probes_ok: usize,
    /// Per message (by X-Fuzz-Seq): what it got back.
    by_seq: std::collections::HashMap<String, Answered>,
}

/// What one message got back.
#[derive(Debug, Clone, Default)]
struct Answered {
    /// 400s: pingora answers 400 ("Sent data after end of body") when more bytes arrive
    /// while the upstream is answering a request without a body; that request did reach
    /// the upstream, legitimately.
    bad_request: usize,
    /// Statuses and the start of the message, for the report.
    summary: String,
}

fn escaped(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(400)
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect()
}

/// The key of a proxied answer: the message (`X-Fuzz-Seq`) and the request id.
fn answer_key(seq: &str, request_id: &str) -> (String, String) {
    (seq.to_string(), request_id.to_string())
}

fn count(t: &mut Totals, reply: &RawReply, msg: &Message) {
    t.messages += 1;
    let summary = format!(
        "{:?}{} for b\"{}\"",
        reply.statuses(),
        if reply.closed { " (closed)" } else { "" },
        escaped(&msg.bytes[..msg.bytes.len().min(300)])
    );
    let bad_request = reply.responses.iter().filter(|r| r.status == 400).count();
    t.by_seq.insert(
        msg.seq.clone(),
        Answered {
            bad_request,
            summary,
        },
    );
    let seq = &msg.seq;
    let msg = &msg.bytes;
    if reply.responses.is_empty() {
        t.no_answer += 1;
    }
    if !reply.rest.is_empty() && !reply.responses.is_empty() {
        t.unparsable += 1;
    }
    for r in &reply.responses {
        t.responses += 1;
        t.by_class[(r.status / 100).min(5) as usize] += 1;
        if (200..300).contains(&r.status) && r.body == b"ok" {
            t.proxied_2xx += 1;
            if let Some(id) = r.header("x-request-id") {
                *t.ok_ids.entry(answer_key(seq, id)).or_default() += 1;
            }
        }
        if r.status >= 500 {
            t.server_error_count += 1;
            if t.server_errors.len() < 8 {
                t.server_errors.push((r.status, escaped(msg)));
            }
        }
    }
}

async fn worker(mut g: Generator, port: u16, deadline: Instant, totals: Arc<Mutex<Totals>>) {
    let limits = |expect| ReadLimits {
        first: Duration::from_secs(5),
        idle: Duration::from_millis(400),
        expect: Some(expect),
        grace: Duration::from_millis(400),
    };
    while Instant::now() < deadline {
        let msg = g.message();
        let mut c = RawClient::connect(port).await;
        // Sometimes in pieces, so the gateway's parser sees partial heads and bodies.
        if g.rng.chance(20) && msg.bytes.len() > 2 {
            let cut = 1 + g.rng.below(msg.bytes.len() - 1);
            c.write(&msg.bytes[..cut]).await;
            tokio::time::sleep(Duration::from_millis(g.rng.below(30) as u64)).await;
            c.write(&msg.bytes[cut..]).await;
        } else {
            c.write(&msg.bytes).await;
        }
        let reply = c.read(limits(msg.expect)).await;
        count(&mut totals.lock().unwrap(), &reply, &msg);
    }
}

fn vm_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A plain `GET /public/ok`, tagged `X-Fuzz-Seq: probe-<n>`: true when it got the
/// upstream's 200 (recorded like any proxied answer).
async fn probe(port: u16, n: usize, totals: &Mutex<Totals>) -> bool {
    let msg = format!(
        "GET /public/ok HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Fuzz-Seq: probe-{n}\r\nConnection: close\r\n\r\n"
    );
    let reply = exchange_with(
        port,
        msg.as_bytes(),
        ReadLimits {
            first: Duration::from_secs(5),
            idle: Duration::from_millis(300),
            expect: Some(1),
            grace: Duration::ZERO,
        },
    )
    .await;
    let ok = reply.status() == 200 && reply.first().body == b"ok";
    if ok {
        let mut t = totals.lock().unwrap();
        t.probes_ok += 1;
        if let Some(id) = reply.first().header("x-request-id") {
            *t.ok_ids
                .entry(answer_key(&format!("probe-{n}"), id))
                .or_default() += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fuzz_the_gateway_with_random_and_mutated_requests() {
    let secs: u64 = std::env::var("LOOPGATE_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("LOOPGATE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1);
            nanos ^ (u64::from(std::process::id()) << 32)
        });
    println!("fuzz: seed {seed} (replay with LOOPGATE_FUZZ_SEED={seed}), {secs} s, {WORKERS} connections");
    let test_started = Instant::now();

    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let up = RawUpstream::start().await;
    up.keep_bytes(false);
    let up_url = format!("http://{}", up.addr());
    let rig = rig_with(
        |_| {},
        |s| {
            s.app = up.addr();
            s.extra = format!(
                "\n[[routes]]\nname = \"admin\"\npath = \"/admin\"\nupstream = \"{up_url}\"\nauth = \"login\"\nroles = [\"school_admin\"]\n"
            );
        },
    )
    .await;
    let port = rig.setup.port;
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "alan").await;
    let session = b.jar.header_for("/");
    let totals = Arc::new(Mutex::new(Totals::default()));
    assert!(
        probe(port, 0, &totals).await,
        "the gateway answers before the run"
    );

    let rss_start = vm_rss_kb();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    let headers = fixed_headers(&session);
    for i in 0..WORKERS {
        let g = Generator {
            rng: Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            port,
            headers: headers.clone(),
            worker: i,
            sent: 0,
        };
        tasks.spawn(worker(g, port, deadline, totals.clone()));
    }
    let mut probes = Vec::new();
    let mut rss_peak = rss_start;
    while Instant::now() < deadline {
        tokio::time::sleep(PROBE_EVERY.min(deadline.saturating_duration_since(Instant::now())))
            .await;
        let at = test_started.elapsed().as_secs_f32();
        let ok = probe(port, probes.len() + 1, &totals).await;
        probes.push((at, ok));
        rss_peak = rss_peak.max(vm_rss_kb());
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("a fuzz worker failed");
    }
    settle().await;
    let final_probe = probe(port, probes.len() + 1, &totals).await;
    settle().await;
    let rss_end = vm_rss_kb();
    rss_peak = rss_peak.max(rss_end);

    let t = totals.lock().unwrap();
    let probes_ok = t.probes_ok;
    // Every probe that succeeded was a proxied 2xx too.
    let proxied_2xx = t.proxied_2xx + probes_ok;
    let upstream_requests = up.requests();
    let smuggled: Vec<&RawRequest> = upstream_requests
        .iter()
        .filter(|r| {
            r.header_canonical("x-loopwise-user")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("fuzz"))
        })
        .collect();
    let panics = PANICS.load(Ordering::SeqCst);
    println!(
        "fuzz: {} messages, {} responses (1xx {} 2xx {} 3xx {} 4xx {} 5xx {}), {} without an answer, {} with stray bytes",
        t.messages,
        t.responses,
        t.by_class[1],
        t.by_class[2],
        t.by_class[3],
        t.by_class[4],
        t.by_class[5],
        t.no_answer,
        t.unparsable
    );
    println!(
        "fuzz: upstream parsed {} requests on {} connections; proxied 2xx answers {proxied_2xx}; probes {probes_ok}/{}; VmRSS {} → {} kB (peak {}); panics {panics}",
        upstream_requests.len(),
        up.connections().len(),
        probes.len() + 2,
        rss_start,
        rss_end,
        rss_peak
    );

    let mut failures = Vec::new();
    if t.server_error_count > 0 {
        failures.push(format!(
            "(a) {} responses with status >= 500, e.g.:\n{}",
            t.server_error_count,
            t.server_errors
                .iter()
                .map(|(s, m)| format!("      {s} for b\"{m}\""))
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    if !smuggled.is_empty() {
        failures.push(format!(
            "(b) {} request(s) reached the upstream with X-Loopwise-User: fuzz, e.g. {:?}",
            smuggled.len(),
            smuggled.iter().take(3).collect::<Vec<_>>()
        ));
    }
    // Every request the upstream parsed must be one the gateway framed (it carries the
    // gateway's single X-Request-Id) and must match a proxied 2xx answer the fuzzer got,
    // or be a late 400 (see `Answered`). Anything else was smuggled past the gateway or
    // answered to nobody. Matching goes by message and id first (the gateway keeps a
    // plain client-sent id, and the corpus has a fixed one, so the id alone could pair a
    // request with another message's answer), then by the id alone for requests without
    // the message's tag (the second of two pipelined requests, a folded tag line), whose
    // ids the gateway made and so are unique.
    let mut ok_ids = t.ok_ids.clone();
    let mut late_budget: std::collections::HashMap<&str, usize> = t
        .by_seq
        .iter()
        .map(|(k, a)| (k.as_str(), a.bad_request))
        .collect();
    let mut late_400 = 0;
    let mut unframed = Vec::new();
    let mut untagged = Vec::new();
    for r in &upstream_requests {
        let ids = r.header_canonical("x-request-id");
        if ids.len() != 1 {
            unframed.push(format!(
                "      {:?} {:?} {:?}",
                r.method, r.target, r.headers
            ));
            continue;
        }
        let seq = r.header("x-fuzz-seq").unwrap_or("(none)");
        if let Some(n) = ok_ids.get_mut(&answer_key(seq, ids[0])).filter(|n| **n > 0) {
            *n -= 1;
            continue;
        }
        if let Some(n) = late_budget.get_mut(seq).filter(|n| **n > 0) {
            *n -= 1;
            late_400 += 1;
            continue;
        }
        untagged.push((r, seq, ids[0]));
    }
    let mut unaccounted = Vec::new();
    for (r, seq, id) in untagged {
        if let Some(n) = ok_ids
            .iter_mut()
            .find(|((_, answered), n)| answered == id && **n > 0)
            .map(|(_, n)| n)
        {
            *n -= 1;
            continue;
        }
        // A head that ends early (a bare LF before an empty line ends it where a strict
        // reader would not) loses the tag line to the rest, which pingora then answers
        // 400: the request the head framed reached the upstream legitimately, as a late
        // 400 of the message that starts with its request line.
        let line = format!("for b\"{} {} HTTP/1.1", r.method, r.target);
        if let Some(n) = late_budget
            .iter_mut()
            .find(|(k, n)| **n > 0 && t.by_seq.get(**k).is_some_and(|a| a.summary.contains(&line)))
            .map(|(_, n)| n)
        {
            *n -= 1;
            late_400 += 1;
            continue;
        }
        let answers = t
            .by_seq
            .get(seq)
            .map_or("-".to_string(), |a| a.summary.clone());
        unaccounted.push(format!(
            "      {seq}: {:?} {:?} reached the upstream; the client's answers: {answers}",
            r.method, r.target
        ));
    }
    println!(
        "fuzz: upstream requests {} <= proxied 2xx {proxied_2xx} + {late_400} answered 400 by pingora after reaching the upstream: {}",
        upstream_requests.len(),
        upstream_requests.len() <= proxied_2xx + late_400
    );
    if !unframed.is_empty() {
        failures.push(format!(
            "(b) {} request(s) reached the upstream that the gateway did not frame (no single X-Request-Id), e.g.:\n{}",
            unframed.len(),
            unframed.iter().take(4).cloned().collect::<Vec<_>>().join("\n")
        ));
    }
    if !unaccounted.is_empty() {
        failures.push(format!(
            "(b) the upstream parsed {} requests for {proxied_2xx} proxied 2xx answers; {} not accounted for, e.g.:\n{}",
            upstream_requests.len(),
            unaccounted.len(),
            unaccounted.iter().take(6).cloned().collect::<Vec<_>>().join("\n")
        ));
    }
    if panics > 0 {
        failures.push(format!("(c) {panics} panic(s) during the run"));
    }
    let failed_probes: Vec<f32> = probes
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(at, _)| *at)
        .collect();
    if !failed_probes.is_empty() || !final_probe {
        failures.push(format!(
            "(d) GET /public/ok failed at {failed_probes:?} s; at the end: {}",
            if final_probe { "ok" } else { "failed" }
        ));
    }
    let growth_mb = rss_peak.saturating_sub(rss_start) / 1024;
    if growth_mb >= 256 {
        failures.push(format!("(e) VmRSS grew by {growth_mb} MB"));
    }
    let elapsed = test_started.elapsed();
    if elapsed > Duration::from_secs(secs + 20) {
        failures.push(format!("the run took {elapsed:?}, over {secs} + 20 s"));
    }
    assert!(
        failures.is_empty(),
        "fuzz (seed {seed}) failed:\n  {}",
        failures.join("\n  ")
    );
}
