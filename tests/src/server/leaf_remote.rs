//! A leaf node link from a [`NatsServer`](super::NatsServer) to a hub.

use crate::auth::quote;

/// A leaf node connection from this server to a hub's leaf node listener.
///
/// ```
/// let remote = kvtk_tests::LeafRemote::new("nats-leaf://127.0.0.1:7422").local_account("APP");
/// assert_eq!(remote.url(), "nats-leaf://127.0.0.1:7422");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct LeafRemote {
    url: String,
    account: Option<String>,
}

impl std::fmt::Debug for LeafRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry the hub user's password.
        let shown = self.url.rsplit('@').next().unwrap_or(&self.url);
        f.debug_struct("LeafRemote")
            .field("url", &shown)
            .field("account", &self.account)
            .finish()
    }
}

impl LeafRemote {
    /// A remote to the hub's leaf node URL (`nats-leaf://[user:password@]127.0.0.1:PORT`, see
    /// [`NatsServer::leafnode_url`](crate::NatsServer::leafnode_url)); the URL may point at a
    /// [`crate::FaultProxy`] in front of the hub to cut and heal the leaf link. The hub
    /// authenticates the leaf as the user in the URL, binding the link to that user's account.
    pub fn new(url: impl Into<String>) -> LeafRemote {
        LeafRemote {
            url: url.into(),
            account: None,
        }
    }

    /// Binds the link to this local account (default: the global account `$G`).
    pub fn local_account(mut self, account: impl Into<String>) -> LeafRemote {
        self.account = Some(account.into());
        self
    }

    /// The hub URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The entry of the server's `leafnodes { remotes }` list.
    pub(super) fn render(&self) -> String {
        match &self.account {
            Some(a) => format!("{{ url: {}, account: {} }}", quote(&self.url), quote(a)),
            None => format!("{{ url: {} }}", quote(&self.url)),
        }
    }
}
