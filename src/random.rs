//! Unguessable identifiers from the operating system's CSPRNG, and cheap unique ones.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// `n` bytes of OS randomness.
///
/// Panics only if the OS has no entropy source at all, in which case nothing secure can run.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the operating system's random source is unavailable");
    buf
}

/// A URL-safe token carrying 256 bits of OS randomness (43 characters).
pub fn token() -> String {
    URL_SAFE_NO_PAD.encode(bytes::<32>())
}

/// 16 bytes that no other call in this process (or, but for a 2^-64 chance, another
/// process) returns: a per-thread counter mixed with a per-thread seed from the OS.
/// Not secret (request ids are logged and echoed); one OS read per thread instead of one
/// per request (a syscall on every proxied request).
pub fn unique() -> [u8; 16] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<Option<(u64, u64, u64)>> = const { Cell::new(None) };
    }
    STATE.with(|cell| {
        let (a, b, n) = cell.get().unwrap_or_else(|| {
            let seed = bytes::<16>();
            let (a, b) = seed.split_at(8);
            (
                u64::from_le_bytes(a.try_into().expect("8 bytes")),
                u64::from_le_bytes(b.try_into().expect("8 bytes")),
                0,
            )
        });
        cell.set(Some((a, b, n.wrapping_add(1))));
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&splitmix(a ^ n).to_le_bytes());
        out[8..].copy_from_slice(&splitmix(b.wrapping_add(n)).to_le_bytes());
        out
    })
}

/// SplitMix64's finaliser: a bijection on u64 that scatters consecutive inputs.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #[test]
    fn unique_ids_do_not_repeat_within_or_across_threads() {
        let mut seen = std::collections::HashSet::new();
        let others: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..10_000).map(|_| super::unique()).collect::<Vec<_>>())
            })
            .collect();
        for id in (0..10_000).map(|_| super::unique()) {
            assert!(seen.insert(id));
        }
        for t in others {
            for id in t.join().unwrap() {
                assert!(seen.insert(id), "a repeat across threads");
            }
        }
    }

    #[test]
    fn tokens_are_url_safe_and_distinct() {
        let a = super::token();
        let b = super::token();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }
}
