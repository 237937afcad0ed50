//! What the HTTP handlers share: the console's state, the buckets it shows, and the shape of
//! an error answer.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvtk_core::Kv;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::schema::Schemas;

/// The header that carries the per-process secret on every write request.
pub const SECRET_HEADER: &str = "x-kvtk-secret";

/// The buckets the views read; `None` turns a view off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Buckets {
    pub(crate) locks: Option<String>,
    pub(crate) elections: Option<String>,
    pub(crate) members: Option<String>,
    pub(crate) config: Option<String>,
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) kv: Kv,
    pub(crate) hub: Arc<Hub>,
    pub(crate) buckets: Arc<Buckets>,
    pub(crate) schemas: Arc<Schemas>,
    pub(crate) allow_writes: bool,
    pub(crate) allow_remote: bool,
    pub(crate) secret: Arc<str>,
    pub(crate) port: u16,
    pub(crate) cancel: CancellationToken,
}

/// A JSON error answer: `{"error": message}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}
