//! Reads WebSocket frame headers as the bytes of a spoke's connection arrive and fails
//! the stream at the first frame that announces more than the current limit. The
//! WebSocket codec itself only checks a frame's size once the whole frame is buffered,
//! so without this a peer could make the hub buffer any amount before its hello.
//! The limit is [`MAX_HELLO_BYTES`]-sized until the hello is accepted, then the message
//! limit.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use futures_util::Stream;

/// Where the parser is within the byte stream.
#[derive(Debug)]
enum At {
    /// Collecting a frame header (2 to 14 bytes).
    Header { bytes: [u8; 14], have: usize },
    /// Skipping this many payload bytes.
    Payload(u64),
}

/// A payload stream that enforces a per-frame size limit.
pub(super) struct FrameGuard<S> {
    inner: S,
    limit: Arc<AtomicUsize>,
    at: At,
}

impl<S> FrameGuard<S> {
    /// Guards `inner` with `limit` (changeable while it runs).
    pub(super) fn new(inner: S, limit: Arc<AtomicUsize>) -> Self {
        Self {
            inner,
            limit,
            at: At::Header {
                bytes: [0; 14],
                have: 0,
            },
        }
    }

    /// Follows `chunk`; `Err` with the announced size if a frame is over the limit.
    fn follow(&mut self, mut chunk: &[u8]) -> Result<(), u64> {
        while !chunk.is_empty() {
            match &mut self.at {
                At::Payload(left) => {
                    let take = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(chunk.len());
                    *left -= take as u64;
                    chunk = &chunk[take..];
                    if *left == 0 {
                        self.at = At::Header {
                            bytes: [0; 14],
                            have: 0,
                        };
                    }
                }
                At::Header { bytes, have } => {
                    bytes[*have] = chunk[0];
                    *have += 1;
                    chunk = &chunk[1..];
                    if *have < 2 {
                        continue;
                    }
                    let len7 = bytes[1] & 0x7f;
                    let extra = match len7 {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let mask = if bytes[1] & 0x80 != 0 { 4 } else { 0 };
                    if *have < 2 + extra {
                        continue;
                    }
                    let length = match len7 {
                        126 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
                        127 => {
                            let mut b = [0u8; 8];
                            b.copy_from_slice(&bytes[2..10]);
                            u64::from_be_bytes(b)
                        }
                        n => u64::from(n),
                    };
                    // Checked as soon as the length is known, before the mask arrives.
                    let limit = self.limit.load(Ordering::Relaxed) as u64;
                    if length > limit {
                        return Err(length);
                    }
                    if *have < 2 + extra + mask {
                        continue;
                    }
                    self.at = if length == 0 {
                        At::Header {
                            bytes: [0; 14],
                            have: 0,
                        }
                    } else {
                        At::Payload(length)
                    };
                }
            }
        }
        Ok(())
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.follow(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(announced) => {
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::other(format!(
                        "a frame of {announced} bytes is over the limit of {}",
                        this.limit.load(Ordering::Relaxed)
                    ))))))
                }
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limit: usize) -> FrameGuard<futures_util::stream::Empty<Result<Bytes, PayloadError>>> {
        FrameGuard::new(
            futures_util::stream::empty(),
            Arc::new(AtomicUsize::new(limit)),
        )
    }

    #[test]
    fn frames_within_the_limit_pass_split_anywhere() {
        let mut g = guard(200);
        let mut bytes = vec![0x82, 0x80 | 126, 0, 150, 1, 2, 3, 4];
        bytes.extend(vec![7u8; 150]);
        bytes.extend([0x82, 0x85, 1, 2, 3, 4, 9, 9, 9, 9, 9]);
        for piece in bytes.chunks(3) {
            assert!(g.follow(piece).is_ok());
        }
    }

    #[test]
    fn a_frame_announcing_more_than_the_limit_fails_at_its_header() {
        let mut g = guard(4096);
        let mut header = vec![0x82, 0x80 | 127];
        header.extend((32u64 << 20).to_be_bytes());
        assert_eq!(g.follow(&header[..6]), Ok(()));
        assert_eq!(g.follow(&header[6..]), Err(32 << 20));
    }
}
