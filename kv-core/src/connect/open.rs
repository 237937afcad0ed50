//! Connecting: the settings (and a context's) become async-nats options with the
//! permission-error listener installed, and a [`Kv`] over the connection.

use std::sync::Arc;

use async_nats::ConnectOptions;

use crate::client::Kv;
use crate::connect::auth::{with_auth, Auth};
use crate::connect::builder::Connect;
use crate::connect::servers::parse_servers;
use crate::error::{Error, ErrorKind, Operation};
use crate::permission::Violations;

impl Connect {
    /// Connects and wraps the connection in a [`Kv`] that reports the server's permission
    /// errors as [`ErrorKind::PermissionDenied`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad URL, conflicting credentials or an unreadable
    /// context, credentials or key file; [`ErrorKind::Connection`] when no server could be
    /// reached or the server refused the credentials or the TLS handshake (the message says
    /// which; the cause is in `source()`).
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-made connection.
    pub async fn connect(self) -> Result<Kv, Error> {
        let api = self.api_prefix.clone();
        let (client, violations) = self
            .open()
            .await
            .map_err(|e| e.with_op(Operation::Connect))?;
        let kv = Kv::new(client).with_violations(violations);
        Ok(match api {
            Some(prefix) => kv.with_api_prefix(prefix),
            None => kv,
        })
    }

    /// Connects and returns the async-nats client itself (with the same permission-error
    /// listener installed, which only a [`Kv`] from [`Connect::connect`] uses).
    ///
    /// # Errors
    /// As [`Connect::connect`].
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future drops the half-made connection.
    pub async fn client(self) -> Result<async_nats::Client, Error> {
        let opened = self
            .open()
            .await
            .map_err(|e| e.with_op(Operation::Connect))?;
        Ok(opened.0)
    }

    async fn open(self) -> Result<(async_nats::Client, Arc<Violations>), Error> {
        let this = match self.context.clone() {
            Some(name) => self.merge_context(name.as_deref())?,
            None => self,
        };
        let (addrs, url_auth) = parse_servers(&this.servers)?;
        let shown = addrs
            .iter()
            .map(|a| a.as_url_str().trim_end_matches('/').to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let auth = match (url_auth, this.auth.as_slice()) {
            (Some(_), [_, ..]) => {
                return Err(Error::invalid_argument(
                    "credentials both in a server URL and given as an option",
                ))
            }
            (Some(a), []) => Some(a),
            (None, []) => None,
            (None, [a]) => Some(a.clone()),
            (None, [a, b, ..]) => {
                return Err(Error::invalid_argument(format!(
                    "two ways to authenticate given: {} and {}",
                    a.method(),
                    b.method()
                )))
            }
        };
        let inbox_prefix = this.inbox_prefix.clone().unwrap_or_else(|| "_INBOX".into());
        let violations = Violations::new(inbox_prefix);
        let opts = this.build(auth, &violations).await?;
        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| connect_error(&shown, e))?;
        Ok((client, violations))
    }

    async fn build(
        self,
        auth: Option<Auth>,
        violations: &Arc<Violations>,
    ) -> Result<ConnectOptions, Error> {
        let mut o = with_auth(ConnectOptions::new(), auth).await?;
        for ca in self.tls_ca {
            o = o.add_root_certificates(ca);
        }
        if let Some((cert, key)) = self.tls_client {
            o = o.add_client_certificate(cert, key);
        }
        if self.tls_first {
            o = o.tls_first();
        }
        if let Some(r) = self.require_tls {
            o = o.require_tls(r);
        }
        if let Some(t) = self.request_timeout {
            o = o.request_timeout(Some(t));
        }
        if let Some(n) = self.name {
            o = o.name(n);
        }
        if let Some(p) = self.inbox_prefix {
            o = o.custom_inbox_prefix(p);
        }
        let v = violations.clone();
        let user = self.events;
        o = o.event_callback(move |event| {
            if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = &event {
                v.record(text);
            }
            if let Some(f) = &user {
                f(&event);
            }
            async {}
        });
        for hook in self.hooks {
            o = hook(o);
        }
        Ok(o)
    }
}

fn connect_error(shown: &str, e: async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as K;
    // rustls' verdicts reach us as I/O errors of kind InvalidData.
    let io_kind = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let why = match e.kind() {
        K::Io if io_kind == Some(std::io::ErrorKind::InvalidData) => {
            "TLS failed (certificates, or TLS required on one side only)"
        }
        K::AuthorizationViolation => "the server refused the credentials",
        K::Authentication => "cannot sign the server's challenge with the credentials",
        K::Tls => "TLS failed (certificates, or TLS required on one side only)",
        K::TimedOut => "timed out",
        K::Dns => "cannot resolve the host",
        K::ServerParse => "invalid server address",
        K::Io | K::MaxReconnects => "cannot reach the server",
    };
    let kind = match e.kind() {
        K::ServerParse => ErrorKind::InvalidArgument,
        _ => ErrorKind::Connection,
    };
    Error::new(kind, format!("cannot connect to {shown}: {why}"))
        .with_op(Operation::Connect)
        .with_source(e)
}
