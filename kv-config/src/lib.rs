//! kv-config (placeholder)
