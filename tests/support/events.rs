//! An open `GET /api/v1/events` stream (Server-Sent Events over chunked HTTP), read from
//! a plain TCP socket: its `state` events as JSON, read with deadlines.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::dechunk;

/// How long the response head may take.
const HEAD_WITHIN: Duration = Duration::from_secs(20);

/// One Server-Sent Events message: its `id:`, `event:` and `data:` lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseMessage {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

/// An open `GET /api/v1/events` stream.
pub struct EventStream {
    stream: TcpStream,
    raw: Vec<u8>,
}

impl EventStream {
    /// Opens the stream with `token` and reads the response head; answers the status and
    /// content type, and the stream when it is 200.
    pub fn open(port: u16, token: &str) -> EventStream {
        Self::open_with(port, &format!("Authorization: Bearer {token}\r\n"))
    }

    /// As [`EventStream::open`], with `headers` (each line ending in CRLF) as the
    /// credentials and any other header, such as `Last-Event-ID`.
    pub fn open_with(port: u16, headers: &str) -> EventStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let req = format!(
            "GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\
             {headers}\r\n"
        );
        stream.write_all(req.as_bytes()).expect("send request");
        let mut raw = Vec::new();
        let deadline = Instant::now() + HEAD_WITHIN;
        let head_end = loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            assert!(Instant::now() < deadline, "no response head for the events");
            let mut buf = [0u8; 4096];
            match stream.read(&mut buf) {
                Ok(0) => panic!(
                    "events stream closed before its head: {}",
                    String::from_utf8_lossy(&raw)
                ),
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(_) => continue,
            }
        };
        let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
        let status_line = head.lines().next().unwrap_or_default().to_owned();
        assert!(
            status_line.split_whitespace().nth(1) == Some("200"),
            "events answer: {head}"
        );
        let lower = head.to_ascii_lowercase();
        assert!(
            lower.contains("content-type: text/event-stream"),
            "events content type: {head}"
        );
        assert!(
            lower.contains("transfer-encoding: chunked"),
            "a stream of unknown length is chunked: {head}"
        );
        let raw = raw[head_end + 4..].to_vec();
        EventStream { stream, raw }
    }

    /// Reads what has arrived (waits at most the stream's 200 ms read timeout).
    pub fn read_some(&mut self) {
        let mut buf = [0u8; 8192];
        if let Ok(n) = self.stream.read(&mut buf) {
            self.raw.extend_from_slice(&buf[..n]);
        }
    }

    /// Every complete message received so far (comments left out).
    pub fn messages(&self) -> Vec<SseMessage> {
        let text = dechunk(&self.raw);
        let text = String::from_utf8_lossy(&text).into_owned();
        let mut out = Vec::new();
        let complete = text.rfind("\n\n").map_or("", |end| &text[..end]);
        for block in complete.split("\n\n") {
            let mut message = SseMessage::default();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    message.event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    message.data.push_str(d.trim());
                } else if let Some(id) = line.strip_prefix("id:") {
                    message.id = Some(id.trim().to_owned());
                }
            }
            if !message.event.is_empty() {
                out.push(message);
            }
        }
        out
    }

    /// The `state` events received so far, as JSON.
    pub fn state_events(&self) -> Vec<Value> {
        self.messages()
            .into_iter()
            .filter(|m| m.event == "state")
            .map(|m| {
                serde_json::from_str(&m.data)
                    .unwrap_or_else(|e| panic!("state data is not JSON ({e}): {:?}", m.data))
            })
            .collect()
    }

    /// Reads until `pred` holds for the messages so far, or panics after `timeout`.
    pub fn until_messages(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[SseMessage]) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !pred(&self.messages()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; messages so far: {:?}",
                self.messages()
            );
            self.read_some();
        }
    }

    /// Reads until `pred` holds for the events so far, or panics after `timeout`.
    pub fn until(&mut self, what: &str, timeout: Duration, pred: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.state_events()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events so far: {:?}",
                self.state_events()
            );
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => panic!("the events stream ended: {:?}", self.state_events()),
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
}
