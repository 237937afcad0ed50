//! What the doctor looks at: the bucket's stream (kvtk-core's `Kv::stream_info`) and, through
//! the system account, the VARZ of every server hosting it (`varz.rs`).

use async_nats::jetstream::stream::{self, PersistenceMode, StorageType};
use kvtk_core::{Error, Kv, Storage};

use crate::report::ServerFacts;
use crate::rules::Facts;
use crate::varz;

/// Reads the bucket's stream and its servers' settings.
pub(crate) async fn facts(kv: &Kv, system: Option<&Kv>, bucket: &str) -> Result<Facts, Error> {
    let info = kv.stream_info(bucket).await?;
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
        consumers: info.state.consumer_count as u64,
        max_consumers: i64::from(c.max_consumers),
    })
}

/// The name of the server `kv` is connected to, from its latest `INFO`.
fn connected_name(kv: &Kv) -> String {
    kv.client().server_info().server_name
}

/// The server this client is connected to: its version from `INFO`, its sync unknown.
fn connected_server(kv: &Kv) -> ServerFacts {
    ServerFacts {
        name: connected_name(kv),
        version: Some(kv.server_version()),
        sync: None,
    }
}

/// The stream's leader and replicas (a stream on a server outside a cluster names none:
/// then the connected server), each asked for its VARZ.
async fn hosting_servers(
    kv: &Kv,
    sys: &Kv,
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
        names.push(connected_name(kv));
    }
    let asked = names
        .iter()
        .map(|n| varz::ask(sys.client(), n, kv.timeout()));
    let answers = futures::future::join_all(asked).await;
    let mut reasons = Vec::new();
    let servers = names
        .into_iter()
        .zip(answers)
        .map(|(name, answer)| {
            answer.unwrap_or_else(|reason| {
                tracing::debug!(server = %name, %reason, "no VARZ: sync_interval unchecked");
                reasons.push(reason);
                ServerFacts {
                    version: (name == connected_name(kv)).then(|| kv.server_version()),
                    name,
                    sync: None,
                }
            })
        })
        .collect();
    (servers, (!reasons.is_empty()).then(|| reasons.join("; ")))
}
