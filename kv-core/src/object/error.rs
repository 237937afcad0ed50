//! async-nats' object store errors in kvtk-core's kinds.
//!
//! async-nats reports some failures (a chunk or metadata publish, a purge) as text only, so
//! they become [`ErrorKind::Server`]: not transient, because a full or sealed store fails the
//! same way again. The client's error stays reachable through `source()`.

use std::io;

use async_nats::jetstream::object_store as os;

use crate::error::{Error, ErrorKind, Operation};

fn object_error(kind: ErrorKind, message: &str, name: &str, source: impl Into<BoxError>) -> Error {
    Error::new(kind, message)
        .with_op(Operation::Object)
        .with_key(name)
        .with_source(source)
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub(super) fn info(name: &str, e: os::InfoError) -> Error {
    use os::InfoErrorKind as K;
    let (kind, message) = match e.kind() {
        K::InvalidName => (ErrorKind::InvalidKey, "invalid object name"),
        K::NotFound => (ErrorKind::NotFound, "no such object"),
        K::TimedOut => (ErrorKind::Timeout, "the server did not answer in time"),
        _ => (ErrorKind::Server, "cannot read the object's metadata"),
    };
    object_error(kind, message, name, e)
}

pub(super) fn get(name: &str, e: os::GetError) -> Error {
    use os::GetErrorKind as K;
    let (kind, message) = match e.kind() {
        K::InvalidName => (ErrorKind::InvalidKey, "invalid object name"),
        K::NotFound => (ErrorKind::NotFound, "no such object"),
        K::TimedOut => (ErrorKind::Timeout, "the server did not answer in time"),
        K::BucketLink => (
            ErrorKind::InvalidArgument,
            "the object is a link to a whole store",
        ),
        _ => (ErrorKind::Server, "cannot read the object"),
    };
    object_error(kind, message, name, e)
}

pub(super) fn read(name: &str, e: io::Error) -> Error {
    let (kind, message) = match e.kind() {
        io::ErrorKind::TimedOut => (ErrorKind::Timeout, "the server did not answer in time"),
        io::ErrorKind::InvalidData => (
            ErrorKind::Codec,
            "the data does not match the object's digest",
        ),
        _ => (ErrorKind::Connection, "reading the object's chunks failed"),
    };
    object_error(kind, message, name, e)
}

pub(super) fn put(name: &str, e: os::PutError) -> Error {
    use os::PutErrorKind as K;
    let (kind, message) = match e.kind() {
        K::InvalidName => (ErrorKind::InvalidKey, "invalid object name"),
        K::ReadChunks => (
            ErrorKind::InvalidArgument,
            "reading the data to store failed",
        ),
        K::TimedOut => (ErrorKind::Timeout, "the server did not answer in time"),
        K::PurgeOldChunks => (
            ErrorKind::Server,
            "stored, but the previous version's chunks were not removed",
        ),
        _ => (ErrorKind::Server, "the store did not take the object"),
    };
    object_error(kind, message, name, e)
}

pub(super) fn delete(name: &str, e: os::DeleteError) -> Error {
    use os::DeleteErrorKind as K;
    let (kind, message) = match e.kind() {
        K::InvalidName => (ErrorKind::InvalidKey, "invalid object name"),
        K::NotFound => (ErrorKind::NotFound, "no such object"),
        K::TimedOut => (ErrorKind::Timeout, "the server did not answer in time"),
        K::Chunks => (
            ErrorKind::Server,
            "deleted, but the object's chunks were not removed",
        ),
        _ => (ErrorKind::Server, "cannot delete the object"),
    };
    object_error(kind, message, name, e)
}

pub(super) fn link(name: &str, e: os::AddLinkError) -> Error {
    use os::AddLinkErrorKind as K;
    let (kind, message) = match e.kind() {
        K::EmptyName => (ErrorKind::InvalidKey, "invalid object name"),
        K::ObjectRequired => (ErrorKind::InvalidArgument, "the link needs a target object"),
        K::Deleted => (ErrorKind::NotFound, "the target object is deleted"),
        K::LinkToLink => (ErrorKind::InvalidArgument, "a link cannot point to a link"),
        K::AlreadyExists => (
            ErrorKind::AlreadyExists,
            "an object (not a link) has that name",
        ),
        _ => (ErrorKind::Server, "cannot write the link"),
    };
    object_error(kind, message, name, e)
}

pub(super) fn watch(store: &str, e: os::WatchError) -> Error {
    let (kind, message) = match e.kind() {
        os::WatchErrorKind::TimedOut => (ErrorKind::Timeout, "the server did not answer in time"),
        _ => (ErrorKind::Server, "cannot start following the store"),
    };
    Error::new(kind, message)
        .with_op(Operation::Watch)
        .with_key(store)
        .with_source(e)
}

pub(super) fn watcher(store: &str, e: os::WatcherError) -> Error {
    Error::new(ErrorKind::Connection, "following the store failed")
        .with_op(Operation::Watch)
        .with_key(store)
        .with_source(e)
}

pub(super) fn open(store: &str, e: async_nats::jetstream::context::ObjectStoreError) -> Error {
    Error::new(ErrorKind::Server, "cannot open the object store")
        .with_op(Operation::Bucket)
        .with_key(store)
        .with_source(e)
}
