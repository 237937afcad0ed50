//! The server's config file, rendered from its [`NatsServerBuilder`] options.

use std::fmt::Write as _;
use std::path::Path;

use super::builder::NatsServerBuilder;
use super::handle::NatsServer;
use super::leaf_remote::LeafRemote;
use crate::auth::{quote, render_authorization};

impl NatsServerBuilder {
    /// The `tls {}` block, when the server serves TLS.
    fn render_tls(&self) -> Option<String> {
        let t = self.tls.as_ref()?;
        let path = |p: &Path| quote(&p.display().to_string());
        let mut s = format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n",
            path(&t.cert),
            path(&t.key),
            path(&t.ca)
        );
        if t.verify {
            s.push_str("  verify: true\n");
        }
        if t.handshake_first {
            s.push_str("  handshake_first: true\n");
        }
        s.push_str("}\n");
        Some(s)
    }

    /// Accounts, the system account and global users or token; or the operator's blocks.
    fn render_auth(&self) -> String {
        if let Some(op) = &self.operator {
            return op.render();
        }
        let mut c = String::new();
        if !self.accounts.is_empty() {
            c.push_str("accounts {\n");
            for a in &self.accounts {
                c.push_str(&a.render());
            }
            c.push_str("}\n");
        }
        if let Some(sys) = &self.system_account {
            let _ = writeln!(c, "system_account: {}", quote(sys));
        }
        if let Some(a) =
            render_authorization(&self.users, self.token.as_ref().map(|t| t.0.as_str()))
        {
            c.push_str(&a);
        }
        c
    }

    /// The `leafnodes {}` block: the listener and the remotes, when there are any.
    fn render_leafnodes(&self, leaf_port: Option<u16>) -> Option<String> {
        if leaf_port.is_none() && self.leaf_remotes.is_empty() {
            return None;
        }
        let mut s = String::from("leafnodes {\n");
        if let Some(p) = leaf_port {
            let _ = writeln!(s, "  listen: \"127.0.0.1:{p}\"");
        }
        if !self.leaf_remotes.is_empty() {
            let remotes: Vec<String> = self.leaf_remotes.iter().map(LeafRemote::render).collect();
            let _ = writeln!(s, "  remotes: [\n    {}\n  ]", remotes.join("\n    "));
        }
        s.push_str("}\n");
        Some(s)
    }
}

impl NatsServer {
    /// The whole config file of the server as it is now (its port once known, its options).
    pub(super) fn config(&self) -> String {
        let q = |p: &Path| serde_json::Value::from(p.display().to_string()).to_string();
        let port = if self.port == 0 {
            "-1".to_string()
        } else {
            self.port.to_string()
        };
        let mut c = String::new();
        let _ = writeln!(c, "host: 127.0.0.1\nport: {port}\nhttp_port: -1");
        let _ = writeln!(
            c,
            "server_name: {}",
            serde_json::Value::from(self.server_name())
        );
        let _ = writeln!(c, "ports_file_dir: {}", q(&self.ports_dir));
        let _ = writeln!(c, "log_file: {}", q(&self.log_path));
        let sync = if self.spec.sync_always {
            "\n  sync_interval: always"
        } else {
            ""
        };
        let domain = self
            .spec
            .domain
            .as_ref()
            .map_or(String::new(), |d| format!("\n  domain: {}", quote(d)));
        let _ = writeln!(
            c,
            "jetstream {{\n  store_dir: {}{sync}{domain}\n}}",
            q(&self.store_dir)
        );
        c.push_str(&self.spec.render_auth());
        c.extend(self.spec.render_tls());
        c.extend(self.spec.render_leafnodes(self.leaf_port));
        for line in &self.spec.extra {
            let _ = writeln!(c, "{line}");
        }
        if let Some(cl) = &self.spec.cluster {
            let routes: Vec<String> = cl
                .routes
                .iter()
                .map(|r| serde_json::Value::from(r.as_str()).to_string())
                .collect();
            let advertise = cl.advertise.as_ref().map_or(String::new(), |a| {
                format!("\n  advertise: {}", serde_json::Value::from(a.as_str()))
            });
            let _ = writeln!(
                c,
                "cluster {{\n  name: {}\n  listen: \"127.0.0.1:{}\"{advertise}\n  routes: [{}]\n}}",
                serde_json::Value::from(cl.name.as_str()),
                cl.listen_port,
                routes.join(", ")
            );
        }
        c
    }
}
