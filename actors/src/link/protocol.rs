//! The hub–spoke wire protocol: binary WebSocket messages of MessagePack (named fields,
//! so either side may add optional fields later). The spoke speaks first
//! ([`SpokeFrame::Hello`]); the hub answers once ([`HubFrame::Welcome`] or
//! [`HubFrame::Refused`]); then the hub sends [`HubFrame::Request`]s, each with an id, and
//! the spoke answers each with a [`SpokeFrame::Reply`] of the same id, in any order.

use serde::{Deserialize, Serialize};

/// The protocol version both sides must speak; a hello of another is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest hello the hub reads (a name, a token or credential, a version).
pub const MAX_HELLO_BYTES: usize = 4 * 1024;

/// The largest message either side accepts once enrolled. A reply carries one API
/// answer: a 1,000-actor listing is about 500 KiB of JSON, a logs tail at most
/// [`crate::MAX_TAIL_BYTES`]; 16 MiB leaves room and still bounds a hostile peer.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// The longest spoke name (the same alphabet as actor names).
pub const MAX_NAME_LEN: usize = 64;

/// What the spoke proves on connecting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    /// First enrollment: a one-time join token `<id>.<secret>`.
    Join {
        /// The token as `warden hub token create` printed it.
        token: String,
    },
    /// Every later connection: the credential the hub handed out at enrollment.
    Credential {
        /// The credential (hex).
        credential: String,
    },
}

/// One verb the hub may ask of a spoke: the fixed allowlist (there is no exec verb).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verb")]
pub enum Verb {
    /// `GET /api/v1/tree`.
    Tree,
    /// `GET /api/v1/actors`.
    Actors,
    /// `GET /api/v1/actors/{path}`.
    Actor {
        /// Actor path.
        path: String,
    },
    /// `POST /api/v1/actors/{path}/start`.
    Start {
        /// Actor path.
        path: String,
    },
    /// `POST /api/v1/actors/{path}/stop`.
    Stop {
        /// Actor path.
        path: String,
    },
    /// `POST /api/v1/actors/{path}/restart`.
    Restart {
        /// Actor path.
        path: String,
    },
    /// `GET /api/v1/actors/{path}/logs?tail=N`.
    Logs {
        /// Actor path.
        path: String,
        /// Lines wanted.
        tail: u32,
    },
}

impl Verb {
    /// The verb's name, as `[spoke] allow` lists it.
    pub fn name(&self) -> &'static str {
        match self {
            Verb::Tree => "tree",
            Verb::Actors => "actors",
            Verb::Actor { .. } => "actor",
            Verb::Start { .. } => "start",
            Verb::Stop { .. } => "stop",
            Verb::Restart { .. } => "restart",
            Verb::Logs { .. } => "logs",
        }
    }

    /// The actor the verb acts on, if it names one.
    pub fn path(&self) -> Option<&str> {
        match self {
            Verb::Tree | Verb::Actors => None,
            Verb::Actor { path }
            | Verb::Start { path }
            | Verb::Stop { path }
            | Verb::Restart { path }
            | Verb::Logs { path, .. } => Some(path),
        }
    }
}

/// Every verb name, in the order of the design.
pub const VERB_NAMES: [&str; 7] = [
    "tree", "actors", "actor", "start", "stop", "restart", "logs",
];

/// What the body of a reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// `application/json`.
    Json,
    /// `text/plain; charset=utf-8` (logs).
    Text,
}

/// One API answer: what the spoke's own admin API would have answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body's type.
    pub body_kind: Body,
    /// The body.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl Answer {
    /// A JSON `{"error": message}` answer with `status`.
    pub fn error(status: u16, message: &str) -> Self {
        let body = serde_json::to_vec(&serde_json::json!({ "error": message }))
            .unwrap_or_else(|_| b"{\"error\":\"error\"}".to_vec());
        Self {
            status,
            body_kind: Body::Json,
            body,
        }
    }
}

/// A message from the spoke to the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpokeFrame {
    /// The first message: who the spoke is and its proof.
    Hello {
        /// Must be [`PROTOCOL_VERSION`].
        version: u32,
        /// The spoke's name (`[spoke] name`).
        name: String,
        /// The proof.
        auth: Auth,
    },
    /// The answer to the request `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// The answer.
        answer: Answer,
    },
}

/// A message from the hub to the spoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HubFrame {
    /// The hello was accepted; at a first enrollment, with the credential to keep.
    Welcome {
        /// The long-lived credential (only at enrollment).
        credential: Option<String>,
    },
    /// The hello was refused for good: the spoke stops retrying.
    Refused {
        /// Why.
        reason: String,
    },
    /// Carry out `verb` and reply with `id`.
    Request {
        /// The request's id.
        id: u64,
        /// What to do.
        verb: Verb,
    },
}

/// Why a message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Over the size limit.
    #[error("message of {size} bytes is over the limit of {limit}")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a message of this protocol.
    #[error("not a hub protocol message: {0}")]
    Malformed(String),
}

/// Encodes a frame (MessagePack with field names).
pub fn encode<T: Serialize>(frame: &T) -> Vec<u8> {
    // Only strings, integers, byte strings and enums: encoding cannot fail.
    rmp_serde::to_vec_named(frame).unwrap_or_default()
}

/// Decodes a message of at most `limit` bytes.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// Whether `name` may name a spoke: 1 to [`MAX_NAME_LEN`] of `[A-Za-z0-9_.-]`, not `.`
/// or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let hello = SpokeFrame::Hello {
            version: PROTOCOL_VERSION,
            name: "edge-1".into(),
            auth: Auth::Join {
                token: "a.b".into(),
            },
        };
        let back: SpokeFrame = decode(&encode(&hello), MAX_HELLO_BYTES).unwrap();
        assert_eq!(back, hello);
        let request = HubFrame::Request {
            id: 7,
            verb: Verb::Logs {
                path: "/a".into(),
                tail: 3,
            },
        };
        let back: HubFrame = decode(&encode(&request), MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn garbage_and_oversized_messages_are_errors_not_panics() {
        assert!(decode::<SpokeFrame>(b"\xc1\xff garbage", 100).is_err());
        assert!(decode::<SpokeFrame>(&[0x92; 200], 100).is_err());
        let hello = encode(&SpokeFrame::Hello {
            version: 1,
            name: "x".into(),
            auth: Auth::Credential {
                credential: "c".into(),
            },
        });
        assert!(decode::<SpokeFrame>(&hello[..hello.len() - 1], 100).is_err());
    }

    /// The fuzz target's property on a fixed pseudo-random corpus (so CI checks it too):
    /// random bytes and mutated valid messages decode to a message or an error, never a
    /// panic, and a decoded message re-encodes to an equal one.
    #[test]
    fn decoders_survive_random_and_mutated_input() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = [
            encode(&SpokeFrame::Hello {
                version: PROTOCOL_VERSION,
                name: "edge".into(),
                auth: Auth::Join {
                    token: "id.secret".into(),
                },
            }),
            encode(&SpokeFrame::Reply {
                id: 3,
                answer: Answer::error(403, "no"),
            }),
            encode(&HubFrame::Request {
                id: 9,
                verb: Verb::Logs {
                    path: "/a".into(),
                    tail: 5,
                },
            }),
        ];
        for round in 0..20_000u64 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = (next() % 64) as usize;
                (0..len).map(|_| next() as u8).collect()
            } else {
                let mut b = valid[(round % 3) as usize].clone();
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
                b.truncate(b.len() - (next() as usize % 3).min(b.len()));
                b
            };
            if let Ok(frame) = decode::<SpokeFrame>(&bytes, MAX_HELLO_BYTES) {
                assert_eq!(
                    decode::<SpokeFrame>(&encode(&frame), usize::MAX).unwrap(),
                    frame
                );
            }
            if let Ok(frame) = decode::<HubFrame>(&bytes, MAX_MESSAGE_BYTES) {
                assert_eq!(
                    decode::<HubFrame>(&encode(&frame), usize::MAX).unwrap(),
                    frame
                );
            }
        }
    }
}
