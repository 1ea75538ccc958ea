//! Byte strings on the wire, written as upper-case hexadecimal.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes that travel as an upper-case hex string (APDUs, ATRs, nonces, signatures).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct HexBytes(pub Vec<u8>);

impl HexBytes {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for HexBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", hex::encode_upper(&self.0))
    }
}

impl From<Vec<u8>> for HexBytes {
    fn from(v: Vec<u8>) -> Self {
        HexBytes(v)
    }
}

impl From<&[u8]> for HexBytes {
    fn from(v: &[u8]) -> Self {
        HexBytes(v.to_vec())
    }
}

impl Serialize for HexBytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode_upper(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        hex::decode(&text).map(HexBytes).map_err(serde::de::Error::custom)
    }
}

/// In the OpenAPI document: a string of hexadecimal digit pairs (upper case when the server writes
/// it; either case read).
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for HexBytes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^([0-9A-Fa-f]{2})*$"))
            .description(Some("Bytes as hexadecimal digit pairs (upper case when the server writes them)"))
            .examples([serde_json::json!("3B8F8001")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for HexBytes {}
