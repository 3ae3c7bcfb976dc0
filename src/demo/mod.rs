//! `loopgate demo`: the emulator, a sample app and the gateway in front of both, in one
//! process on loopback, from an embedded config. No file and no external service needed.

pub mod app;

use std::net::SocketAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::config;
use crate::emulator::{ClientSpec, Emulator, EmulatorConfig, EmulatorHandle};
use crate::server::{GatewayHandle, StartError};

pub use app::SampleApp;

/// The demo's client id at the emulator.
pub const DEMO_CLIENT: &str = "loopgate-demo";

/// The embedded gateway config; `{...}` placeholders are filled at start.
const TEMPLATE: &str = include_str!("demo.toml");

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot start the Loopwise emulator: {0}")]
    Emulator(#[from] crate::emulator::EmulatorError),
    #[error("cannot start the sample app: {0}")]
    App(std::io::Error),
    #[error("the embedded demo config is invalid:\n{0}")]
    Config(config::ConfigErrors),
    #[error("cannot start the gateway: {0}")]
    Gateway(#[from] StartError),
}

pub struct Demo {
    /// The school `default` ("Demo School").
    pub emulator: EmulatorHandle,
    /// The school `south` ("South Academy"), for the chooser at `/district`.
    pub south: EmulatorHandle,
    pub app: SampleApp,
    pub gateway: GatewayHandle,
}

impl Demo {
    /// Starts the three services; the gateway listens on `listen` (the URL to open).
    pub async fn start(
        listen: SocketAddr,
        access_token_ttl: std::time::Duration,
    ) -> Result<Demo, DemoError> {
        let public_url = format!("http://{listen}");
        let school = |subdomain: &str, id: u64, openid: bool| EmulatorConfig {
            access_token_ttl,
            clients: vec![ClientSpec {
                id: DEMO_CLIENT.into(),
                secret: None,
                redirect_uri: format!("{public_url}/oauth2/callback"),
            }],
            school_subdomain: subdomain.into(),
            school_id: id,
            openid,
            ..EmulatorConfig::default()
        };
        let emulator = Emulator::start(school("demo", 4242, false)).await?;
        // A newer school: OpenID Connect (ID tokens, JWKS) besides Loopwise's dialect.
        let south = Emulator::start(school("south", 5151, true)).await?;
        let app = SampleApp::start(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .map_err(DemoError::App)?;
        let secret = STANDARD.encode(crate::random::bytes::<32>());
        let text = TEMPLATE
            .replace("{listen}", &listen.to_string())
            .replace("{public_url}", &public_url)
            .replace("{south_issuer}", south.url())
            .replace("{issuer}", emulator.url())
            .replace("{client_id}", DEMO_CLIENT)
            .replace("{session_secret}", &secret)
            .replace("{app}", &format!("http://{}", app.addr));
        let cfg = config::parse(&text, std::path::Path::new("."), &|_| None)
            .map_err(DemoError::Config)?;
        let gateway = GatewayHandle::start(cfg).await?;
        Ok(Demo {
            emulator,
            south,
            app,
            gateway,
        })
    }

    pub fn url(&self) -> String {
        self.gateway.url()
    }

    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.emulator.shutdown().await;
        self.south.shutdown().await;
    }
}
