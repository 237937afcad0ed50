//! Member metadata: raw bytes, or JSON through [`Json`].

use bytes::Bytes;
use serde::Serialize;

use crate::error::Error;

/// Something that can be a member's metadata: bytes and strings as they are, or any
/// `Serialize` value wrapped in [`Json`].
pub trait IntoMetadata {
    /// The bytes stored in the member's key.
    fn into_metadata(self) -> Result<Bytes, Error>;
}

/// Metadata encoded as JSON: `group.join("i-1", Json(&info))`.
#[derive(Debug, Clone, Copy)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoMetadata for Json<T> {
    fn into_metadata(self) -> Result<Bytes, Error> {
        serde_json::to_vec(&self.0)
            .map(Bytes::from)
            .map_err(|e| Error::metadata("could not encode the metadata as json", e))
    }
}

impl IntoMetadata for Bytes {
    fn into_metadata(self) -> Result<Bytes, Error> {
        Ok(self)
    }
}

impl IntoMetadata for Vec<u8> {
    fn into_metadata(self) -> Result<Bytes, Error> {
        Ok(self.into())
    }
}

impl IntoMetadata for String {
    fn into_metadata(self) -> Result<Bytes, Error> {
        Ok(self.into())
    }
}

impl IntoMetadata for &str {
    fn into_metadata(self) -> Result<Bytes, Error> {
        Ok(Bytes::copy_from_slice(self.as_bytes()))
    }
}

impl IntoMetadata for &[u8] {
    fn into_metadata(self) -> Result<Bytes, Error> {
        Ok(Bytes::copy_from_slice(self))
    }
}
