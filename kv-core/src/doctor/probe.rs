//! What the doctor looks at: the bucket's stream and, through the system account, the VARZ
//! of every server hosting it.

use std::time::Duration;

use async_nats::jetstream::stream::{self, PersistenceMode, StorageType};
use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use serde::Deserialize;

use super::report::{ServerFacts, SyncSetting};
use super::rules::Facts;
use crate::client::{Kv, ServerVersion};
use crate::config::{validate_bucket_name, Storage};
use crate::error::{Error, Operation};

/// The system-account request every server answers, filtered to one server by name.
const VARZ: &str = "$SYS.REQ.SERVER.PING.VARZ";

/// Reads the bucket's stream and its servers' settings.
pub(crate) async fn facts(kv: &Kv, system: Option<&Client>, bucket: &str) -> Result<Facts, Error> {
    validate_bucket_name(bucket).map_err(|e| e.with_op(Operation::Status))?;
    let info: stream::Info = kv
        .js()
        .api(&format!("STREAM.INFO.KV_{bucket}"), Bytes::new())
        .await
        .map_err(|e| e.with_op(Operation::Status))?;
    let (servers, sync_unknown) = match system {
        None => (
            vec![connected_server(kv)],
            Some("no system-account client was given".to_string()),
        ),
        Some(sys) => hosting_servers(kv, sys, &info).await,
    };
    let c = &info.config;
    Ok(Facts {
        bucket: bucket.to_string(),
        replicas: c.num_replicas.max(1),
        storage: match c.storage {
            StorageType::Memory => Storage::Memory,
            StorageType::File => Storage::File,
        },
        persist_async: c.persist_mode == Some(PersistenceMode::Async),
        per_key_ttl: c.allow_message_ttl,
        atomic: c.allow_atomic_publish,
        history: c.max_messages_per_subject,
        mirror_of: c.mirror.as_ref().map(|m| m.name.clone()),
        expires: c.allow_message_ttl || !c.max_age.is_zero(),
        servers,
        sync_unknown,
    })
}

/// The server this client is connected to: its version from `INFO`, its sync unknown.
fn connected_server(kv: &Kv) -> ServerFacts {
    ServerFacts {
        name: kv.client().server_info().server_name,
        version: Some(kv.server_version()),
        sync: None,
    }
}

/// The stream's leader and replicas (a stream on a server outside a cluster names none:
/// then the connected server), each asked for its VARZ.
async fn hosting_servers(
    kv: &Kv,
    sys: &Client,
    info: &stream::Info,
) -> (Vec<ServerFacts>, Option<String>) {
    let mut names: Vec<String> = info
        .cluster
        .iter()
        .flat_map(|c| {
            c.leader
                .iter()
                .cloned()
                .chain(c.replicas.iter().map(|p| p.name.clone()))
        })
        .collect();
    if names.is_empty() {
        names.push(kv.client().server_info().server_name);
    }
    let asked = names.iter().map(|n| varz(sys, n, kv.js().timeout));
    let answers = futures::future::join_all(asked).await;
    let mut reasons = Vec::new();
    let servers = names
        .into_iter()
        .zip(answers)
        .map(|(name, answer)| {
            answer.unwrap_or_else(|reason| {
                reasons.push(reason);
                ServerFacts {
                    version: (name == kv.client().server_info().server_name)
                        .then(|| kv.server_version()),
                    name,
                    sync: None,
                }
            })
        })
        .collect();
    (servers, (!reasons.is_empty()).then(|| reasons.join("; ")))
}

#[derive(Deserialize)]
struct VarzAnswer {
    server: VarzServer,
    #[serde(default)]
    data: Option<VarzData>,
    #[serde(default)]
    error: Option<VarzError>,
}

#[derive(Deserialize)]
struct VarzServer {
    name: String,
    #[serde(default)]
    ver: String,
}

#[derive(Deserialize)]
struct VarzError {
    #[serde(default)]
    description: String,
}

#[derive(Deserialize, Default)]
struct VarzData {
    #[serde(default)]
    jetstream: VarzJs,
}

#[derive(Deserialize, Default)]
struct VarzJs {
    #[serde(default)]
    config: Option<VarzJsConfig>,
}

#[derive(Deserialize)]
struct VarzJsConfig {
    /// Nanoseconds (a Go `time.Duration`).
    #[serde(default)]
    sync_interval: u64,
    #[serde(default)]
    sync_always: bool,
}

/// One server's version and sync setting, or why they could not be read.
async fn varz(sys: &Client, name: &str, timeout: Duration) -> Result<ServerFacts, String> {
    let filter = serde_json::json!({ "server_name": name, "exact_match": true });
    let req = async_nats::Request::new()
        .payload(Bytes::from(filter.to_string()))
        .timeout(Some(timeout));
    let msg = sys.send_request(VARZ, req).await.map_err(|e| match e.kind() {
        RequestErrorKind::NoResponders => format!(
            "nobody answered {VARZ}: the system-account client is not in the system account"
        ),
        RequestErrorKind::TimedOut => format!(
            "server {name} did not answer {VARZ} in time (down, or the client may not publish there)"
        ),
        _ => format!("{VARZ} could not be sent"),
    })?;
    parse_varz(&msg.payload, name)
}

fn parse_varz(payload: &[u8], name: &str) -> Result<ServerFacts, String> {
    let answer: VarzAnswer = serde_json::from_slice(payload)
        .map_err(|_| format!("server {name} answered VARZ with something unexpected"))?;
    if let Some(e) = answer.error {
        return Err(format!("server {name} refused VARZ: {}", e.description));
    }
    let config = answer.data.unwrap_or_default().jetstream.config;
    Ok(ServerFacts {
        version: ServerVersion::parse(&answer.server.ver),
        name: answer.server.name,
        sync: config.map(|c| {
            if c.sync_always {
                SyncSetting::Always
            } else {
                SyncSetting::Interval(Duration::from_nanos(c.sync_interval))
            }
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_varz_answers() {
        let always = br#"{"server":{"name":"n0","ver":"2.15.1"},"data":{"jetstream":{"config":{"sync_interval":120000000000,"sync_always":true}}}}"#;
        let s = parse_varz(always, "n0").unwrap();
        assert_eq!(
            (s.name.as_str(), s.version, s.sync),
            (
                "n0",
                Some(ServerVersion::new(2, 15, 1)),
                Some(SyncSetting::Always)
            )
        );
        let lax = br#"{"server":{"name":"n1","ver":"v2.12.1"},"data":{"jetstream":{"config":{"sync_interval":120000000000}}}}"#;
        let s = parse_varz(lax, "n1").unwrap();
        assert_eq!(
            s.sync,
            Some(SyncSetting::Interval(Duration::from_secs(120)))
        );
        assert_eq!(s.version, Some(ServerVersion::new(2, 12, 1)));
        let no_js = br#"{"server":{"name":"n2","ver":"2.15.1"},"data":{}}"#;
        assert_eq!(parse_varz(no_js, "n2").unwrap().sync, None);
        let refused = br#"{"server":{"name":"n2"},"error":{"code":500,"description":"boom"}}"#;
        assert!(parse_varz(refused, "n2").unwrap_err().contains("boom"));
        assert!(parse_varz(b"junk", "n2").is_err());
    }
}
