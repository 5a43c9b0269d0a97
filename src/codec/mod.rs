//! The one place bincode is used: versioned encodings with decode limits.
//!
//! Every stored record and (later) every wire message goes through
//! [`encode`] and [`decode`]. A record starts with one version byte, then the
//! bincode body (standard config: little-endian, varint integers). Decoding
//! refuses input longer than the caller's limit before it allocates, an
//! unknown version, and trailing bytes. Signed bytes are `encode(&unsigned)`.
//!
//! ```text
//! +---------+--------------------------+
//! | version | bincode body (serde)     |
//! | 1 byte  | <= limit - 1 bytes       |
//! +---------+--------------------------+
//! ```

use serde::{Serialize, de::DeserializeOwned};

/// The largest record any caller may ask to decode: a manifest of a file at
/// the maximum size with the smallest chunks stays far below this.
pub const MAX_RECORD: usize = 64 * 1024 * 1024;

/// What can go wrong turning bytes back into a value.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The input is longer than the limit for its kind: nothing was decoded.
    #[error("record of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    /// The input is empty: there is not even a version byte.
    #[error("empty record")]
    Empty,
    /// The version byte names a layout this build does not know.
    #[error("unknown record version {found} (this build reads version {expected})")]
    Version { found: u8, expected: u8 },
    /// The body does not decode as the expected type.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// The body decoded but bytes were left over.
    #[error("{0} trailing bytes after record")]
    Trailing(usize),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` as `version` followed by its bincode body.
pub fn encode<T: Serialize>(version: u8, value: &T) -> Vec<u8> {
    let mut out = vec![version];
    // Encoding into a Vec only fails for types serde cannot represent, which
    // none of ours are: a failure here is a programming error.
    let body = bincode::serde::encode_to_vec(value, config()).expect("pactfs record types always encode");
    out.extend_from_slice(&body);
    out
}

/// Decodes a record written by [`encode`] with the same `version`, refusing
/// anything longer than `limit` bytes.
pub fn decode<T: DeserializeOwned>(version: u8, bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge { len: bytes.len(), limit });
    }
    let (&found, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if found != version {
        return Err(CodecError::Version { found, expected: version });
    }
    decode_body(body)
}

/// Encodes `value`'s bincode body alone, for containers (wire frames) that
/// carry their own version.
pub fn encode_body<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, config()).expect("pactfs record types always encode")
}

/// Decodes a body written by [`encode_body`]; the caller has already
/// bounded its length. Variable-length fields of wire types decode through
/// [`bytes`], [`string`] and [`bounded_seq`], which allocate only what the
/// input holds: bincode itself reserves whatever a length prefix claims.
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let cfg = config().with_limit::<{ MAX_RECORD }>();
    let (value, used) =
        bincode::serde::decode_from_slice(body, cfg).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

/// Serde for a `Vec<u8>` field (`#[serde(with = "codec::bytes")]`): bytes
/// on the wire, decoded from the borrowed input, so a length prefix that
/// lies costs nothing.
pub mod bytes {
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> de::Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

/// Serde for a `String` field (`#[serde(with = "codec::string")]`), decoded
/// from the borrowed input like [`bytes`].
pub mod string {
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        struct Str;
        impl<'de> de::Visitor<'de> for Str {
            type Value = String;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                Ok(v.to_string())
            }
        }
        d.deserialize_str(Str)
    }
}

/// A byte string as a type of its own, for sequences of them and for a
/// message that is only bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Bytes(#[serde(with = "bytes")] pub Vec<u8>);

pub mod frame;

/// Deserializes a sequence of at most `MAX` elements, allocating as the
/// elements arrive rather than as much as the length prefix claims (serde
/// alone would reserve up to 1 MiB on a lying prefix). Use with
/// `#[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX>")]`.
pub fn bounded_seq<'de, D, T, const MAX: usize>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    use serde::de::{Error, SeqAccess, Visitor};
    struct Bounded<T, const MAX: usize>(std::marker::PhantomData<T>);
    impl<'de, T: serde::Deserialize<'de>, const MAX: usize> Visitor<'de> for Bounded<T, MAX> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "a sequence of at most {MAX} elements")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            if let Some(n) = seq.size_hint().filter(|&n| n > MAX) {
                return Err(A::Error::invalid_length(n, &self));
            }
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
            while let Some(x) = seq.next_element()? {
                if out.len() == MAX {
                    return Err(A::Error::invalid_length(MAX + 1, &self));
                }
                out.push(x);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Bounded::<T, MAX>(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Sample {
        a: u64,
        b: Vec<u8>,
    }

    #[test]
    fn round_trip_and_golden_bytes() {
        let s = Sample { a: 300, b: vec![1, 2] };
        let bytes = encode(1, &s);
        // version 1 | varint 300 = 0xfb 0x2c 0x01 | len 2 | 1 2
        assert_eq!(bytes, vec![1, 0xfb, 0x2c, 0x01, 2, 1, 2]);
        assert_eq!(decode::<Sample>(1, &bytes, 64).unwrap(), s);
    }

    #[test]
    fn refuses_bad_input() {
        let bytes = encode(1, &Sample { a: 1, b: vec![0; 10] });
        assert!(matches!(decode::<Sample>(1, &bytes, 4), Err(CodecError::TooLarge { .. })));
        assert!(matches!(decode::<Sample>(2, &bytes, 64), Err(CodecError::Version { found: 1, expected: 2 })));
        assert!(matches!(decode::<Sample>(1, &[], 64), Err(CodecError::Empty)));
        assert!(matches!(decode::<Sample>(1, &bytes[..5], 64), Err(CodecError::Malformed(_))));
        let mut long = bytes.clone();
        long.push(9);
        assert!(matches!(decode::<Sample>(1, &long, 64), Err(CodecError::Trailing(1))));
        // A length prefix claiming far more than is there must not allocate it.
        let lying = vec![1u8, 1, 0xfc, 0xff, 0xff, 0xff, 0x7f];
        assert!(decode::<Sample>(1, &lying, 64).is_err());
    }
}
