//! The smallest pingora reverse proxy, shared by `bare_proxy` and `bare_proxy_stock` (which
//! differ only in allocator and listener buffering): pingora's own floor, with the same
//! pingora version and server settings as Loopgate (worker threads, keep-alive to the
//! upstream), and none of Loopgate's work. Every request goes to one upstream.
//!
//! Arguments: --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N]

use async_trait::async_trait;
use pingora::listeners::ListenerConfig;
use pingora::prelude::*;
use pingora::protocols::l4::stream::L4BufferSettings;
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

/// Serves until killed; `buffers`: the listener's socket buffering (`None`: pingora's).
pub fn run(buffers: Option<L4BufferSettings>) {
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
    match buffers {
        Some(b) => proxy.add_listener(ListenerConfig::tcp(listen).l4_buffer(b)),
        None => proxy.add_tcp(&listen),
    }
    server.add_service(proxy);
    server.run_forever();
}
