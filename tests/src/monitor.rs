//! A minimal HTTP/1.0 GET for the server's monitoring endpoints (`/jsz`, `/routez`).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GETs `http://127.0.0.1:{port}{path}` and parses the body as JSON; `None` on any failure.
pub(crate) async fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let fetch = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        // HTTP/1.0: the server closes the connection after the body.
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let start = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        serde_json::from_slice(&response[start..]).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}
