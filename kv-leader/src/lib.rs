//! kv-leader (placeholder)
