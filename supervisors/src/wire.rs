//! warden's IPC framing: a u32 big-endian length, then that many bytes of MessagePack
//! (`rmp-serde`, maps with field names). One definition for both ends of every local
//! socket warden speaks (the control socket, outboard children).
//!
//! A frame longer than the reader's maximum is refused *before* anything is allocated
//! for it, so a hostile length prefix (up to 4 GiB) costs nothing; one under the maximum
//! gets memory only as its bytes arrive (at most [`READ_CHUNK`] ahead of them), so a peer
//! that announces 1 MiB and stalls pins almost nothing.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;
#[cfg(feature = "runtime")]
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest frame accepted by default: 1 MiB.
pub const MAX_FRAME: usize = 1 << 20;

/// How far ahead of the bytes received a frame's buffer may grow.
pub const READ_CHUNK: usize = 64 * 1024;

/// Why a frame could not be read, written, encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The length prefix announces more than the maximum.
    #[error("frame of {len} bytes is over the maximum of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// The maximum.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("truncated frame: the stream ended {missing} bytes short")]
    Truncated {
        /// Bytes that never came.
        missing: usize,
    },
    /// The payload is not the MessagePack of the expected message.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// A message could not be encoded.
    #[error("unencodable message: {0}")]
    Encode(String),
}

/// Encodes `message` as a frame payload.
pub fn encode<T: Serialize + ?Sized>(message: &T) -> Result<Vec<u8>, FrameError> {
    rmp_serde::to_vec_named(message).map_err(|e| FrameError::Encode(e.to_string()))
}

/// Decodes a frame payload.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(payload).map_err(|e| FrameError::Decode(e.to_string()))
}

fn check_len(len: u32, max: usize) -> Result<usize, FrameError> {
    let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
    if len_usize > max {
        return Err(FrameError::TooLarge {
            len: u64::from(len),
            max,
        });
    }
    Ok(len_usize)
}

fn header(payload: &[u8], max: usize) -> Result<[u8; 4], FrameError> {
    if payload.len() > max {
        return Err(FrameError::TooLarge {
            len: payload.len() as u64,
            max,
        });
    }
    let len = u32::try_from(payload.len()).map_err(|_| FrameError::TooLarge {
        len: payload.len() as u64,
        max,
    })?;
    Ok(len.to_be_bytes())
}

/// Reads one frame; `Ok(None)` when the stream ends cleanly before a frame starts.
#[cfg(feature = "runtime")]
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { missing: 4 - got })
            };
        }
        got += n;
    }
    let len = check_len(u32::from_be_bytes(prefix), max)?;
    let mut payload = Vec::with_capacity(len.min(READ_CHUNK));
    while payload.len() < len {
        let filled = grow(&mut payload, len);
        let n = reader.read(&mut payload[filled..]).await?;
        payload.truncate(filled + n);
        if n == 0 {
            return Err(FrameError::Truncated {
                missing: len - filled,
            });
        }
    }
    Ok(Some(payload))
}

/// Makes room in `payload` for the next at most [`READ_CHUNK`] bytes of a frame of `len`
/// bytes (zeroed, to be read into); returns where they start.
fn grow(payload: &mut Vec<u8>, len: usize) -> usize {
    let filled = payload.len();
    payload.resize(filled + (len - filled).min(READ_CHUNK), 0);
    filled
}

/// Writes one frame (and flushes).
#[cfg(feature = "runtime")]
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    let head = header(payload, max)?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&head);
    buf.extend_from_slice(payload);
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

/// Blocking [`read_frame`], for command-line clients.
pub fn read_frame_blocking<R: Read>(
    reader: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = reader.read(&mut prefix[got..])?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { missing: 4 - got })
            };
        }
        got += n;
    }
    let len = check_len(u32::from_be_bytes(prefix), max)?;
    let mut payload = Vec::with_capacity(len.min(READ_CHUNK));
    while payload.len() < len {
        let filled = grow(&mut payload, len);
        let n = reader.read(&mut payload[filled..])?;
        payload.truncate(filled + n);
        if n == 0 {
            return Err(FrameError::Truncated {
                missing: len - filled,
            });
        }
    }
    Ok(Some(payload))
}

/// Blocking [`write_frame`].
pub fn write_frame_blocking<W: Write>(
    writer: &mut W,
    payload: &[u8],
    max: usize,
) -> Result<(), FrameError> {
    let head = header(payload, max)?;
    let mut buf = Vec::with_capacity(4 + payload.len());
    buf.extend_from_slice(&head);
    buf.extend_from_slice(payload);
    writer.write_all(&buf)?;
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_hostile_prefixes_are_refused_without_allocating() {
        let payload = encode(&("hello", 7u32)).unwrap();
        let mut buf = Vec::new();
        write_frame_blocking(&mut buf, &payload, MAX_FRAME).unwrap();
        let back = read_frame_blocking(&mut buf.as_slice(), MAX_FRAME)
            .unwrap()
            .unwrap();
        let (s, n): (String, u32) = decode(&back).unwrap();
        assert_eq!((s.as_str(), n), ("hello", 7));

        let huge = u32::MAX.to_be_bytes();
        assert!(matches!(
            read_frame_blocking(&mut huge.as_slice(), MAX_FRAME),
            Err(FrameError::TooLarge { .. })
        ));
        let truncated = [0u8, 0, 0, 10, 1, 2];
        assert!(matches!(
            read_frame_blocking(&mut truncated.as_slice(), MAX_FRAME),
            Err(FrameError::Truncated { missing: 8 })
        ));
        assert!(read_frame_blocking(&mut [].as_slice(), MAX_FRAME)
            .unwrap()
            .is_none());
        assert!(decode::<(String, u32)>(&[0xc1, 0xff]).is_err());
    }

    #[test]
    fn a_frame_gets_memory_only_as_its_bytes_arrive() {
        // Announces just under the maximum, sends 10 bytes: refused as truncated, and the
        // buffer never grew past one chunk (checked through a reader that records it).
        struct Recording<'a>(&'a [u8], usize);
        impl Read for Recording<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.1 = self.1.max(buf.len());
                Read::read(&mut self.0, buf)
            }
        }
        let mut bytes = ((MAX_FRAME - 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0x80; 10]);
        let mut reader = Recording(&bytes, 0);
        assert!(matches!(
            read_frame_blocking(&mut reader, MAX_FRAME),
            Err(FrameError::Truncated { .. })
        ));
        assert!(
            reader.1 <= READ_CHUNK,
            "asked to fill {} bytes at once",
            reader.1
        );
        // A frame larger than a chunk still round-trips.
        let big = vec![7u8; 3 * READ_CHUNK + 5];
        let mut buf = Vec::new();
        write_frame_blocking(&mut buf, &big, MAX_FRAME).unwrap();
        assert_eq!(
            read_frame_blocking(&mut buf.as_slice(), MAX_FRAME).unwrap(),
            Some(big)
        );
    }
}
