//! Process signals for `loopgate run`: SIGTERM drains, SIGINT stops at once, SIGQUIT hands
//! the listening sockets to a new process started with `--upgrade`, and SIGUSR2 starts that
//! new process itself (the nginx way, so it stays in the same systemd cgroup) and then hands
//! over. SIGHUP (config reload) is handled by [`crate::runtime::live`].

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::runtime::live::Live;

/// How long a successor may take to start (Loopwise discovery included) and bind the
/// upgrade socket before the upgrade is abandoned and this process keeps serving.
const SUCCESSOR_START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    #[error("cannot start {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("the new process exited ({0}) before taking over; this one keeps serving")]
    Exited(std::process::ExitStatus),
    #[error(
        "the new process did not bind {0} within {1:?}; it was stopped and this one keeps serving"
    )]
    Timeout(PathBuf, Duration),
}

/// How to start this program again as an upgrading successor.
#[derive(Debug, Clone)]
pub(crate) struct Successor {
    /// This program's path, resolved at start-up (a replaced binary at the same path is
    /// exactly what an upgrade wants to run).
    pub exe: PathBuf,
    /// The command line this process was started with, minus the program name.
    pub args: Vec<OsString>,
    /// Where the successor binds to receive the sockets.
    pub upgrade_sock: PathBuf,
}

impl Successor {
    /// The successor's arguments: ours, with `--upgrade` added once.
    pub(crate) fn upgrade_args(&self) -> Vec<OsString> {
        let mut args = self.args.clone();
        if !args.iter().any(|a| a == "--upgrade") {
            // After the subcommand, so it parses as `run`'s flag.
            let at = args.iter().position(|a| a == "run").map_or(0, |i| i + 1);
            args.insert(at, "--upgrade".into());
        }
        args
    }

    /// Starts the successor and waits until it listens on the upgrade socket, so the
    /// hand-over that follows cannot miss it.
    pub(crate) async fn start(&self) -> Result<Child, UpgradeError> {
        remove_stale(&self.upgrade_sock);
        let mut child = Command::new(&self.exe)
            .args(self.upgrade_args())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|source| UpgradeError::Spawn {
                exe: self.exe.clone(),
                source,
            })?;
        let deadline = tokio::time::Instant::now() + SUCCESSOR_START_TIMEOUT;
        loop {
            if self.upgrade_sock.exists() {
                return Ok(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(UpgradeError::Exited(status));
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(UpgradeError::Timeout(
                    self.upgrade_sock.clone(),
                    SUCCESSOR_START_TIMEOUT,
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn remove_stale(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed a stale upgrade socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the old upgrade socket")
        }
    }
}

/// pingora's shutdown watch for `loopgate run`.
pub(crate) struct Signals {
    pub live: Arc<Live>,
    pub shutdown_delay: Duration,
    pub successor: Successor,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut quit), Ok(mut usr2)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::quit()),
            signal(SignalKind::user_defined2()),
        ) else {
            tracing::error!("cannot install signal handlers; SIGTERM will kill the process");
            return std::future::pending().await;
        };
        // SIGTERM drains from now on: ready.
        self.live
            .current()
            .shared
            .signals_pending
            .store(false, Ordering::Relaxed);
        loop {
            tokio::select! {
                _ = term.recv() => {
                    // Readiness first, listeners later: load balancers see 503 on /readyz
                    // and stop sending while new connections are still accepted.
                    self.live.current().shared.draining.store(true, Ordering::Relaxed);
                    tracing::info!(
                        delay = ?self.shutdown_delay,
                        grace = ?self.live.current().config.server.shutdown_grace,
                        "SIGTERM: not ready any more; closing the listeners after the delay, then draining"
                    );
                    tokio::time::sleep(self.shutdown_delay).await;
                    return ShutdownSignal::GracefulTerminate;
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping now");
                    return ShutdownSignal::FastShutdown;
                }
                _ = quit.recv() => {
                    tracing::info!(
                        sock = %self.successor.upgrade_sock.display(),
                        "SIGQUIT: handing the listening sockets to the new process, then draining"
                    );
                    return ShutdownSignal::GracefulUpgrade;
                }
                _ = usr2.recv() => {
                    tracing::info!(exe = %self.successor.exe.display(), "SIGUSR2: starting the new binary for a graceful upgrade");
                    match self.successor.start().await {
                        Ok(mut child) => {
                            // Reap it: under --daemon its first process exits once the
                            // daemon is forked; otherwise it outlives us.
                            std::thread::spawn(move || match child.wait() {
                                Ok(s) if s.success() => {}
                                Ok(s) => tracing::error!(status = %s, "the upgraded process failed"),
                                Err(e) => tracing::error!(error = %e, "cannot wait for the upgraded process"),
                            });
                            tracing::info!("the new process is ready for the sockets; handing over, then draining");
                            return ShutdownSignal::GracefulUpgrade;
                        }
                        Err(e) => tracing::error!(error = %e, "graceful upgrade abandoned"),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn successor(args: &[&str]) -> Successor {
        Successor {
            exe: "/usr/local/bin/loopgate".into(),
            args: args.iter().map(OsString::from).collect(),
            upgrade_sock: "/run/loopgate/upgrade.sock".into(),
        }
    }

    #[test]
    fn upgrade_flag_goes_after_the_subcommand_once() {
        assert_eq!(
            successor(&["run", "--daemon", "-c", "/etc/loopgate.toml"]).upgrade_args(),
            ["run", "--upgrade", "--daemon", "-c", "/etc/loopgate.toml"]
        );
        assert_eq!(
            successor(&["run", "--upgrade", "-c", "x.toml"]).upgrade_args(),
            ["run", "--upgrade", "-c", "x.toml"]
        );
    }
}
