//! Reading request bodies under a size cap and a shared memory budget, and
//! gzip decompression that stops at the cap (a gzip bomb never allocates
//! more than the limit).

use std::io::Read;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;

use super::{IngestError, MemoryBudget, Reservation};

/// The Content-Encoding values OTLP/HTTP senders use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
}

impl Encoding {
    pub fn from_header(v: Option<&str>) -> Result<Self, IngestError> {
        match v.map(|s| s.trim().to_ascii_lowercase()) {
            None => Ok(Encoding::Identity),
            Some(s) if s.is_empty() || s == "identity" => Ok(Encoding::Identity),
            Some(s) if s == "gzip" || s == "x-gzip" => Ok(Encoding::Gzip),
            Some(s) => Err(IngestError::UnsupportedEncoding(s)),
        }
    }
}

/// A body read into memory, with the memory it holds reserved.
pub struct ReadBody {
    pub bytes: Bytes,
    /// Bytes as received on the wire (before decompression).
    pub wire_len: usize,
    pub reservation: Reservation,
}

/// Reads `body` (chunked or with Content-Length), decompresses it, and fails
/// with `TooLarge` as soon as either the wire bytes or the decompressed bytes
/// pass `max_bytes`, or `Overloaded` when the shared budget is exhausted.
pub async fn read_body<B>(
    body: B,
    content_length: Option<u64>,
    encoding: Encoding,
    max_bytes: u64,
    budget: &MemoryBudget,
) -> Result<ReadBody, IngestError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let too_large = || IngestError::TooLarge { limit: max_bytes };
    let overloaded = || IngestError::Overloaded("the ingest memory budget is exhausted".into());
    if content_length.is_some_and(|n| n > max_bytes) {
        return Err(too_large());
    }
    let mut reservation = budget.reservation();
    if !reservation.grow_to(content_length.unwrap_or(0)) {
        return Err(overloaded());
    }
    let mut buf = BytesMut::with_capacity(content_length.unwrap_or(8192).min(max_bytes) as usize);
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| IngestError::Malformed(format!("error reading request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let new_len = buf.len() as u64 + data.len() as u64;
            if new_len > max_bytes {
                return Err(too_large());
            }
            if !reservation.grow_to(new_len) {
                return Err(overloaded());
            }
            buf.extend_from_slice(&data);
        }
    }
    let wire_len = buf.len();
    let bytes = match encoding {
        Encoding::Identity => buf.freeze(),
        Encoding::Gzip => {
            let compressed = buf.freeze();
            gunzip_capped(&compressed, max_bytes, &mut reservation)?
        }
    };
    Ok(ReadBody {
        bytes,
        wire_len,
        reservation,
    })
}

/// Decompresses gzip data, never holding more than `max_bytes` of output.
pub fn gunzip_capped(
    compressed: &[u8],
    max_bytes: u64,
    reservation: &mut Reservation,
) -> Result<Bytes, IngestError> {
    let base = reservation.bytes();
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(max_bytes + 1);
    let mut out = Vec::with_capacity((compressed.len() * 4).min(max_bytes as usize));
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = decoder
            .read(&mut chunk)
            .map_err(|e| IngestError::Malformed(format!("invalid gzip body: {e}")))?;
        if n == 0 {
            break;
        }
        if out.len() as u64 + n as u64 > max_bytes {
            return Err(IngestError::TooLarge { limit: max_bytes });
        }
        if !reservation.grow_to(base + out.len() as u64 + n as u64) {
            return Err(IngestError::Overloaded(
                "the ingest memory budget is exhausted".into(),
            ));
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Telemetry;
    use std::io::Write;
    use std::sync::Arc;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn budget() -> MemoryBudget {
        MemoryBudget::new(1 << 30, Arc::new(Telemetry::new()))
    }

    #[test]
    fn gunzip_round_trip_and_cap() {
        let data = vec![7u8; 100_000];
        let z = gzip(&data);
        let b = budget();
        let mut r = b.reservation();
        assert_eq!(&gunzip_capped(&z, 100_000, &mut r).unwrap()[..], &data[..]);
        let mut r = b.reservation();
        assert!(matches!(
            gunzip_capped(&z, 99_999, &mut r),
            Err(IngestError::TooLarge { limit: 99_999 })
        ));
        let mut r = b.reservation();
        assert!(matches!(
            gunzip_capped(b"not gzip at all", 1000, &mut r),
            Err(IngestError::Malformed(_))
        ));
    }

    #[test]
    fn gzip_bomb_stops_at_the_cap() {
        // 1 GiB of zeros compresses to about 1 MiB.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        let b = budget();
        let mut r = b.reservation();
        let err = gunzip_capped(&bomb, 4 << 20, &mut r).unwrap_err();
        assert!(matches!(err, IngestError::TooLarge { .. }));
        assert!(r.bytes() <= (4 << 20) + 64 * 1024, "reserved {}", r.bytes());
    }

    #[tokio::test]
    async fn body_cap_and_budget() {
        let b = budget();
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 2000]));
        let got = read_body(body, None, Encoding::Identity, 2000, &b)
            .await
            .unwrap();
        assert_eq!(got.bytes.len(), 2000);
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 2001]));
        assert!(matches!(
            read_body(body, None, Encoding::Identity, 2000, &b).await,
            Err(IngestError::TooLarge { .. })
        ));
        let small = MemoryBudget::new(1024, Arc::new(Telemetry::new()));
        let body = http_body_util::Full::new(Bytes::from(vec![1u8; 4096]));
        assert!(matches!(
            read_body(body, None, Encoding::Identity, 1 << 20, &small).await,
            Err(IngestError::Overloaded(_))
        ));
        assert!(matches!(
            Encoding::from_header(Some("br")),
            Err(IngestError::UnsupportedEncoding(_))
        ));
        assert_eq!(Encoding::from_header(Some("GZIP")).unwrap(), Encoding::Gzip);
    }
}
