//! A minimal blocking WebSocket client for the hub tests and benchmark: the handshake by
//! hand and frames written byte by byte, so tests can also send what no real client
//! would (garbage, oversized and truncated frames).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// An open WebSocket (client side).
pub struct Ws {
    pub stream: TcpStream,
}

/// A message read from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Vec<u8>),
    Other(u8),
}

impl Ws {
    /// Opens `path` on 127.0.0.1:`port` and completes the upgrade (panics on a non-101).
    pub fn connect(port: u16, path: &str) -> std::io::Result<Ws> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes())?;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte)? == 0 {
                return Err(std::io::Error::other("closed during the handshake"));
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head);
        if !text.starts_with("HTTP/1.1 101") {
            return Err(std::io::Error::other(format!("no upgrade: {text}")));
        }
        Ok(Ws { stream })
    }

    /// Writes one masked frame of `opcode` with `payload`.
    pub fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(&frame(opcode, payload))
    }

    /// Writes a binary message.
    pub fn send(&mut self, payload: &[u8]) -> std::io::Result<()> {
        self.send_frame(0x2, payload)
    }

    /// Reads one frame (answers nothing by itself).
    pub fn recv(&mut self) -> std::io::Result<Incoming> {
        let mut h = [0u8; 2];
        self.stream.read_exact(&mut h)?;
        let opcode = h[0] & 0x0f;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            self.stream.read_exact(&mut b)?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            self.stream.read_exact(&mut b)?;
            len = u64::from_be_bytes(b);
        }
        let mut payload = vec![0u8; usize::try_from(len).unwrap_or(0)];
        self.stream.read_exact(&mut payload)?;
        Ok(match opcode {
            0x2 => Incoming::Binary(payload),
            0x9 => Incoming::Ping(payload),
            0xA => Incoming::Pong,
            0x8 => Incoming::Close(payload),
            other => Incoming::Other(other),
        })
    }

    /// Reads until a binary message, answering pings; `None` on close or EOF.
    pub fn recv_binary(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.recv().ok()? {
                Incoming::Binary(b) => return Some(b),
                Incoming::Ping(p) => self.send_frame(0xA, &p).ok()?,
                Incoming::Pong | Incoming::Other(_) => {}
                Incoming::Close(_) => return None,
            }
        }
    }

    /// Whether the server closed the connection (a close frame or EOF) within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let _ = self.stream.set_read_timeout(Some(timeout));
        loop {
            match self.recv() {
                Ok(Incoming::Close(_)) => return true,
                Ok(_) => continue,
                Err(e) => {
                    return !matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    )
                }
            }
        }
    }
}

/// A masked client frame.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}
