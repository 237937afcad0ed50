//! The actions: force-release of a lock holder and configuration rollback. Off unless the
//! console was started with writes allowed; each request must carry the per-process secret
//! in the [`SECRET_HEADER`](crate::SECRET_HEADER) header (never a cookie: a page of another
//! site can make the browser send cookies, not this header, and cannot read the secret).
//! Without writes allowed, or without the right secret, the answer is 403 and nothing is
//! done.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvtk_config::{ConfigWriter, Source};
use kvtk_core::{Bucket, Revision};
use kvtk_locks::{Locks, Token};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::{error, App, SECRET_HEADER};
use crate::feed::config::source_of;
use crate::hub::View;

/// How long an action may take before the answer says it timed out.
const ACTION_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the request may write: writes allowed, and the secret matches; else why not.
fn authorised(app: &App, headers: &HeaderMap) -> Result<(), &'static str> {
    if !app.allow_writes {
        return Err("writes are off: start the console with --allow-writes");
    }
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !same(given, app.secret.as_bytes()) {
        return Err("missing or wrong secret (the x-kvtk-secret header)");
    }
    Ok(())
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs an authorised action on `bucket` (`None`: the console shows no such bucket) within
/// [`ACTION_TIMEOUT`]: its JSON answer, or why it failed.
async fn act<F, Fut>(app: &App, headers: &HeaderMap, bucket: Option<&String>, work: F) -> Response
where
    F: FnOnce(Bucket) -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    if let Err(why) = authorised(app, headers) {
        return error(StatusCode::FORBIDDEN, why);
    }
    let Some(bucket) = bucket else {
        return error(StatusCode::NOT_FOUND, "the console shows no such bucket");
    };
    let run = async {
        let b = app.kv.open(bucket).await.map_err(|e| e.to_string())?;
        work(b).await
    };
    match tokio::time::timeout(ACTION_TIMEOUT, run).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(msg)) => error(StatusCode::UNPROCESSABLE_ENTITY, &msg),
        Err(_) => error(StatusCode::GATEWAY_TIMEOUT, "the action timed out"),
    }
}

#[derive(Deserialize)]
pub(crate) struct Release {
    name: String,
    token: u64,
}

/// `POST /api/locks/release {"name", "token"}`: evicts the entry with that token through
/// kvtk-locks' compare-and-set force-release.
pub(crate) async fn release(
    State(app): State<App>,
    headers: HeaderMap,
    Json(req): Json<Release>,
) -> Response {
    let Some(token) = Token::from_u64(req.token) else {
        return error(StatusCode::BAD_REQUEST, "a token is a number ≥ 1");
    };
    act(&app, &headers, app.buckets.locks.as_ref(), |b| async move {
        let locks = Locks::new(b).await.map_err(|e| e.to_string())?;
        let evicted = locks
            .force_release(&req.name, token)
            .await
            .map_err(|e| e.to_string())?;
        tracing::warn!(lock = %req.name, token = req.token, evicted, "force-release from the console");
        Ok(json!({ "evicted": evicted }))
    })
    .await
}

#[derive(Deserialize)]
pub(crate) struct Rollback {
    key: String,
    revision: u64,
}

/// `POST /api/config/rollback {"key", "revision"}`: writes the document as it was at that
/// revision through kvtk-config (validated again, against the schema too when one applies;
/// conditional on the current revision).
pub(crate) async fn rollback(
    State(app): State<App>,
    headers: HeaderMap,
    Json(req): Json<Rollback>,
) -> Response {
    let Some(rev) = Revision::new(req.revision) else {
        return error(StatusCode::BAD_REQUEST, "a revision is a number ≥ 1");
    };
    let source = app.hub.item(View::Config, &req.key).map_or_else(
        || Source::document(&req.key),
        |item| source_of(&item, &req.key),
    );
    let (schemas, key) = (app.schemas.clone(), req.key.clone());
    let check = move |v: &Value| match schemas.for_key(&key).map(|c| c.check(v)) {
        Some(r) if r["valid"] == json!(false) => Err(format!("schema: {}", r["errors"])),
        _ => Ok(()),
    };
    act(
        &app,
        &headers,
        app.buckets.config.as_ref(),
        |b| async move {
            let writer = ConfigWriter::<Value>::new(b, source).validate(check);
            let w = writer.rollback(rev).await.map_err(|e| e.to_string())?;
            tracing::warn!(key = %req.key, to = req.revision, "config rollback from the console");
            Ok(json!({"revision": w.revision.map(Revision::get), "changed": w.changed}))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"ab", b"abc"));
        assert!(!same(b"", b"abc"));
    }
}
