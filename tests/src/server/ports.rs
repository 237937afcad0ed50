//! Free ports for the kit's servers.

/// The ports the kit's servers listen on: below Linux's ephemeral range (32768–60999), from
/// which clients take their local ports. A server port from that range can be handed to some
/// client's connection while its node is down, and the restart on the same port then fails
/// ("address already in use": seen with suites running side by side).
const SERVER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A free port on 127.0.0.1 at the time of the call, from [`SERVER_PORTS`].
pub(super) fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct ports of [`SERVER_PORTS`] free on 127.0.0.1 at the time of the call.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    use rand::Rng as _;
    let mut rng = rand::rng();
    let mut held = Vec::with_capacity(n);
    for _ in 0..10_000 {
        if held.len() == n {
            break;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", rng.random_range(SERVER_PORTS))) {
            held.push(l);
        }
    }
    assert_eq!(
        held.len(),
        n,
        "kvtk-tests: no free port in {SERVER_PORTS:?}"
    );
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .expect("kvtk-tests: a bound port")
        })
        .collect()
}
