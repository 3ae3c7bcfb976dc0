//! The smallest pingora reverse proxy, for `bench/run.sh`: pingora's own floor, with the
//! same pingora version and server settings as Loopgate (worker threads, keep-alive to
//! the upstream), and none of Loopgate's work. Every request goes to one upstream.
//!
//! Usage: bare_proxy --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N]

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bare {
    upstream: std::net::SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() {
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let listen = arg("--listen").expect("--listen ADDR");
    let upstream = arg("--upstream")
        .expect("--upstream ADDR")
        .parse()
        .expect("--upstream IP:PORT");
    let threads = arg("--threads").map_or(2, |t| t.parse().expect("--threads N"));
    let conf = ServerConf {
        threads,
        ..ServerConf::default()
    };
    let mut server = pingora::server::Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
