//! For `bench/run.sh`: what moka itself costs per entry, with nothing cached but the key.
//! Fills a `moka::future::Cache<[u8; 32], ()>` (the token cache's key type, with a
//! capacity bound as Loopgate builds it) with N entries and prints the RSS growth per
//! entry, under the same allocator as Loopgate: the floor under any cached validation.
//!
//! Usage: moka_floor [N]   (default 100000)

#[path = "shared/rss.rs"]
mod rss;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(100_000, |v| v.parse().expect("N"));
    let cache: moka::future::Cache<[u8; 32], ()> = moka::future::Cache::builder()
        .max_capacity(2 * n as u64)
        .build();
    let before = rss::rss_kib();
    for i in 0..n {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        cache.insert(key, ()).await;
    }
    cache.run_pending_tasks().await;
    let after = rss::rss_kib();
    println!(
        "{} {}",
        cache.entry_count(),
        after.saturating_sub(before) * 1024 / n.max(1) as u64
    );
}
