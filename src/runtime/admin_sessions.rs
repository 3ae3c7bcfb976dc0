//! The operator's `/sessions` endpoints on the admin listener: `GET /sessions?sub=` lists
//! a user's sessions, `POST /sessions/revoke?sub=` ends them all. They want
//! `Authorization: Bearer <server.admin_token>` (and are off without one): the admin
//! listener is often reachable by more than the operators, and a page in an operator's
//! browser can POST to it.

use http::{Method, StatusCode};
use subtle::ConstantTimeEq;

use crate::gateway::Gateway;
use crate::session::StoreError;

/// An admin answer: status, content type, body, and whether to ask for a Bearer token.
pub(crate) struct AdminReply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
    pub challenge: bool,
}

impl AdminReply {
    pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> AdminReply {
        AdminReply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            challenge: false,
        }
    }

    fn json(status: StatusCode, body: &serde_json::Value) -> AdminReply {
        AdminReply {
            status,
            content_type: "application/json",
            body: format!("{body}\n"),
            challenge: false,
        }
    }

    fn error(status: StatusCode, code: &str, message: &str) -> AdminReply {
        AdminReply::json(
            status,
            &serde_json::json!({ "error": code, "message": message }),
        )
    }
}

/// `/sessions` and `/sessions/revoke`.
pub(crate) async fn reply(
    gw: &Gateway,
    method: &Method,
    path: &str,
    query: Option<&str>,
    authorization: Option<&str>,
    now: u64,
) -> AdminReply {
    let Some(expected) = &gw.config.server.admin_token else {
        return AdminReply::error(
            StatusCode::FORBIDDEN,
            "admin_token_unset",
            "the /sessions endpoints are off: set server.admin_token",
        );
    };
    let presented = authorization
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(expected.expose().as_bytes())) {
        let mut r = AdminReply::error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <server.admin_token>",
        );
        r.challenge = true;
        return r;
    }
    let wanted = if path == "/sessions" {
        Method::GET
    } else {
        Method::POST
    };
    if method != wanted && !(wanted == Method::GET && method == Method::HEAD) {
        return AdminReply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("{path} takes {wanted}"),
        );
    }
    let sub = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "sub")
            .map(|(_, v)| v.into_owned())
    });
    let Some(sub) = sub.filter(|s| !s.is_empty()) else {
        return AdminReply::error(
            StatusCode::BAD_REQUEST,
            "sub_missing",
            "name the user: ?sub=<user>",
        );
    };
    let result = if path == "/sessions" {
        gw.user_sessions(&sub, now)
            .await
            .map(|sessions| serde_json::json!({ "sub": sub, "sessions": sessions }))
    } else {
        gw.revoke_user(&sub, now)
            .await
            .map(|r| serde_json::to_value(r).expect("a revocation always serialises"))
    };
    match result {
        Ok(body) => AdminReply::json(StatusCode::OK, &body),
        Err(e @ StoreError::NotIndexed) => {
            AdminReply::error(StatusCode::CONFLICT, "needs_redis_store", &e.to_string())
        }
        Err(e) => {
            tracing::warn!(error = %e, "an operator's /sessions request failed");
            AdminReply::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "session_store_unavailable",
                &e.to_string(),
            )
        }
    }
}
