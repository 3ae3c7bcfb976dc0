//! No open redirect: every line of the public open-redirect corpus
//! (`../shared/testdata/openredirects.txt`, URL-unescaped once) is refused as a
//! post-login target — by the pure check, and end to end through a real login.

use crate::common;

use crate::common::gw::*;
use loopgate::login::target::safe_target;
use reqwest::StatusCode;

fn corpus() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/testdata/openredirects.txt"
    );
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("the corpus must be at {path} (it lives in ../shared): {e}"));
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            percent_encoding::percent_decode_str(l)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    assert!(lines.len() >= 559, "the whole corpus: {}", lines.len());
    lines
}

#[test]
fn every_corpus_line_is_refused_by_the_target_check() {
    let accepted: Vec<String> = corpus()
        .into_iter()
        .filter(|l| safe_target(l, "/oauth2").is_some())
        .collect();
    assert!(accepted.is_empty(), "accepted as safe: {accepted:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_line_ends_a_real_login_on_the_home_page() {
    let rig = rig_with(|e| e.auto_approve = true, |_| {}).await;
    let lines = corpus();
    let base = rig.url("");
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in lines.chunks(lines.len().div_ceil(8)) {
        let chunk = chunk.to_vec();
        let base = base.clone();
        tasks.spawn(async move {
            for line in chunk {
                let mut b = Browser::new(&base);
                let rd: String = form_urlencoded::byte_serialize(line.as_bytes()).collect();
                let start = b.navigate(&format!("/oauth2/start?rd={rd}")).await;
                assert_eq!(start.status, StatusCode::FOUND);
                // Auto-approve: Loopwise redirects straight back with a code.
                let back = common::http().get(start.location()).send().await.unwrap();
                let cb = url::Url::parse(back.headers()["location"].to_str().unwrap()).unwrap();
                let done = b
                    .navigate(&format!("{}?{}", cb.path(), cb.query().unwrap()))
                    .await;
                assert_eq!(done.status, StatusCode::FOUND, "{line:?}: {}", done.body);
                assert_eq!(done.location(), "/", "open redirect via {line:?}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(
        rig.em.stats().grant("authorization_code", "ok") as usize,
        lines.len()
    );
}
