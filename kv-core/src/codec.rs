//! Value codecs: raw bytes, UTF-8 strings, JSON for any serde type, or your own.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

/// Encodes values of type `T` to bytes and back.
///
/// ```
/// use kvtk_core::{Codec, Json};
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Cfg { timeout: u32 }
/// let bytes = Json.encode(&Cfg { timeout: 30 }).unwrap();
/// let back: Cfg = Json.decode(&bytes).unwrap();
/// assert_eq!(back, Cfg { timeout: 30 });
/// // Undecodable input is an error of kind Codec, never a panic.
/// let err = Codec::<Cfg>::decode(&Json, b"{").unwrap_err();
/// assert_eq!(err.kind(), kvtk_core::ErrorKind::Codec);
/// ```
pub trait Codec<T>: Send + Sync {
    /// Encodes a value.
    fn encode(&self, value: &T) -> Result<Bytes, Error>;
    /// Decodes a value.
    fn decode(&self, bytes: &[u8]) -> Result<T, Error>;
}

/// Values are raw bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Codec<Bytes> for Raw {
    fn encode(&self, value: &Bytes) -> Result<Bytes, Error> {
        Ok(value.clone())
    }
    fn decode(&self, bytes: &[u8]) -> Result<Bytes, Error> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

impl Codec<Vec<u8>> for Raw {
    fn encode(&self, value: &Vec<u8>) -> Result<Bytes, Error> {
        Ok(Bytes::copy_from_slice(value))
    }
    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, Error> {
        Ok(bytes.to_vec())
    }
}

/// Values are UTF-8 strings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8;

impl Codec<String> for Utf8 {
    fn encode(&self, value: &String) -> Result<Bytes, Error> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }
    fn decode(&self, bytes: &[u8]) -> Result<String, Error> {
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::codec(format!("value is not UTF-8: {e}")))
    }
}

/// Values are JSON documents of any serde type.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

impl<T: Serialize + DeserializeOwned> Codec<T> for Json {
    fn encode(&self, value: &T) -> Result<Bytes, Error> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| Error::codec(format!("cannot encode value as json: {e}")))
    }
    fn decode(&self, bytes: &[u8]) -> Result<T, Error> {
        serde_json::from_slice(bytes)
            .map_err(|e| Error::codec(format!("cannot decode json value: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_rejects_bad_bytes() {
        assert!(Codec::<String>::decode(&Utf8, &[0xff, 0xfe]).is_err());
        assert_eq!(Utf8.decode(b"hi").unwrap(), "hi");
    }

    #[test]
    fn raw_roundtrip() {
        let b = Bytes::from_static(b"\x00\x01");
        assert_eq!(
            Codec::<Bytes>::decode(&Raw, &Raw.encode(&b).unwrap()).unwrap(),
            b
        );
    }
}
