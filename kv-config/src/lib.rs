//! kv-config (work in progress)
#![doc(test(attr(deny(warnings))))]

mod error;
mod fleet;
mod format;
mod layer;
mod persist;
mod pipeline;
mod reader;
mod snapshot;
mod source;
mod writer;

pub use error::{ConfigError, ConfigErrorKind, RejectKind, Rejection};
pub use fleet::Applied;
pub use format::Format;
pub use layer::{diff_paths, env_layer, env_path, flatten, merge, ENV_SEPARATOR};
pub use pipeline::Validate;
pub use reader::{ConfigBuilder, ConfigEvents, ConfigReader};
pub use snapshot::{Change, ConfigEvent, Health, Origin, Snapshot};
pub use source::{Connector, Source};
pub use writer::{ConfigWriter, Version, Written, DEFAULT_ATTEMPTS};
