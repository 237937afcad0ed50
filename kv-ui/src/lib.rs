#![doc = include_str!("../README.md")]
// Doc examples define `async fn demo(..)` bodies that are compiled, not called.
#![doc(test(attr(deny(warnings), allow(dead_code))))]

mod actions;
mod app;
mod error;
mod feed;
mod hub;
mod routes;
mod schema;
mod server;

pub use app::SECRET_HEADER;
pub use error::{Error, ErrorKind};
pub use server::{Server, Ui, DEFAULT_LISTEN};
