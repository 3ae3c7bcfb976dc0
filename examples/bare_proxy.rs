//! The bare pingora proxy for `bench/run.sh`, with the two settings Loopgate found to lower
//! pingora's floor (see `bench/RESULTS.md`): mimalloc as the global allocator and no read
//! buffer on the plain listener, exactly as `src/main.rs` and `src/server.rs` set them. So
//! "Loopgate / bare" is Loopgate's own work only. `bare_proxy_stock` is stock pingora.
//!
//! Usage: bare_proxy --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N]

#[path = "shared/bare.rs"]
mod bare;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    bare::run(Some(
        pingora::protocols::l4::stream::L4BufferSettings::default().read(0),
    ));
}
