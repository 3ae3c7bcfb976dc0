//! Stock pingora for `bench/run.sh`: the bare proxy with glibc malloc and pingora's default
//! listener buffering (a 64 KB read buffer per connection), the floor before any tuning.
//!
//! Usage: bare_proxy_stock --listen 127.0.0.1:PORT --upstream 127.0.0.1:PORT [--threads N]

#[path = "shared/bare.rs"]
mod bare;

fn main() {
    bare::run(None);
}
