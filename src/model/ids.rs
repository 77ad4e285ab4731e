use std::fmt;

/// A 16-byte W3C trace id. The all-zero id is invalid and never constructed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id. The all-zero id is invalid and never constructed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} must be {expected} bytes, got {got}")]
    Length {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what} must not be all zeros")]
    Zero { what: &'static str },
    #[error("{what} is not valid hex")]
    Hex { what: &'static str },
}

macro_rules! id_impl {
    ($ty:ident, $n:expr, $what:expr) => {
        impl $ty {
            pub const LEN: usize = $n;

            /// Parses raw bytes; rejects wrong lengths and the all-zero id.
            pub fn from_bytes(b: &[u8]) -> Result<Self, IdError> {
                let arr: [u8; $n] = b.try_into().map_err(|_| IdError::Length {
                    what: $what,
                    expected: $n,
                    got: b.len(),
                })?;
                if arr == [0u8; $n] {
                    return Err(IdError::Zero { what: $what });
                }
                Ok($ty(arr))
            }

            /// Parses bytes where empty means "absent".
            pub fn from_optional_bytes(b: &[u8]) -> Result<Option<Self>, IdError> {
                if b.is_empty() {
                    Ok(None)
                } else {
                    Self::from_bytes(b).map(Some)
                }
            }

            /// Parses lower- or upper-case hex.
            pub fn from_hex(s: &str) -> Result<Self, IdError> {
                let mut arr = [0u8; $n];
                if s.len() != $n * 2 {
                    return Err(IdError::Length {
                        what: $what,
                        expected: $n,
                        got: s.len() / 2,
                    });
                }
                hex::decode_to_slice(s, &mut arr).map_err(|_| IdError::Hex { what: $what })?;
                Self::from_bytes(&arr)
            }

            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($ty), self.to_hex())
            }
        }
    };
}

id_impl!(TraceId, 16, "trace id");
id_impl!(SpanId, 8, "span id");

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_bad_lengths_and_zero() {
        assert!(matches!(
            TraceId::from_bytes(&[1; 10]),
            Err(IdError::Length { got: 10, .. })
        ));
        assert!(matches!(
            TraceId::from_bytes(&[0; 16]),
            Err(IdError::Zero { .. })
        ));
        assert!(matches!(
            SpanId::from_bytes(&[1; 16]),
            Err(IdError::Length { .. })
        ));
        assert_eq!(SpanId::from_optional_bytes(&[]), Ok(None));
        assert!(TraceId::from_hex("zz".repeat(16).as_str()).is_err());
    }

    proptest! {
        #[test]
        fn hex_round_trip(b in proptest::array::uniform16(1u8..)) {
            let id = TraceId::from_bytes(&b).unwrap();
            prop_assert_eq!(TraceId::from_hex(&id.to_hex()).unwrap(), id);
            prop_assert_eq!(TraceId::from_hex(&id.to_hex().to_uppercase()).unwrap(), id);
        }
    }
}
