//! The deploy material (`deploy/`, `config/`) stays true to the gateway: the alert rules
//! pass `promtool check rules` and fire when they should (`promtool test rules`), the
//! dashboard's queries parse, every metric name the dashboard and the alerts use is one a
//! live gateway exports, every shipped config passes `loopgate check`, and the container,
//! Kubernetes and systemd files agree with those configs on ports, paths and timeouts.
//!
//! promtool comes with Debian's `prometheus` package, which `scripts/ensure-deps`
//! installs (without leaving a Prometheus server running).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::gw::*;
use crate::common::{http, tokens_for};
use reqwest::StatusCode;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// A fresh folder under the target dir for files the tests generate.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("deploy-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs promtool; a missing promtool is a failure that says how to get it.
fn promtool(args: &[&str]) -> Output {
    match Command::new("promtool").args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: run scripts/ensure-deps (it installs Debian's \
             `prometheus` package, which provides promtool; CI runs it)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_and_prometheus_config_pass_promtool() {
    let alerts = repo().join("deploy/prometheus/alerts.yml");
    let out = promtool(&["check", "rules", alerts.to_str().unwrap()]);
    assert_ok("promtool check rules deploy/prometheus/alerts.yml", &out);
    // The compose stack's Prometheus config (it loads alerts.yml from beside itself).
    let config = repo().join("deploy/prometheus/prometheus.yml");
    let out = promtool(&["check", "config", config.to_str().unwrap()]);
    assert_ok(
        "promtool check config deploy/prometheus/prometheus.yml",
        &out,
    );
}

/// `alerts.yml` without its `annotations:` blocks: promtool's unit tests compare
/// annotations too, and these tests are about when each alert fires, not its prose
/// (whose templates `promtool check rules` already validates).
fn without_annotations(rules: &str) -> String {
    let mut out = String::new();
    let mut skipping: Option<usize> = None;
    for line in rules.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(level) = skipping {
            if line.trim().is_empty() || indent > level {
                continue;
            }
            skipping = None;
        }
        if line.trim() == "annotations:" {
            skipping = Some(indent);
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Unit tests for deploy/prometheus/alerts.yml (`promtool test rules` format). Counters
/// are written as `start+step x count` per minute, so `0+60x30` is 1 per second.
const ALERT_TESTS: &str = r#"
rule_files:
  - alerts.yml
evaluation_interval: 1m
tests:
  # Healthy traffic: nothing fires.
  - interval: 1m
    input_series:
      - series: 'up{job="loopgate",instance="gw:9090"}'
        values: '1x40'
      - series: 'loopgate_requests_total{route="app",status_class="2xx",job="loopgate",instance="gw:9090"}'
        values: '0+100x40'
      - series: 'loopgate_requests_total{route="app",status_class="5xx",job="loopgate",instance="gw:9090"}'
        values: '0+1x40'
      - series: 'loopgate_backend_healthy{route="app",backend="10.0.0.1:80",job="loopgate",instance="gw:9090"}'
        values: '1x40'
      - series: 'loopgate_backend_healthy{route="app",backend="10.0.0.2:80",job="loopgate",instance="gw:9090"}'
        values: '0x40'
      - series: 'loopgate_school_ready{school="north",job="loopgate",instance="gw:9090"}'
        values: '1x40'
      - series: 'loopgate_refresh_total{result="ok",job="loopgate",instance="gw:9090"}'
        values: '0+60x40'
      - series: 'loopgate_refresh_total{result="invalid_grant",job="loopgate",instance="gw:9090"}'
        values: '0+1x40'
      - series: 'loopgate_loopwise_requests_total{endpoint="token",status_class="2xx",job="loopgate",instance="gw:9090"}'
        values: '0+60x40'
      - series: 'loopgate_loopwise_request_duration_seconds_bucket{endpoint="token",le="0.1",job="loopgate",instance="gw:9090"}'
        values: '0+60x40'
      - series: 'loopgate_loopwise_request_duration_seconds_bucket{endpoint="token",le="+Inf",job="loopgate",instance="gw:9090"}'
        values: '0+60x40'
      - series: 'loopgate_config_reloads_total{result="ok",job="loopgate",instance="gw:9090"}'
        values: '0 0 0 1 1 1 2x34'
      - series: 'loopgate_redis_commands_total{command="set_nx",result="ok",job="loopgate",instance="gw:9090"}'
        values: '0+60x40'
      - series: 'loopgate_redis_commands_total{command="set_nx",result="timeout",job="loopgate",instance="gw:9090"}'
        values: '0+1x40'
      - series: 'loopgate_refresh_shared_total{event="lease_wait",job="loopgate",instance="gw:9090"}'
        values: '0+5x40'
    alert_rule_test:
      - {eval_time: 30m, alertname: LoopgateDown, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopgateHigh5xxRatio, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopgateUpstreamErrors, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopgateNoHealthyBackend, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopgateRefreshInvalidGrantRatioHigh, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopgateRefreshTransientErrors, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopwiseErrors, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopwiseSlow, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopgateSchoolNotReady, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopgateConfigReloadFailed, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopgateRedisUnavailable, exp_alerts: []}
      - {eval_time: 30m, alertname: LoopgateRefreshLeaseContention, exp_alerts: []}

  # School south's metadata does not load on either replica; north is fine; a school
  # down on one replica only is not an alert (the other serves it).
  - interval: 1m
    input_series:
      - series: 'loopgate_school_ready{school="north",job="loopgate",instance="gw:9090"}'
        values: '1x20'
      - series: 'loopgate_school_ready{school="south",job="loopgate",instance="gw:9090"}'
        values: '1 0x19'
      - series: 'loopgate_school_ready{school="south",job="loopgate",instance="gw2:9090"}'
        values: '1 0x19'
      - series: 'loopgate_school_ready{school="east",job="loopgate",instance="gw:9090"}'
        values: '0x20'
      - series: 'loopgate_school_ready{school="east",job="loopgate",instance="gw2:9090"}'
        values: '1x20'
    alert_rule_test:
      - {eval_time: 4m, alertname: LoopgateSchoolNotReady, exp_alerts: []}
      - eval_time: 10m
        alertname: LoopgateSchoolNotReady
        exp_alerts:
          - exp_labels: {severity: critical, school: south}

  # Redis stops answering: most commands time out.
  - interval: 1m
    input_series:
      - series: 'loopgate_redis_commands_total{command="set_nx",result="ok",job="loopgate",instance="gw:9090"}'
        values: '0+60x5 300x20'
      - series: 'loopgate_redis_commands_total{command="set_nx",result="timeout",job="loopgate",instance="gw:9090"}'
        values: '0x5 0+30x20'
    alert_rule_test:
      - {eval_time: 5m, alertname: LoopgateRedisUnavailable, exp_alerts: []}
      - eval_time: 15m
        alertname: LoopgateRedisUnavailable
        exp_alerts:
          - exp_labels: {severity: critical, instance: "gw:9090"}

  # Sustained waits on other replicas' refresh leases.
  - interval: 1m
    input_series:
      - series: 'loopgate_refresh_shared_total{event="lease_wait",job="loopgate",instance="gw:9090"}'
        values: '0+120x40'
    alert_rule_test:
      - {eval_time: 5m, alertname: LoopgateRefreshLeaseContention, exp_alerts: []}
      - eval_time: 30m
        alertname: LoopgateRefreshLeaseContention
        exp_alerts:
          - exp_labels: {severity: warning, instance: "gw:9090"}

  # The gateway stops answering scrapes.
  - interval: 1m
    input_series:
      - series: 'up{job="loopgate",instance="gw:9090"}'
        values: '1 1 1 0 0 0 0 0 0 0'
    alert_rule_test:
      - {eval_time: 4m, alertname: LoopgateDown, exp_alerts: []}
      - eval_time: 8m
        alertname: LoopgateDown
        exp_alerts:
          - exp_labels: {severity: critical, job: loopgate, instance: "gw:9090"}

  # 1 in 6 answers of route app is a 5xx; route quiet is fine.
  - interval: 1m
    input_series:
      - series: 'loopgate_requests_total{route="app",status_class="2xx",job="loopgate",instance="gw:9090"}'
        values: '0+100x30'
      - series: 'loopgate_requests_total{route="app",status_class="5xx",job="loopgate",instance="gw:9090"}'
        values: '0+20x30'
      - series: 'loopgate_requests_total{route="quiet",status_class="2xx",job="loopgate",instance="gw:9090"}'
        values: '0+100x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: LoopgateHigh5xxRatio
        exp_alerts:
          - exp_labels: {severity: critical, route: app}

  # A backend that refuses connections, 1 per second.
  - interval: 1m
    input_series:
      - series: 'loopgate_upstream_errors_total{route="app",kind="connect",job="loopgate",instance="gw:9090"}'
        values: '0+60x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: LoopgateUpstreamErrors
        exp_alerts:
          - exp_labels: {severity: warning, route: app, kind: connect}

  # Route app: both backends down; route api: one of two down (still served).
  - interval: 1m
    input_series:
      - series: 'loopgate_backend_healthy{route="app",backend="10.0.0.1:80",job="loopgate",instance="gw:9090"}'
        values: '1 0x10'
      - series: 'loopgate_backend_healthy{route="app",backend="10.0.0.2:80",job="loopgate",instance="gw:9090"}'
        values: '1 0x10'
      - series: 'loopgate_backend_healthy{route="api",backend="10.0.0.3:80",job="loopgate",instance="gw:9090"}'
        values: '1 0x10'
      - series: 'loopgate_backend_healthy{route="api",backend="10.0.0.4:80",job="loopgate",instance="gw:9090"}'
        values: '1x10'
    alert_rule_test:
      - eval_time: 5m
        alertname: LoopgateNoHealthyBackend
        exp_alerts:
          - exp_labels: {severity: critical, route: app}

  # A third of the refreshes are refused with invalid_grant.
  - interval: 1m
    input_series:
      - series: 'loopgate_refresh_total{result="ok",job="loopgate",instance="gw:9090"}'
        values: '0+60x60'
      - series: 'loopgate_refresh_total{result="invalid_grant",job="loopgate",instance="gw:9090"}'
        values: '0+30x60'
    alert_rule_test:
      - eval_time: 40m
        alertname: LoopgateRefreshInvalidGrantRatioHigh
        exp_alerts:
          - exp_labels: {severity: warning}
      - {eval_time: 40m, alertname: LoopgateRefreshTransientErrors, exp_alerts: []}

  # Loopwise's token endpoint times out now and then.
  - interval: 1m
    input_series:
      - series: 'loopgate_refresh_total{result="ok",job="loopgate",instance="gw:9090"}'
        values: '0+60x30'
      - series: 'loopgate_refresh_total{result="transient_error",job="loopgate",instance="gw:9090"}'
        values: '0+6x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: LoopgateRefreshTransientErrors
        exp_alerts:
          - exp_labels: {severity: warning}

  # Loopwise: token answers 5xx a third of the time, revoke gets no answer at all,
  # userinfo is fine.
  - interval: 1m
    input_series:
      - series: 'loopgate_loopwise_requests_total{endpoint="token",status_class="2xx",job="loopgate",instance="gw:9090"}'
        values: '0+60x30'
      - series: 'loopgate_loopwise_requests_total{endpoint="token",status_class="5xx",job="loopgate",instance="gw:9090"}'
        values: '0+30x30'
      - series: 'loopgate_loopwise_requests_total{endpoint="userinfo",status_class="2xx",job="loopgate",instance="gw:9090"}'
        values: '0+60x30'
      - series: 'loopgate_loopwise_requests_total{endpoint="revoke",status_class="error",job="loopgate",instance="gw:9090"}'
        values: '0+6x30'
    alert_rule_test:
      - eval_time: 15m
        alertname: LoopwiseErrors
        exp_alerts:
          - exp_labels: {severity: critical, endpoint: token}
          - exp_labels: {severity: critical, endpoint: revoke}

  # Loopwise's token endpoint takes 3-4 s; userinfo is fast.
  - interval: 1m
    input_series:
      - series: 'loopgate_loopwise_request_duration_seconds_bucket{endpoint="token",le="1",job="loopgate",instance="gw:9090"}'
        values: '0x30'
      - series: 'loopgate_loopwise_request_duration_seconds_bucket{endpoint="token",le="2.5",job="loopgate",instance="gw:9090"}'
        values: '0x30'
      - series: 'loopgate_loopwise_request_duration_seconds_bucket{endpoint="token",le="5",job="loopgate",instance="gw:9090"}'
        values: '0+10x30'
      - series: 'loopgate_loopwise_request_duration_seconds_bucket{endpoint="token",le="+Inf",job="loopgate",instance="gw:9090"}'
        values: '0+10x30'
      - series: 'loopgate_loopwise_request_duration_seconds_bucket{endpoint="userinfo",le="0.1",job="loopgate",instance="gw:9090"}'
        values: '0+10x30'
      - series: 'loopgate_loopwise_request_duration_seconds_bucket{endpoint="userinfo",le="+Inf",job="loopgate",instance="gw:9090"}'
        values: '0+10x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: LoopwiseSlow
        exp_alerts:
          - exp_labels: {severity: warning, endpoint: token}

  # A refused reload whose error counter starts at 0 (pre-initialised) ...
  - interval: 1m
    input_series:
      - series: 'loopgate_config_reloads_total{result="error",job="loopgate",instance="gw:9090"}'
        values: '0 0 0 0 0 1x30'
    alert_rule_test:
      - {eval_time: 4m, alertname: LoopgateConfigReloadFailed, exp_alerts: []}
      - eval_time: 7m
        alertname: LoopgateConfigReloadFailed
        exp_alerts:
          - exp_labels: {severity: warning, result: error, job: loopgate, instance: "gw:9090"}
      - {eval_time: 25m, alertname: LoopgateConfigReloadFailed, exp_alerts: []}

  # ... and one whose counter only appears, already at 1, with the first failure.
  - interval: 1m
    input_series:
      - series: 'loopgate_config_reloads_total{result="error",job="loopgate",instance="gw:9090"}'
        values: '_ _ _ _ _ 1x30'
    alert_rule_test:
      - eval_time: 7m
        alertname: LoopgateConfigReloadFailed
        exp_alerts:
          - exp_labels: {severity: warning, result: error, job: loopgate, instance: "gw:9090"}
      - {eval_time: 25m, alertname: LoopgateConfigReloadFailed, exp_alerts: []}
"#;

#[test]
fn alert_rules_fire_when_they_should() {
    let dir = scratch("alert-tests");
    std::fs::write(
        dir.join("alerts.yml"),
        without_annotations(&read("deploy/prometheus/alerts.yml")),
    )
    .unwrap();
    let tests = dir.join("alerts.test.yml");
    std::fs::write(&tests, ALERT_TESTS).unwrap();
    let out = promtool(&["test", "rules", tests.to_str().unwrap()]);
    assert_ok("promtool test rules (alerts.yml unit tests)", &out);
}

/// Every panel of the dashboard, rows' collapsed panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("dashboard.panels") {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

#[test]
fn dashboard_is_valid_and_its_queries_parse() {
    let text = read("deploy/grafana/loopgate-dashboard.json");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let mut ids = BTreeSet::new();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut queries = 0;
    for p in panels(&dashboard) {
        let id = p["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let title = p["title"].as_str().unwrap_or_default();
        assert!(p["gridPos"].is_object(), "panel {title} has no gridPos");
        if p["type"] == "row" {
            continue;
        }
        assert!(!title.is_empty(), "panel {id} has no title");
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title} must use the dashboard's datasource variable"
        );
        let targets = p["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().expect("target expr");
            // Grafana's variables, as a query at 5-minute resolution would see them.
            let promql = expr
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("$__range", "1h")
                .replace("${instance}", ".*")
                .replace("$instance", ".*")
                .replace("${route}", ".*")
                .replace("$route", ".*");
            assert!(
                !promql.contains('$'),
                "panel {title}: unknown variable in {expr}"
            );
            let r = t["refId"].as_str().expect("target refId");
            rules.push_str(&format!(
                "      - record: dashboard:panel_{id}_{r}\n        expr: {}\n",
                serde_json::to_string(&promql).unwrap()
            ));
            queries += 1;
        }
    }
    assert!(queries >= 20, "only {queries} queries in the dashboard");
    let dir = scratch("dashboard");
    let file = dir.join("dashboard-queries.yml");
    std::fs::write(&file, &rules).unwrap();
    let out = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert_ok("promtool check rules (the dashboard's queries)", &out);
}

/// Metric names (`loopgate_*`, `process_*`) mentioned anywhere in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| {
            ["loopgate_", "process_"]
                .iter()
                .any(|p| w.len() > p.len() && w.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

/// What a scrape offers: every sample name and `# TYPE`/`# HELP` name, and the names of
/// histograms (and summaries), whose `_bucket`/`_sum`/`_count` series count as exported.
fn exported(scrape: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut names = BTreeSet::new();
    let mut histograms = BTreeSet::new();
    for line in scrape.lines() {
        let mut words = line.split_whitespace();
        if line.starts_with("# TYPE ") || line.starts_with("# HELP ") {
            let kind = words.nth(1).unwrap();
            let name = words.next().unwrap_or_default().to_string();
            if kind == "TYPE" && matches!(words.next(), Some("histogram" | "summary")) {
                histograms.insert(name.clone());
            }
            names.insert(name);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap();
            names.insert(name.to_string());
        }
    }
    (names, histograms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_use_only_metrics_the_gateway_exports() {
    // A route whose only backend refuses connections, for the upstream error series,
    // and a Redis, for the replica series (Redis commands, shared refreshes).
    let dead = free_port();
    let redis = crate::common::redis::RedisServer::start().await;
    let rig = rig_with(
        |e| e.access_token_ttl = Duration::from_secs(120),
        |s| {
            s.extra = format!(
                "\n[[routes]]\nname = \"down\"\npath = \"/down\"\nupstream = \"http://127.0.0.1:{dead}\"\nauth = \"public\"\n{}",
                redis.toml("lg-deploy:")
            )
        },
    )
    .await;
    let admin = format!(
        "http://{}",
        rig.gw.gateway().admin_addr().expect("admin listener")
    );

    // Enough traffic that the series the dashboard and the alerts use exist: a login
    // (logins, Loopwise token/userinfo calls, auth decisions, request and upstream
    // latency), a refresh, Bearer calls with a good and a bad token (cache lookups), an
    // upstream that refuses (upstream errors, 5xx) and a reload (refused: this gateway
    // has no config file; either result creates the series).
    let mut b = Browser::new(&rig.url(""));
    b.login("/", rig.em.url(), "ada").await;
    assert_eq!(b.xhr("/x").await.status, StatusCode::OK);
    rig.gw.gateway().shared.clock.advance(100);
    assert_eq!(b.xhr("/x").await.status, StatusCode::OK, "after a refresh");
    let t = tokens_for(&http(), rig.em.url(), "read", "grace").await;
    let good = t["access_token"].as_str().unwrap().to_string();
    for token in [good.as_str(), good.as_str(), "not-a-loopwise-token"] {
        http()
            .get(rig.url("/api/y"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
    }
    let r = http().get(rig.url("/down")).send().await.unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let _ = rig.gw.reload().await;

    let r = http().get(format!("{admin}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let scrape = r.text().await.unwrap();
    let (names, histograms) = exported(&scrape);

    let mut missing = Vec::new();
    let mut checked = 0;
    for file in [
        "deploy/grafana/loopgate-dashboard.json",
        "deploy/prometheus/alerts.yml",
    ] {
        let used = metric_names(&read(file));
        assert!(
            used.contains("loopgate_requests_total"),
            "{file} should use loopgate_requests_total: {used:?}"
        );
        for name in used {
            checked += 1;
            let histogram_series = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
                .any(|base| histograms.contains(base));
            if !names.contains(&name) && !histogram_series {
                missing.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(checked >= 15, "only {checked} metric names found");
    assert!(
        missing.is_empty(),
        "metric names the gateway does not export:\n  {}\n\nthe gateway exports:\n  {}",
        missing.join("\n  "),
        names.iter().cloned().collect::<Vec<_>>().join("\n  ")
    );
}

/// Every `*.toml` below `dir`, recursively.
fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// Every `{ env = "NAME" }` a config refers to.
fn env_names(v: &toml::Value, out: &mut BTreeSet<String>) {
    match v {
        toml::Value::Table(t) => {
            if let (Some(toml::Value::String(name)), 1) = (t.get("env"), t.len()) {
                out.insert(name.clone());
            }
            t.values().for_each(|v| env_names(v, out));
        }
        toml::Value::Array(a) => a.iter().for_each(|v| env_names(v, out)),
        _ => {}
    }
}

fn loopgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loopgate"))
}

#[test]
fn every_shipped_config_passes_loopgate_check() {
    let out = loopgate().arg("gen-secret").output().unwrap();
    assert_ok("loopgate gen-secret", &out);
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let mut files = Vec::new();
    toml_files(&repo().join("config"), &mut files);
    toml_files(&repo().join("deploy"), &mut files);
    files.sort();
    let rel: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(repo()).unwrap().display().to_string())
        .collect();
    for expected in [
        "config/loopgate.example.toml",
        "deploy/compose/loopgate.toml",
        "deploy/k8s/loopgate.toml",
    ] {
        assert!(
            rel.iter().any(|r| r == expected),
            "{expected} not found in {rel:?}"
        );
    }
    for (file, rel) in files.iter().zip(&rel) {
        let doc: toml::Value = toml::from_str(&std::fs::read_to_string(file).unwrap())
            .unwrap_or_else(|e| panic!("{rel} is not TOML: {e}"));
        let mut env = BTreeSet::new();
        env_names(&doc, &mut env);
        let mut cmd = loopgate();
        cmd.args(["check", "--config"]).arg(file);
        cmd.env_remove("RUST_LOG");
        // A valid session secret serves for any secret a config takes from the
        // environment (session secrets, client secret, JWT secret).
        for name in &env {
            cmd.env(name, &secret);
        }
        cmd.env("LOOPGATE_SESSION_SECRET", &secret);
        let out = cmd.output().unwrap();
        assert_ok(
            &format!("loopgate check --config {rel} (env: {env:?})"),
            &out,
        );
    }
}

#[test]
fn example_secrets_are_refused_rather_than_used() {
    let yaml = read("deploy/k8s/secret.example.yaml");
    let from_yaml = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("LOOPGATE_SESSION_SECRET:"))
        .expect("LOOPGATE_SESSION_SECRET in secret.example.yaml")
        .trim()
        .trim_matches('"')
        .to_string();
    let env = read("deploy/systemd/loopgate.env.example");
    let from_env = env
        .lines()
        .find_map(|l| l.strip_prefix("LOOPGATE_SESSION_SECRET="))
        .expect("LOOPGATE_SESSION_SECRET= in loopgate.env.example")
        .to_string();
    for (origin, placeholder) in [
        ("secret.example.yaml", from_yaml),
        ("loopgate.env.example", from_env),
    ] {
        let out = loopgate()
            .args(["check", "--config"])
            .arg(repo().join("deploy/k8s/loopgate.toml"))
            .env("LOOPGATE_SESSION_SECRET", &placeholder)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(64),
            "the placeholder from {origin} ({placeholder:?}) must not be a usable secret: {stderr}"
        );
        assert!(stderr.contains("session.secrets[0]"), "{stderr}");
    }
}

/// The value of `key` in a TOML table, as a string.
fn toml_str(doc: &toml::Value, table: &str, key: &str) -> String {
    match &doc[table][key] {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `"20s"` → 20 (the shipped configs write shutdown_grace in whole seconds).
fn seconds(duration: &str) -> u64 {
    duration
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected whole seconds like \"20s\", got {duration}"))
}

#[test]
fn container_kubernetes_and_systemd_files_agree_with_the_configs() {
    let compose: toml::Value = toml::from_str(&read("deploy/compose/loopgate.toml")).unwrap();
    let k8s: toml::Value = toml::from_str(&read("deploy/k8s/loopgate.toml")).unwrap();
    // In a container both listeners must be reachable from outside it.
    for (name, doc) in [("compose", &compose), ("k8s", &k8s)] {
        assert_eq!(toml_str(doc, "server", "listen"), "0.0.0.0:8080", "{name}");
        assert_eq!(
            toml_str(doc, "server", "admin_listen"),
            "0.0.0.0:9090",
            "{name}"
        );
    }

    let dockerfile = read("deploy/Dockerfile");
    for needle in [
        "EXPOSE 8080 9090",
        "http://127.0.0.1:9090/healthz",
        "USER 10001:10001",
        "/etc/loopgate/loopgate.toml",
        "cargo build --release --locked",
        r#"ENTRYPOINT ["loopgate"]"#,
    ] {
        assert!(
            dockerfile.contains(needle),
            "deploy/Dockerfile lacks `{needle}`"
        );
    }

    let deployment = read("deploy/k8s/deployment.yaml");
    for needle in [
        "containerPort: 8080",
        "containerPort: 9090",
        "path: /healthz",
        "path: /readyz",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "allowPrivilegeEscalation: false",
        "mountPath: /etc/loopgate",
        "name: loopgate-config",
    ] {
        assert!(
            deployment.contains(needle),
            "deploy/k8s/deployment.yaml lacks `{needle}`"
        );
    }
    // Without its comments (which explain how to apply the example Secret by hand).
    let kustomization: String = read("deploy/k8s/kustomization.yaml")
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(kustomization.contains("loopgate.toml") && kustomization.contains("loopgate-config"));
    assert!(
        !kustomization.contains("secret.example"),
        "the example Secret must not be deployed by default"
    );
    // The pod gets shutdown_delay (readiness off, still accepting) plus shutdown_grace
    // (draining) before it is killed.
    let grace = seconds(&toml_str(&k8s, "server", "shutdown_grace"));
    let delay = seconds(&toml_str(&k8s, "server", "shutdown_delay"));
    assert!(
        delay > 0,
        "k8s needs a shutdown_delay for endpoint removal to propagate"
    );
    let termination: u64 = deployment
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .expect("terminationGracePeriodSeconds")
        .trim()
        .parse()
        .unwrap();
    assert!(
        termination > grace + delay + 2,
        "{termination} s vs shutdown_delay {delay} s + shutdown_grace {grace} s"
    );

    // systemd stops the unit only after the longest shutdown_grace a shipped config uses.
    let unit = read("deploy/systemd/loopgate.service");
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .expect("TimeoutStopSec=")
        .trim()
        .parse()
        .expect("TimeoutStopSec in whole seconds");
    let example: toml::Value = toml::from_str(&read("config/loopgate.example.toml")).unwrap();
    let grace = seconds(&toml_str(&example, "server", "shutdown_grace"));
    assert!(
        stop > grace,
        "TimeoutStopSec={stop} vs shutdown_grace {grace} s"
    );
    // Type=forking follows the PID file the daemon writes; both default into
    // $RUNTIME_DIRECTORY, which RuntimeDirectory= sets.
    let pid_file = unit
        .lines()
        .find_map(|l| l.strip_prefix("PIDFile="))
        .expect("PIDFile=");
    let runtime_dir = unit
        .lines()
        .find_map(|l| l.strip_prefix("RuntimeDirectory="))
        .expect("RuntimeDirectory=");
    let as_systemd = |k: &str| match k {
        "RUNTIME_DIRECTORY" => Some(format!("/run/{runtime_dir}")),
        _ => Some(SECRET_A.to_string()),
    };
    let cfg = loopgate::config::parse(
        &read("config/loopgate.example.toml"),
        Path::new("/etc/loopgate"),
        &as_systemd,
    )
    .unwrap();
    assert_eq!(cfg.server.pid_file, Path::new(pid_file));
    assert!(cfg
        .server
        .upgrade_sock
        .starts_with(format!("/run/{runtime_dir}")));
    for needle in [
        "Type=forking",
        "ExecStart=/usr/local/bin/loopgate run --daemon --config",
        "--signal=SIGUSR2",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/loopgate",
        "--config /etc/loopgate/loopgate.toml",
    ] {
        assert!(unit.contains(needle), "loopgate.service lacks `{needle}`");
    }

    // Several replicas (the HPA, compose's shared store) need the shared Redis, wired
    // from the config to a Service and the Secret.
    for (name, doc) in [("compose", &compose), ("k8s", &k8s)] {
        assert_eq!(toml_str(doc, "session", "store"), "redis", "{name}");
    }
    assert_eq!(
        toml_str(&k8s, "redis", "url"),
        "redis://loopgate-redis:6379/0"
    );
    assert_eq!(toml_str(&compose, "redis", "url"), "redis://redis:6379/0");
    let redis_yaml = read("deploy/k8s/redis.yaml");
    for needle in [
        "name: loopgate-redis",
        "port: 6379",
        "key: LOOPGATE_REDIS_PASSWORD",
        "--requirepass",
        "readOnlyRootFilesystem: true",
        "component: gateway",
    ] {
        assert!(
            redis_yaml.contains(needle),
            "deploy/k8s/redis.yaml lacks `{needle}`"
        );
    }
    assert!(kustomization.contains("- redis.yaml"));
    assert!(read("deploy/k8s/secret.example.yaml").contains("LOOPGATE_REDIS_PASSWORD:"));
    assert!(read("deploy/k8s/horizontalpodautoscaler.yaml").contains("[redis]"));

    // Prometheus (compose) scrapes the gateway's admin listener.
    let prometheus = read("deploy/prometheus/prometheus.yml");
    assert!(prometheus.contains("gateway:9090"));
    let stack = read("deploy/compose/docker-compose.yml");
    for needle in [
        "deploy/Dockerfile",
        "loopgate.toml:/etc/loopgate/loopgate.toml",
        "loopwise.localhost",
        "http://localhost:8080/oauth2/callback",
        "traefik/whoami",
        "loopgate-dashboard.json",
        "redis:7.2-alpine",
        "condition: service_healthy",
    ] {
        assert!(
            stack.contains(needle),
            "docker-compose.yml lacks `{needle}`"
        );
    }
    // The emulator registers exactly the callback the compose config's public_url gives.
    let callback = format!(
        "{}/oauth2/callback",
        toml_str(&compose, "server", "public_url")
    );
    assert!(stack.contains(&format!(
        "{}={callback}",
        toml_str(&compose, "loopwise", "client_id")
    )));
}
