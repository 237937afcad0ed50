//! One server's version and `sync_interval`, asked through the system account
//! (`$SYS.REQ.SERVER.PING.VARZ`, filtered to the server by name).

use std::time::Duration;

use async_nats::{Client, RequestErrorKind};
use bytes::Bytes;
use kvtk_core::ServerVersion;
use serde::Deserialize;

use crate::report::{ServerFacts, SyncSetting};

/// The system-account request every server answers, filtered to one server by name.
const VARZ: &str = "$SYS.REQ.SERVER.PING.VARZ";

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
pub(crate) async fn ask(
    sys: &Client,
    name: &str,
    timeout: Duration,
) -> Result<ServerFacts, String> {
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
    parse(&msg.payload, name)
}

fn parse(payload: &[u8], name: &str) -> Result<ServerFacts, String> {
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
        let s = parse(always, "n0").unwrap();
        assert_eq!(
            (s.name.as_str(), s.version, s.sync),
            (
                "n0",
                Some(ServerVersion::new(2, 15, 1)),
                Some(SyncSetting::Always)
            )
        );
        let lax = br#"{"server":{"name":"n1","ver":"v2.12.1"},"data":{"jetstream":{"config":{"sync_interval":120000000000}}}}"#;
        let s = parse(lax, "n1").unwrap();
        assert_eq!(
            s.sync,
            Some(SyncSetting::Interval(Duration::from_secs(120)))
        );
        assert_eq!(s.version, Some(ServerVersion::new(2, 12, 1)));
        let no_js = br#"{"server":{"name":"n2","ver":"2.15.1"},"data":{}}"#;
        assert_eq!(parse(no_js, "n2").unwrap().sync, None);
        let refused = br#"{"server":{"name":"n2"},"error":{"code":500,"description":"boom"}}"#;
        assert!(parse(refused, "n2").unwrap_err().contains("boom"));
        assert!(parse(b"junk", "n2").is_err());
    }
}
