//! The command line: parses arguments and starts the requested service.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::emulator::{ClientSpec, Emulator, EmulatorConfig, SchoolSpec};

/// `EX_USAGE` from sysexits.h: bad flags or configuration.
pub const EXIT_USAGE: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "loopgate",
    version,
    about = "Authentication gateway for Loopwise schools"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway with a config file (SIGHUP reloads it, SIGTERM drains and exits,
    /// SIGUSR2 upgrades to the binary now at the same path without dropping connections).
    #[command(
        after_help = "Examples:\n  loopgate run --config /etc/loopgate/loopgate.toml\n  LOOPGATE_SESSION_SECRET=$(loopgate gen-secret) loopgate run -c loopgate.toml\n  loopgate run --daemon -c /etc/loopgate/loopgate.toml     # systemd Type=forking\n\nGraceful binary upgrade, by hand (what SIGUSR2 does for you):\n  loopgate run --upgrade -c loopgate.toml &   # waits on server.upgrade_sock\n  kill -QUIT <old pid>                        # old hands its sockets over, then drains"
    )]
    Run(RunArgs),
    /// Validate a config file: exit 0 and print the route table, or 64 listing every
    /// problem by key path.
    #[command(
        after_help = "Examples:\n  loopgate check --config /etc/loopgate/loopgate.toml\n  loopgate check config/loopgate.example.toml"
    )]
    Check(ConfigArgs),
    /// Run the demo: emulator + sample app + gateway, on loopback, no config needed.
    #[command(
        after_help = "Examples:\n  loopgate demo                      # then open http://127.0.0.1:8080\n  loopgate demo --listen 127.0.0.1:9080 --access-token-ttl 90s"
    )]
    Demo(DemoArgs),
    /// Run the Loopwise emulator: a strict local stand-in for a Loopwise school.
    #[command(
        after_help = "Examples:\n  loopgate emulator --listen 127.0.0.1:8081\n  loopgate emulator --client app=http://127.0.0.1:8080/oauth2/callback --auto-approve --auto-user grace\n  loopgate emulator --access-token-ttl 30s --client app:s3cret=https://gw.example/oauth2/callback\n  loopgate emulator --school north=http://127.0.0.1:8082 --school south=http://127.0.0.1:8083 --openid --client app=http://127.0.0.1:8080/oauth2/callback"
    )]
    Emulator(EmulatorArgs),
    /// List or end a user's sessions on every replica, through the running gateway's admin
    /// listener (needs `session.store = "redis"` and `server.admin_token`).
    #[command(
        after_help = "Examples:\n  loopgate sessions list --sub ada -c /etc/loopgate/loopgate.toml\n  loopgate sessions revoke --sub ada -c /etc/loopgate/loopgate.toml   # also revokes their refresh tokens"
    )]
    Sessions(SessionsArgs),
    /// Print a fresh session secret (base64 of 32 random bytes) for `session.secrets`.
    #[command(
        after_help = "Example:\n  echo \"LOOPGATE_SESSION_SECRET=$(loopgate gen-secret)\" >> /etc/loopgate/env"
    )]
    GenSecret,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Take the listening sockets over from the running Loopgate through
    /// `server.upgrade_sock`; send that process SIGQUIT within 5 s.
    #[arg(long)]
    pub upgrade: bool,
    /// Fork into the background once set up (config loaded, upstreams resolved)
    /// and write `server.pid_file`; for systemd `Type=forking`.
    #[arg(long)]
    pub daemon: bool,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The TOML config file.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub config_flag: Option<std::path::PathBuf>,
    /// The config file, as a positional argument.
    #[arg(value_name = "FILE", conflicts_with = "config_flag")]
    pub config_pos: Option<std::path::PathBuf>,
}

impl ConfigArgs {
    fn path(&self) -> Option<&std::path::Path> {
        self.config_flag.as_deref().or(self.config_pos.as_deref())
    }
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(subcommand)]
    pub action: SessionsAction,
}

#[derive(Debug, Subcommand)]
pub enum SessionsAction {
    /// Print the user's live sessions (created, last seen, client IP, user agent) as JSON.
    List(SessionsTarget),
    /// End every session of the user on every replica and revoke their refresh tokens.
    Revoke(SessionsTarget),
}

#[derive(Debug, Args)]
pub struct SessionsTarget {
    /// The user (`sub`), as Loopwise names them.
    #[arg(long)]
    pub sub: String,
    #[command(flatten)]
    pub config: ConfigArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the gateway listens (the URL to open).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Access-token lifetime at the demo's emulator.
    #[arg(long, default_value = "7200s", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
}

#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Issuer URL to advertise (default: http://<listen address>).
    #[arg(long)]
    pub issuer: Option<String>,
    /// Serve several schools instead of one: NAME=ISSUER (repeatable), each on the
    /// issuer's address with its own users' grants, clients and school id.
    #[arg(long = "school", value_parser = parse_school, conflicts_with_all = ["listen", "issuer"])]
    pub schools: Vec<SchoolSpec>,
    /// Speak OpenID Connect too: an ES256 id_token when `openid` is granted, a JWKS and
    /// /.well-known/openid-configuration.
    #[arg(long)]
    pub openid: bool,
    /// Access-token lifetime, e.g. 7200s, 2h, 5s.
    #[arg(long, default_value = "7200s", value_parser = parse_duration)]
    pub access_token_ttl: Duration,
    /// Authorization-code lifetime.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub code_ttl: Duration,
    /// HS256 secret that signs access tokens (default: random per run).
    #[arg(long, env = "LOOPWISE_EMULATOR_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Pre-register a client: ID[:SECRET]=REDIRECT_URI (repeatable).
    #[arg(long = "client", value_parser = parse_client)]
    pub clients: Vec<ClientSpec>,
    /// Skip the login and consent pages, signing in the default user.
    #[arg(long)]
    pub auto_approve: bool,
    /// The demo user --auto-approve signs in: ada (admin), grace (teacher), alan (student).
    #[arg(long, requires = "auto_approve")]
    pub auto_user: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

fn parse_client(s: &str) -> Result<ClientSpec, String> {
    s.parse::<ClientSpec>().map_err(|e| e.to_string())
}

fn parse_school(s: &str) -> Result<SchoolSpec, String> {
    s.parse::<SchoolSpec>().map_err(|e| e.to_string())
}

/// Runs the parsed command to completion and returns the process exit code.
/// `run` owns the thread (pingora builds its own runtimes); the others get a tokio runtime.
pub fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Run(_)) {
        crate::logging::init(crate::logging::LogFormat::Text, "info");
    }
    match cli.command {
        Command::Run(args) => run_gateway(&args),
        Command::Check(args) => check(&args),
        Command::Demo(args) => with_runtime(run_demo(args)),
        Command::Emulator(args) => with_runtime(run_emulator(args)),
        Command::Sessions(args) => with_runtime(sessions(args)),
        Command::GenSecret => {
            use base64::Engine;
            println!(
                "{}",
                base64::engine::general_purpose::STANDARD.encode(crate::random::bytes::<32>())
            );
            ExitCode::SUCCESS
        }
    }
}

fn with_runtime(f: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("loopgate: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ConfigArgs) -> Result<crate::config::Config, ExitCode> {
    let Some(path) = args.path() else {
        eprintln!("loopgate: give the config file: --config FILE");
        return Err(ExitCode::from(EXIT_USAGE));
    };
    crate::config::load(path).map_err(|errors| {
        eprintln!(
            "loopgate: {} has {} problem(s):",
            path.display(),
            errors.0.len()
        );
        for e in &errors.0 {
            eprintln!("  {e}");
        }
        ExitCode::from(EXIT_USAGE)
    })
}

/// `loopgate sessions …`: asks the gateway's admin listener, which does the work (every
/// replica shares the Redis store it acts on).
async fn sessions(args: SessionsArgs) -> ExitCode {
    let (target, path, method) = match &args.action {
        SessionsAction::List(t) => (t, "/sessions", reqwest::Method::GET),
        SessionsAction::Revoke(t) => (t, "/sessions/revoke", reqwest::Method::POST),
    };
    let config = match load(&target.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(token) = &config.server.admin_token else {
        eprintln!(
            "loopgate: set server.admin_token in the config: the /sessions endpoints need it"
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let mut admin = config.server.admin_listen;
    if admin.ip().is_unspecified() {
        admin.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let sub: String = form_urlencoded::byte_serialize(target.sub.as_bytes()).collect();
    let url = format!("http://{admin}{path}?sub={sub}");
    let answer = async {
        let r = reqwest::Client::new()
            .request(method, &url)
            .bearer_auth(token.expose())
            .timeout(Duration::from_secs(30))
            .send()
            .await?;
        let status = r.status();
        Ok::<_, reqwest::Error>((status, r.text().await?))
    };
    match answer.await {
        Ok((status, body)) if status.is_success() => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            eprintln!("loopgate: {url}: {status}: {}", message.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("loopgate: cannot reach the admin listener at {admin}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &ConfigArgs) -> ExitCode {
    match load(args) {
        Ok(c) => {
            let schools = match c.schools.as_slice() {
                [only] if only.name == crate::oauth::DEFAULT_SCHOOL => {
                    format!("issuer {}", only.issuer)
                }
                all => format!(
                    "schools {}",
                    all.iter()
                        .map(|s| format!("{} ({})", s.name, s.issuer))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            println!(
                "config OK: listen {}, public URL {}, {schools}, {} route(s)",
                c.server.listen,
                c.server.public_url,
                c.routes.len()
            );
            println!();
            print!("{}", route_table(&c));
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// The routes in the order they are matched (most specific host, then longest path).
pub fn route_table(c: &crate::config::Config) -> String {
    use crate::wire::host::HostPattern;
    let mut routes: Vec<&crate::config::RouteConfig> = c.routes.iter().collect();
    routes.sort_by_key(|r| {
        std::cmp::Reverse((r.host.specificity(), r.path.trim_end_matches('/').len()))
    });
    let mut out = format!(
        "{:<16} {:<22} {:<14} {:<7} {}\n",
        "ROUTE", "HOST", "PATH", "AUTH", "UPSTREAM / POLICY"
    );
    for r in routes {
        let host = match &r.host {
            HostPattern::Any => "*".to_string(),
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Wildcard(s) => format!("*{s}"),
        };
        let auth = match r.auth {
            crate::config::AuthKind::Login => "login",
            crate::config::AuthKind::Api => "api",
            crate::config::AuthKind::Public => "public",
        };
        let mut target: Vec<String> = r
            .upstreams
            .iter()
            .map(|u| {
                format!(
                    "{}://{}",
                    if u.tls { "https" } else { "http" },
                    u.authority()
                )
            })
            .collect();
        if target.is_empty() {
            target.push("(policy only)".into());
        }
        let req = &r.requirements;
        for (label, v) in [
            ("scopes", &req.scopes),
            ("roles", &req.roles),
            ("schools", &req.schools),
        ] {
            if !v.is_empty() {
                target.push(format!("{label}={}", v.join(",")));
            }
        }
        out.push_str(&format!(
            "{:<16} {:<22} {:<14} {:<7} {}\n",
            r.name,
            host,
            r.path,
            auth,
            target.join(" ")
        ));
    }
    out
}

fn run_gateway(run: &RunArgs) -> ExitCode {
    let args = &run.config;
    let config = match load(args) {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::logging::init(config.log.format, &config.log.level);
    let path = args
        .path()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mode = crate::server::RunMode {
        upgrade: run.upgrade,
        daemon: run.daemon,
    };
    match crate::server::run_blocking(config, path, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loopgate: {e}");
            tracing::error!(error = %e, "start-up failed");
            ExitCode::FAILURE
        }
    }
}

async fn run_demo(args: DemoArgs) -> ExitCode {
    let demo = match crate::demo::Demo::start(args.listen, args.access_token_ttl).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("loopgate demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!();
    println!(
        "  Loopgate demo is running. Open {} in a browser.",
        demo.url()
    );
    println!("  Sign in as a demo user (ada: school admin, grace: teacher, alan: student),");
    println!("  approve the consent page, and the sample app shows who you are.");
    println!(
        "  Two schools: {}/district accepts Demo School and South Academy, and asks which.",
        demo.url()
    );
    println!(
        "  (Loopwise emulators: {} and {}; Ctrl-C stops everything.)",
        demo.emulator.url(),
        demo.south.url()
    );
    println!();
    shutdown_signal().await;
    demo.shutdown().await;
    ExitCode::SUCCESS
}

async fn run_emulator(args: EmulatorArgs) -> ExitCode {
    let base = EmulatorConfig {
        listen: args.listen,
        issuer: args.issuer,
        access_token_ttl: args.access_token_ttl,
        code_ttl: args.code_ttl,
        jwt_secret: args.jwt_secret,
        clients: args.clients,
        auto_approve: args.auto_approve,
        auto_user: args.auto_user,
        openid: args.openid,
        ..EmulatorConfig::default()
    };
    // One school by default; with --school, one per NAME=ISSUER, told apart by school id.
    let configs: Vec<(String, EmulatorConfig)> = if args.schools.is_empty() {
        vec![(base.school_subdomain.clone(), base)]
    } else {
        args.schools
            .iter()
            .zip(0u64..)
            .map(|(school, i)| {
                let config = EmulatorConfig {
                    listen: school.listen,
                    issuer: Some(school.issuer.clone()),
                    school_subdomain: school.name.clone(),
                    school_id: base.school_id + i,
                    ..base.clone()
                };
                (school.name.clone(), config)
            })
            .collect()
    };
    let mut handles = Vec::new();
    for (name, config) in configs {
        let clients: Vec<String> = config.clients.iter().map(|c| c.id.clone()).collect();
        let openid = config.openid;
        let handle = match Emulator::start(config).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("loopgate emulator: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        tracing::info!(school = %name, url = %handle.url(), listen = %handle.addr(), clients = ?clients, openid, "Loopwise emulator ready");
        println!(
            "Loopwise emulator listening on {} (issuer {}, school {name})",
            handle.addr(),
            handle.url()
        );
        handles.push(handle);
    }
    shutdown_signal().await;
    tracing::info!("shutting down");
    for handle in handles {
        handle.shutdown().await;
    }
    ExitCode::SUCCESS
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
