//! Cross-crate scenarios of kv-toolkit, in `tests/`: apps that use several recipes together
//! (locks, elections, configuration, membership) against real `nats-server` processes started
//! by the test kit, `kvtk-tests`. The library is empty; it is not published.
