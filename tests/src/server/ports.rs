//! Free ports for the kit's servers, reserved across processes.

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::PathBuf;

/// The ports the kit's servers listen on: below Linux's ephemeral range (32768–60999), from
/// which clients take their local ports. A server port from that range can be handed to some
/// client's connection while its node is down, and the restart on the same port then fails
/// ("address already in use": seen with suites running side by side).
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port of [`SERVER_PORTS`] that no kit in any process hands out while this value lives:
/// an exclusive lock on `<temp>/kvtk-tests-ports/<port>`, taken before the port is probed.
/// Without it, between one test process probing a port and its server binding it, another
/// test process could probe the same port (a route port was taken twice: "bind: address
/// already in use" in 1 of 120 cluster starts with three suites side by side). The lock goes
/// with the process, however it ends.
#[derive(Debug)]
pub(crate) struct Reserved {
    port: u16,
    _lock: File,
}

impl Reserved {
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `port`, if no one holds its lock and nothing listens on it now.
    fn take(dir: &std::path::Path, port: u16) -> Option<Reserved> {
        let lock = File::create(dir.join(port.to_string())).ok()?;
        lock.try_lock().ok()?;
        TcpListener::bind(("127.0.0.1", port)).ok()?;
        Some(Reserved { port, _lock: lock })
    }
}

fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("kvtk-tests-ports");
    fs::create_dir_all(&dir).expect("kvtk-tests: cannot create the port lock directory");
    dir
}

/// A free port on 127.0.0.1, reserved for the caller, from [`SERVER_PORTS`].
pub(super) fn free_port() -> Reserved {
    free_ports(1).remove(0)
}

/// `n` distinct free ports of [`SERVER_PORTS`] on 127.0.0.1, reserved for the caller.
pub(crate) fn free_ports(n: usize) -> Vec<Reserved> {
    use rand::Rng as _;
    let (dir, mut rng) = (lock_dir(), rand::rng());
    let mut held = Vec::with_capacity(n);
    for _ in 0..10_000 {
        if held.len() == n {
            break;
        }
        held.extend(Reserved::take(&dir, rng.random_range(SERVER_PORTS)));
    }
    assert_eq!(
        held.len(),
        n,
        "kvtk-tests: no free port in {SERVER_PORTS:?}"
    );
    held
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_is_not_handed_out_again_until_released() {
        let first = free_port();
        let dir = lock_dir();
        assert!(Reserved::take(&dir, first.port()).is_none());
        let number = first.port();
        drop(first);
        let again = Reserved::take(&dir, number).expect("free once released");
        assert_eq!(again.port(), number);
    }
}
