//! Wire frames: how one message crosses a stream.
//!
//! ```text
//! +---------+------+-------------+---------------------------+
//! | version | kind | length (BE) | bincode body              |
//! | 1 byte  | 1 B  | u32         | <= limit(kind) bytes      |
//! +---------+------+-------------+---------------------------+
//! ```
//!
//! The reader checks the version, that the kind is known and that the
//! length is within that kind's limit before it allocates a byte of the
//! body, so an oversized or garbled frame costs the reader six bytes.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const HEADER_LEN: usize = 6;

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("unknown wire version {found} (this build speaks {expected})")]
    Version { found: u8, expected: u8 },
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("message kind {kind} of {len} bytes exceeds its limit of {limit} bytes")]
    TooLarge { kind: u8, len: usize, limit: usize },
    #[error("stream ended inside a frame: {0}")]
    Truncated(std::io::Error),
    #[error(transparent)]
    Io(std::io::Error),
}

impl From<FrameError> for std::io::Error {
    fn from(e: FrameError) -> std::io::Error {
        match e {
            FrameError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

fn read_err(e: std::io::Error) -> FrameError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof { FrameError::Truncated(e) } else { FrameError::Io(e) }
}

/// The header of a frame of `len` body bytes.
pub fn header(version: u8, kind: u8, len: usize) -> [u8; HEADER_LEN] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [version, kind, len[0], len[1], len[2], len[3]]
}

/// Reads one frame; `limit_of(kind)` is the largest body that kind may
/// have, or `None` for an unknown kind.
pub async fn read<R: AsyncRead + Unpin>(
    io: &mut R,
    version: u8,
    limit_of: impl Fn(u8) -> Option<usize>,
) -> Result<(u8, Vec<u8>), FrameError> {
    read_next(io, version, limit_of).await?.ok_or_else(|| {
        FrameError::Truncated(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no frame before the end"))
    })
}

/// Reads the next frame of a stream that carries many: `None` when the
/// stream ends cleanly between frames, an error when it ends inside one.
pub async fn read_next<R: AsyncRead + Unpin>(
    io: &mut R,
    version: u8,
    limit_of: impl Fn(u8) -> Option<usize>,
) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
    let mut head = [0u8; HEADER_LEN];
    loop {
        match io.read(&mut head[..1]).await {
            Ok(0) => return Ok(None),
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    io.read_exact(&mut head[1..]).await.map_err(read_err)?;
    check_header(&head, version, limit_of)?;
    let (kind, len) = (head[1], u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize);
    // Overwritten in full by read_exact (or dropped on error).
    let mut body = crate::bufpool::take(len);
    io.read_exact(&mut body).await.map_err(read_err)?;
    Ok(Some((kind, body)))
}

/// Validates a header without reading further.
pub fn check_header(
    head: &[u8; HEADER_LEN],
    version: u8,
    limit_of: impl Fn(u8) -> Option<usize>,
) -> Result<(), FrameError> {
    if head[0] != version {
        return Err(FrameError::Version { found: head[0], expected: version });
    }
    let kind = head[1];
    let limit = limit_of(kind).ok_or(FrameError::Kind(kind))?;
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { kind, len, limit });
    }
    Ok(())
}

/// Writes one frame whose body is `parts` one after the other (so a large
/// part is never copied into a joined buffer), and flushes it.
pub async fn write_parts<W: AsyncWrite + Unpin>(
    io: &mut W,
    version: u8,
    kind: u8,
    parts: &[Vec<u8>],
) -> std::io::Result<()> {
    let len = parts.iter().map(Vec::len).sum();
    io.write_all(&header(version, kind, len)).await?;
    for p in parts {
        io.write_all(p).await?;
    }
    io.flush().await
}

/// Writes one frame and flushes it.
pub async fn write<W: AsyncWrite + Unpin>(io: &mut W, version: u8, kind: u8, body: &[u8]) -> std::io::Result<()> {
    io.write_all(&header(version, kind, body.len())).await?;
    io.write_all(body).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(kind: u8) -> Option<usize> {
        match kind {
            1 => Some(16),
            _ => None,
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write(&mut buf, 1, 1, b"hello").await.unwrap();
            let (kind, body) = read(&mut buf.as_slice(), 1, limits).await.unwrap();
            assert_eq!((kind, body.as_slice()), (1, &b"hello"[..]));
            assert!(matches!(read(&mut buf.as_slice(), 2, limits).await, Err(FrameError::Version { .. })));
            let mut unknown = buf.clone();
            unknown[1] = 7;
            assert!(matches!(read(&mut unknown.as_slice(), 1, limits).await, Err(FrameError::Kind(7))));
            // A header claiming 4 GiB is refused before any allocation.
            let huge = header(1, 1, u32::MAX as usize);
            assert!(matches!(read(&mut &huge[..], 1, limits).await, Err(FrameError::TooLarge { .. })));
            assert!(matches!(read(&mut &buf[..8], 1, limits).await, Err(FrameError::Truncated(_))));
        });
    }
}
