//! For `bench/run.sh`: what moka itself costs per entry, with nothing cached but the key.
//! Fills a `moka::future::Cache<[u8; 32], ()>` (the token cache's key type, with a
//! capacity bound as Loopgate builds it) with N entries and prints the RSS growth per
//! entry, under the same allocator as Loopgate: the floor under any cached validation.
//!
//! Usage: moka_floor [N]   (default 100000)

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |v| v.parse().expect("N"));
    let cache: moka::future::Cache<[u8; 32], ()> = moka::future::Cache::builder()
        .max_capacity(2 * n as u64)
        .build();
    let before = rss_kib();
    for i in 0..n {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        cache.insert(key, ()).await;
    }
    cache.run_pending_tasks().await;
    let after = rss_kib();
    println!(
        "{} {}",
        cache.entry_count(),
        (after - before) * 1024 / n.max(1) as i64
    );
}
