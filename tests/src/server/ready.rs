//! Waiting for a started server: its ports file, then JetStream (or `/healthz`) answering;
//! and what its monitoring endpoint tells (leaf node connections).

use std::fs;
use std::time::{Duration, Instant};

use super::handle::NatsServer;
use crate::monitor;
use crate::wait::poll_until;

/// How long [`NatsServer::start`], [`NatsServer::restart`] and friends wait for readiness.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Poll interval of the readiness loops: short, since a local server is ready in milliseconds.
pub(super) const POLL: Duration = Duration::from_millis(5);

/// Poll interval for cluster state (leaders), which changes on a scale of tens of milliseconds.
pub(crate) const POLL_CLUSTER: Duration = Duration::from_millis(20);

impl NatsServer {
    /// Waits until the process wrote its ports file, then learns the client and HTTP ports.
    pub(crate) async fn wait_listening(&mut self, deadline: Instant) {
        let found = poll_until(deadline, POLL, || {
            let ports = match self.read_ports_file() {
                Some(ports) => Ok(Some(ports)),
                None if !self.is_running() => Ok(None),
                None => Err(()),
            };
            std::future::ready(ports)
        });
        match found.await {
            Ok(Some((client, http))) => {
                self.port = client;
                self.http_port = http;
            }
            Ok(None) => self.fail(&format!("exited during start-up ({:?})", self.last_exit)),
            Err(()) => self.fail(&format!(
                "wrote no ports file within {:?}",
                self.ready_timeout
            )),
        }
    }

    /// The client and monitoring ports from this process's ports file, once written.
    fn read_ports_file(&self) -> Option<(u16, Option<u16>)> {
        let pid = self.pid()?;
        let suffix = format!("_{pid}.ports");
        let entry = fs::read_dir(&self.ports_dir)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))?;
        let json: serde_json::Value = serde_json::from_slice(&fs::read(entry.path()).ok()?).ok()?;
        let port_of = |key: &str| -> Option<u16> {
            let url = json.get(key)?.get(0)?.as_str()?;
            url.rsplit(':').next()?.trim_end_matches('/').parse().ok()
        };
        Some((port_of("nats")?, port_of("monitoring")))
    }

    /// Waits for the listeners, then until JetStream answers `$JS.API.INFO` on this node (or,
    /// when clients must authenticate, until `/healthz` says ok).
    pub(crate) async fn wait_ready(&mut self) {
        let deadline = Instant::now() + self.ready_timeout;
        self.wait_listening(deadline).await;
        let (secured, url, http) = (self.spec.is_secured(), self.client_url(), self.http_port);
        let ready = poll_until(deadline, POLL, || {
            let running = self.is_running();
            let url = url.clone();
            async move {
                let probe = if secured {
                    healthz(http).await
                } else {
                    jetstream_info(&url).await
                };
                match probe {
                    Ok(()) => Ok(true),
                    Err(_) if !running => Ok(false),
                    Err(e) => Err(e),
                }
            }
        });
        match ready.await {
            Ok(true) => {}
            Ok(false) => self.fail(&format!("exited during start-up ({:?})", self.last_exit)),
            Err(last_err) => self.fail(&format!(
                "not ready within {:?}: {last_err}",
                self.ready_timeout
            )),
        }
    }

    /// How many leaf node connections the server has now (monitoring `/leafz`; 0 when it
    /// cannot tell).
    pub async fn leaf_connections(&self) -> usize {
        self.monitor_json("/leafz")
            .await
            .and_then(|j| j.get("leafnodes")?.as_u64())
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    }

    /// Waits until the server has at least one leaf node connection (call it on the leaf or
    /// on the hub).
    ///
    /// # Panics
    ///
    /// When no leaf connection appears within `timeout`; the message carries the server log.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads the monitoring endpoint.
    pub async fn wait_leaf_connected(&self, timeout: Duration) {
        let connected = poll_until(Instant::now() + timeout, POLL_CLUSTER, || async {
            if self.leaf_connections().await > 0 {
                Ok(())
            } else {
                Err(())
            }
        });
        if connected.await.is_err() {
            self.fail(&format!("has no leaf node connection after {timeout:?}"));
        }
    }

    /// Fetches a monitoring endpoint such as `/jsz` as JSON.
    pub(crate) async fn monitor_json(&self, path: &str) -> Option<serde_json::Value> {
        monitor::get_json(self.http_port?, path).await
    }
}

/// One readiness probe of a secured server: its monitoring endpoint's `/healthz`.
async fn healthz(http_port: Option<u16>) -> Result<(), String> {
    let port = http_port.ok_or_else(|| "no monitoring port".to_string())?;
    let json = monitor::get_json(port, "/healthz")
        .await
        .ok_or_else(|| "no answer from /healthz".to_string())?;
    match json.get("status").and_then(|s| s.as_str()) {
        Some("ok") => Ok(()),
        _ => Err(format!("/healthz: {json}")),
    }
}

/// One readiness probe: connect and ask JetStream for account info.
async fn jetstream_info(url: &str) -> Result<(), String> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(1))
        .request_timeout(Some(Duration::from_millis(500)))
        .connect(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let reply = client
        .request("$JS.API.INFO", "".into())
        .await
        .map_err(|e| format!("$JS.API.INFO: {e}"));
    // Closing explicitly stops the client's background task before it is dropped.
    let _ = client.drain().await;
    let reply = reply?;
    let json: serde_json::Value =
        serde_json::from_slice(&reply.payload).map_err(|e| format!("$JS.API.INFO reply: {e}"))?;
    match json.get("error") {
        Some(err) => Err(format!("$JS.API.INFO: {err}")),
        None => Ok(()),
    }
}
