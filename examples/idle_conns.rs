//! For `bench/run.sh`: opens N keep-alive connections to a gateway, sends one request on
//! each and reads its whole answer, then keeps them all open and idle, so the gateway's
//! RSS per idle keep-alive connection can be measured from outside (this process's own
//! memory is not counted). Prints `open N` once every connection has had its answer, then
//! waits until stdin closes (or the process is killed) and closes them.
//!
//! Usage: idle_conns --addr 127.0.0.1:PORT --path /public/x --n 10000

use std::io::Read;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connections opened at once (the listen backlog and the gateway's accept loop set the
/// pace; more in flight only makes SYNs retry).
const IN_FLIGHT: usize = 256;

/// One request on a fresh connection; returns the connection once the answer is complete.
async fn open(addr: SocketAddr, request: &[u8]) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "closed before the answer was complete",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(std::io::Error::other(format!(
                    "answer: {}",
                    head.lines().next().unwrap_or("")
                )));
            }
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| std::io::Error::other("answer without content-length"))?;
            if buf.len() >= end + 4 + length {
                return Ok(s);
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let addr: SocketAddr = arg("--addr")
        .expect("--addr IP:PORT")
        .parse()
        .expect("--addr IP:PORT");
    let path = arg("--path").unwrap_or_else(|| "/".into());
    let n: usize = arg("--n").map_or(10_000, |v| v.parse().expect("--n N"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let mut open_conns = Vec::with_capacity(n);
    let mut pending = tokio::task::JoinSet::new();
    let mut started = 0;
    while open_conns.len() < n {
        while started < n && pending.len() < IN_FLIGHT {
            let request = request.clone();
            pending.spawn(async move { open(addr, &request).await });
            started += 1;
        }
        match pending.join_next().await {
            Some(Ok(Ok(s))) => open_conns.push(s),
            Some(Ok(Err(e))) => {
                eprintln!("idle_conns: connection {}: {e}", open_conns.len());
                std::process::exit(1);
            }
            Some(Err(e)) => panic!("{e}"),
            None => break,
        }
    }
    println!("open {}", open_conns.len());
    // Held open until whoever started us closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await
    .ok();
    drop(open_conns);
}
