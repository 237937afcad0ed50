//! A real browser for the console's tests: Debian's headless chromium driven through
//! chromedriver (WebDriver) with fantoccini, plus `kvtk ui` started as a process and a
//! minimal HTTP client for its endpoints.
//!
//! scripts/test.sh installs chromium and chromium-driver (scripts/ensure-chromium.sh) before
//! the tests run; without them these tests fail with a message saying so, never skip.

#![allow(dead_code, clippy::unwrap_used)] // each test binary uses some of these; helpers panic by design

use std::path::PathBuf;
use std::process::Stdio;

use fantoccini::{Client, ClientBuilder};
use kvtk_tests::{until, within};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Where the screenshots go: `target/ui/` of the workspace.
pub(crate) fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/ui");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn chromedriver() -> String {
    if let Ok(p) = std::env::var("CHROMEDRIVER") {
        return p;
    }
    for p in ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("chromedriver not found: run scripts/ensure-chromium.sh (Debian's chromium and chromium-driver), or set CHROMEDRIVER")
}

/// chromedriver and one browser session; both end when dropped (the driver's process
/// group is killed, the browser with it).
pub(crate) struct Browser {
    pub(crate) client: Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub(crate) async fn start() -> Browser {
        // A free port (chromedriver does not report the one it picks for --port=0).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = tokio::process::Command::new(chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // "ChromeDriver was started successfully on port 41235."
        let mut lines = BufReader::new(driver.stdout.take().unwrap()).lines();
        within("chromedriver to start", async {
            loop {
                let line = lines
                    .next_line()
                    .await
                    .unwrap()
                    .expect("chromedriver exited");
                if line.contains("started successfully") {
                    return;
                }
            }
        })
        .await;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,900",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "args": args, "binary": "/usr/bin/chromium" },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = within(
            "a browser session",
            ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .unwrap();
        Browser {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Evaluates `expr` in the page (the value of `return (expr)`).
    pub(crate) async fn eval(&self, expr: &str) -> Value {
        self.client
            .execute(&format!("return ({expr});"), vec![])
            .await
            .unwrap_or(Value::Null)
    }

    /// Waits until `expr` is true in the page.
    pub(crate) async fn until(&self, what: &str, expr: &str) {
        until(what, || async { self.eval(expr).await == json!(true) }).await;
    }

    /// Saves a screenshot as `target/ui/<name>.png`.
    pub(crate) async fn shot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = shots_dir().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Whether a JavaScript dialog (alert, confirm, prompt) is open.
    pub(crate) async fn dialog_open(&self) -> bool {
        self.client.get_alert_text().await.is_ok()
    }

    /// Ends the session (the browser exits), then the driver.
    pub(crate) async fn close(mut self) {
        let _ = within("the browser to close", self.client.clone().close()).await;
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id().and_then(|p| i32::try_from(p).ok()) {
            // The driver leads its own group; the browser it started is in it.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// `kvtk ui` running on a free port, its URL (with the secret's fragment when writes are
/// allowed) read from its first line.
pub(crate) struct Console {
    pub(crate) child: tokio::process::Child,
    pub(crate) url: String,
    pub(crate) base: String,
    pub(crate) secret: Option<String>,
}

impl Console {
    pub(crate) async fn start(mut child: tokio::process::Child) -> Console {
        let out = child.stdout.take().unwrap();
        let mut lines = BufReader::new(out).lines();
        let line = within("kvtk ui to print its address", lines.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("kvtk ui exited: {:?}", child.try_wait()));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_string();
        let base = url.split('#').next().unwrap().to_string();
        let secret = url.split("#secret=").nth(1).map(str::to_string);
        Console {
            child,
            url,
            base,
            secret,
        }
    }

    /// `host:port`.
    pub(crate) fn addr(&self) -> String {
        self.base
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }

    /// One HTTP/1.1 request; the status and the body.
    pub(crate) async fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, String) {
        http(&self.addr(), method, path, headers, body).await
    }

    /// `GET <path>` as JSON.
    pub(crate) async fn get(&self, path: &str) -> Value {
        let (status, body) = self.http("GET", path, &[], "").await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// A minimal HTTP/1.1 client (`Connection: close`): enough for the console's endpoints.
pub(crate) async fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = within(
        "a connection to the console",
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .unwrap();
    let host = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map_or(addr, |(_, v)| *v);
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
    {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    within("the console's answer", s.read_to_end(&mut raw))
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
