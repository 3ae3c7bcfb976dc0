//! The command line: parses arguments and starts the requested service.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::emulator::{ClientSpec, Emulator, EmulatorConfig};

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
    /// Run the Loopwise emulator: a strict local stand-in for a Loopwise school.
    Emulator(EmulatorArgs),
}

#[derive(Debug, Args)]
pub struct EmulatorArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// Issuer URL to advertise (default: http://<listen address>).
    #[arg(long)]
    pub issuer: Option<String>,
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

/// Runs the parsed command to completion and returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Emulator(args) => run_emulator(args).await,
    }
}

async fn run_emulator(args: EmulatorArgs) -> ExitCode {
    let config = EmulatorConfig {
        listen: args.listen,
        issuer: args.issuer,
        access_token_ttl: args.access_token_ttl,
        code_ttl: args.code_ttl,
        jwt_secret: args.jwt_secret,
        clients: args.clients,
        auto_approve: args.auto_approve,
        auto_user: args.auto_user,
        ..EmulatorConfig::default()
    };
    let clients: Vec<String> = config.clients.iter().map(|c| c.id.clone()).collect();
    let handle = match Emulator::start(config).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("loopgate emulator: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing::info!(url = %handle.url(), listen = %handle.addr(), clients = ?clients, "Loopwise emulator ready");
    println!(
        "Loopwise emulator listening on {} (issuer {})",
        handle.addr(),
        handle.url()
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
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
