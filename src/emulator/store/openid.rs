//! OpenID Connect at the emulated school (`--openid`): an ES256 key made at start-up, its
//! JWKS, and the ID token (Core §2, §3.1.3.3) of a code exchange that was granted `openid`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;
use serde_json::{json, Value};

use crate::emulator::error::OAuthError;
use crate::emulator::users::DemoUser;

/// The school's ID-token signing key. Its private half never leaves this type (no
/// `Debug` of the bytes).
pub(crate) struct SigningKey {
    key: EncodingKey,
    kid: String,
    /// The public key as a JWK (RFC 7517/7518 §6.2: EC P-256).
    jwk: Value,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

/// What an ID token says (Core §2), with the identity its granted scopes allow.
#[derive(Debug, Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    auth_time: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
}

/// One ID token to issue.
pub(crate) struct IdTokenFor<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub user: &'a DemoUser,
    pub scopes: &'a [String],
    pub nonce: Option<&'a str>,
    pub auth_time: u64,
    pub now: u64,
    pub ttl: u64,
}

impl SigningKey {
    /// A fresh P-256 key, as a school makes at start-up.
    pub(crate) fn generate() -> SigningKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("the system random source works");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("a key ring just made parses");
        // Uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = pair.public_key().as_ref();
        let (x, y) = (&point[1..33], &point[33..65]);
        let kid = crate::hex::encode(&crate::random::bytes::<8>());
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
            "use": "sig",
            "alg": "ES256",
            "kid": kid,
        });
        SigningKey {
            key: EncodingKey::from_ec_der(pkcs8.as_ref()),
            kid,
            jwk,
        }
    }

    /// The JWKS document served at `jwks_uri`.
    pub(crate) fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// Signs the ID token; `profile` adds `name`, `email` adds `email`/`email_verified`.
    pub(crate) fn id_token(&self, t: &IdTokenFor<'_>) -> Result<String, OAuthError> {
        let has = |s: &str| t.scopes.iter().any(|g| g == s);
        let claims = IdClaims {
            iss: t.issuer,
            sub: t.user.sub,
            aud: t.client_id,
            exp: t.now + t.ttl,
            iat: t.now,
            auth_time: t.auth_time,
            nonce: t.nonce,
            name: has("profile").then_some(t.user.name),
            email: has("email").then_some(t.user.email),
            email_verified: has("email").then_some(t.user.email_verified),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|_| OAuthError::invalid_request("could not sign the id_token"))
    }
}
