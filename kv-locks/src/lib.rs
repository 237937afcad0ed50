//! kv-locks (placeholder)
