//! The HTTP side: the embedded page, the JSON endpoints, the event stream, and the headers
//! every answer carries.
//!
//! Every answer says `Content-Security-Policy: default-src 'self'` (no inline script, no
//! other origin), `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
//! `Referrer-Policy: no-referrer` and `Cache-Control: no-store`. Without `allow_remote`, a
//! request whose `Host` is not a loopback name is refused (421), so a page of another site
//! cannot reach the console by rebinding its own name to 127.0.0.1.

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

use crate::app::{error, App};
use crate::hub::View;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");
const WORKER: &str = include_str!("assets/worker.js");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

pub(crate) fn router(app: App) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
        .route(
            "/worker.js",
            get(|| async { asset("text/javascript; charset=utf-8", WORKER) }),
        )
        .route("/api/meta", get(meta))
        .route("/api/events", get(events))
        .route("/api/locks", get(|s| list(s, View::Locks)))
        .route("/api/elections", get(|s| list(s, View::Elections)))
        .route("/api/members", get(|s| list(s, View::Members)))
        .route("/api/config", get(|s| list(s, View::Config)))
        .route("/api/buckets", get(|s| list(s, View::Buckets)))
        .route("/api/item", get(item))
        .route("/api/config/diff", get(diff))
        .route("/api/locks/release", post(crate::actions::release))
        .route("/api/config/rollback", post(crate::actions::rollback))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// Refuses foreign `Host` names (unless remote access is allowed) and adds the security
/// headers to every answer.
async fn guard(State(app): State<App>, req: Request, next: Next) -> Response {
    if !app.allow_remote {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !loopback_host(host, app.port) {
            return error(StatusCode::MISDIRECTED_REQUEST, "unknown host name");
        }
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(h, "content-security-policy", CSP);
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cache-control", "no-store");
    res
}

/// `127.0.0.1:<port>`, `localhost:<port>`, `[::1]:<port>` (any 127/8 address).
pub(crate) fn loopback_host(host: &str, port: u16) -> bool {
    let Some((name, p)) = host.rsplit_once(':') else {
        return false;
    };
    if p.parse::<u16>().ok() != Some(port) {
        return false;
    }
    name == "localhost"
        || name == "[::1]"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn meta(State(app): State<App>) -> Json<Value> {
    let b = &app.buckets;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "server_version": app.kv.server_version().to_string(),
        "allow_writes": app.allow_writes,
        "buckets": {
            "locks": b.locks, "elections": b.elections, "members": b.members, "config": b.config,
        },
        "tabs": app.hub.subscribers(),
    }))
}

async fn list(State(app): State<App>, view: View) -> Json<Value> {
    Json(Value::Array(app.hub.items(view)))
}

#[derive(Deserialize)]
struct ItemQuery {
    view: String,
    id: String,
}

/// `/api/item?view=locks&id=<name>`: one item of a view.
async fn item(State(app): State<App>, Query(q): Query<ItemQuery>) -> Response {
    let Some(view) = View::ALL.into_iter().find(|v| v.as_str() == q.view) else {
        return error(StatusCode::NOT_FOUND, "no such view");
    };
    match app.hub.item(view, &q.id) {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, "not found"),
    }
}

#[derive(Deserialize)]
struct DiffQuery {
    key: String,
    from: u64,
    to: u64,
}

/// `/api/config/diff?key=<doc>&from=<rev>&to=<rev>`: the fields that differ between two
/// revisions of a document, `[{"path", "from", "to"}]` (a missing field is null).
async fn diff(State(app): State<App>, Query(q): Query<DiffQuery>) -> Response {
    let Some(doc) = app.hub.item(View::Config, &q.key) else {
        return error(StatusCode::NOT_FOUND, "no such document");
    };
    let at = |rev: u64| -> Option<Value> {
        doc["history"]
            .as_array()?
            .iter()
            .find(|v| v["revision"].as_u64() == Some(rev))
            .map(|v| v.get("value").cloned().unwrap_or(Value::Null))
    };
    let (Some(a), Some(b)) = (at(q.from), at(q.to)) else {
        return error(
            StatusCode::NOT_FOUND,
            "revision not in the document's history",
        );
    };
    let (fa, fb) = (kvtk_config::flatten(&a), kvtk_config::flatten(&b));
    let mut paths: Vec<&String> = fa.keys().chain(fb.keys()).collect();
    paths.sort();
    paths.dedup();
    let changes: Vec<Value> = paths
        .into_iter()
        .filter(|p| fa.get(*p) != fb.get(*p))
        .map(|p| json!({"path": p, "from": fa.get(p), "to": fb.get(p)}))
        .collect();
    Json(Value::Array(changes)).into_response()
}

/// `/api/events`: the whole state (`snapshot`), then every change (`update`) as server-sent
/// events. A tab that falls too far behind gets a new `snapshot`. The stream ends when the
/// tab goes away (its connection closes: nothing of it is left) or the console stops.
async fn events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (snapshot, rx) = app.hub.subscribe();
    let first = Event::default().event("snapshot").data(snapshot);
    let hub = app.hub.clone();
    let rest = stream::unfold((rx, hub), |(mut rx, hub)| async move {
        let ev = match rx.recv().await {
            Ok(msg) => Event::default().event("update").data(&*msg),
            Err(RecvError::Lagged(_)) => {
                let (snapshot, fresh) = hub.subscribe();
                rx = fresh;
                Event::default().event("snapshot").data(snapshot)
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(ev), (rx, hub)))
    });
    let all = stream::once(async { Ok(first) })
        .chain(rest)
        .take_until(app.cancel.cancelled_owned());
    Sse::new(all).keep_alive(KeepAlive::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_host_names_with_our_port() {
        assert!(loopback_host("127.0.0.1:7070", 7070));
        assert!(loopback_host("localhost:7070", 7070));
        assert!(loopback_host("[::1]:7070", 7070));
        assert!(loopback_host("127.1.2.3:7070", 7070));
        assert!(!loopback_host("127.0.0.1:80", 7070));
        assert!(!loopback_host("evil.example:7070", 7070));
        assert!(!loopback_host("127.0.0.1", 7070));
        assert!(!loopback_host("", 7070));
    }
}
