//! Majordomo wire codec: turns the frames of 7/MDP (MDP/0.1), 18/MDP (MDP/0.2) into typed
//! [`Message`]s and back. It owns nothing but frame layouts; it never panics on input and
//! bounds every read, so any byte sequence from a peer yields either a message or a
//! [`CodecError`]. Frames are as a ROUTER sees them after the peer-identity frame (or as a
//! DEALER sees them). MDP/0.1 always carries a leading empty delimiter; MDP/0.2 carries none,
//! but a single leading empty frame is tolerated on input for peers that add one.

/// One ZeroMQ frame.
pub type Frame = Vec<u8>;

/// Protocol frame of an MDP/0.1 client.
pub const MDPC01: &[u8] = b"MDPC01";
/// Protocol frame of an MDP/0.1 worker.
pub const MDPW01: &[u8] = b"MDPW01";
/// Protocol frame of an MDP/0.2 client.
pub const MDPC02: &[u8] = b"MDPC02";
/// Protocol frame of an MDP/0.2 worker.
pub const MDPW02: &[u8] = b"MDPW02";

/// Which Majordomo revision a peer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// 7/MDP, single reply per request.
    V1,
    /// 18/MDP, zero or more PARTIAL then one FINAL.
    V2,
}

/// Whether a reply is intermediate or the last one for its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyKind {
    /// More replies follow (MDP/0.2 only).
    Partial,
    /// The last reply for the request.
    Final,
}

/// Which way a message travels; only needed to tell an MDP/0.1 client REQUEST from its
/// REPLY, whose layouts are identical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Sent by a client or worker to the broker.
    ToBroker,
    /// Sent by the broker to a client or worker.
    FromBroker,
}

/// A decoded Majordomo message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → broker request for `service`.
    ClientRequest {
        version: Version,
        service: Frame,
        body: Vec<Frame>,
    },
    /// Broker → client reply (MDP/0.1 replies are always `Final`).
    ClientReply {
        version: Version,
        kind: ReplyKind,
        service: Frame,
        body: Vec<Frame>,
    },
    /// Worker → broker READY; `extra` holds frames after the service name (MDP allows none;
    /// triggerd workers put their extension hello there).
    Ready {
        version: Version,
        service: Frame,
        extra: Vec<Frame>,
    },
    /// Broker → worker request; `address` is opaque to the worker and must be echoed back.
    WorkerRequest {
        version: Version,
        address: Frame,
        body: Vec<Frame>,
    },
    /// Worker → broker reply (MDP/0.1 replies are always `Final`).
    WorkerReply {
        version: Version,
        kind: ReplyKind,
        address: Frame,
        body: Vec<Frame>,
    },
    /// Heartbeat, either way.
    Heartbeat { version: Version },
    /// Disconnect, either way.
    Disconnect { version: Version },
}

/// Why a frame sequence is not a Majordomo message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// No frames at all.
    #[error("empty message")]
    Empty,
    /// MDP/0.1 requires an empty delimiter frame first.
    #[error("missing empty delimiter frame")]
    MissingDelimiter,
    /// The protocol frame is none of MDPC01/MDPW01/MDPC02/MDPW02 (first bytes kept).
    #[error("unknown protocol frame {0:?}")]
    UnknownProtocol(Vec<u8>),
    /// The command frame is not one byte or not a known command for this protocol.
    #[error("unknown command {0:?}")]
    UnknownCommand(Vec<u8>),
    /// A mandatory frame is absent.
    #[error("missing {0} frame")]
    Missing(&'static str),
    /// The empty frame between address and body is absent or not empty.
    #[error("missing empty frame after the address")]
    MissingAddressDelimiter,
    /// The command carries frames it must not have.
    #[error("unexpected extra frames after {0}")]
    TrailingFrames(&'static str),
}

fn truncated(frame: &[u8]) -> Vec<u8> {
    frame.iter().copied().take(16).collect()
}

impl Message {
    /// Decodes `frames` (after any ROUTER identity frame).
    pub fn decode(frames: &[Frame], direction: Direction) -> Result<Message, CodecError> {
        Message::decode_owned(frames.to_vec(), direction)
    }

    /// Decodes `frames`, moving their bytes into the message instead of copying them.
    pub fn decode_owned(
        mut frames: Vec<Frame>,
        direction: Direction,
    ) -> Result<Message, CodecError> {
        let first = frames.first().ok_or(CodecError::Empty)?;
        let delimited = first.is_empty();
        let skip = usize::from(delimited);
        let protocol = frames.get(skip).ok_or(CodecError::Missing("protocol"))?;
        let decoder = match protocol.as_slice() {
            MDPC01 | MDPW01 if !delimited => return Err(CodecError::MissingDelimiter),
            MDPC01 => Decoder::ClientV1,
            MDPW01 => Decoder::Worker(Version::V1),
            MDPC02 => Decoder::ClientV2,
            MDPW02 => Decoder::Worker(Version::V2),
            other => return Err(CodecError::UnknownProtocol(truncated(other))),
        };
        let after = frames.split_off(skip + 1);
        match decoder {
            Decoder::ClientV1 => decode_client_v1(after, direction),
            Decoder::ClientV2 => decode_client_v2(after),
            Decoder::Worker(version) => decode_worker(version, after),
        }
    }

    /// Encodes into frames (without any ROUTER identity frame).
    pub fn encode(&self) -> Vec<Frame> {
        self.clone().into_frames()
    }

    /// Encodes into frames, moving the body frames instead of copying them.
    pub fn into_frames(self) -> Vec<Frame> {
        let version = self.version();
        let mut out = Vec::with_capacity(6);
        if version == Version::V1 {
            out.push(Vec::new());
        }
        let (client, worker) = match version {
            Version::V1 => (MDPC01, MDPW01),
            Version::V2 => (MDPC02, MDPW02),
        };
        match self {
            Message::ClientRequest { service, body, .. } => {
                out.push(client.to_vec());
                if version == Version::V2 {
                    out.push(vec![0x01]);
                }
                out.push(service);
                out.extend(body);
            }
            Message::ClientReply {
                kind,
                service,
                body,
                ..
            } => {
                out.push(client.to_vec());
                if version == Version::V2 {
                    out.push(vec![if kind == ReplyKind::Partial {
                        0x02
                    } else {
                        0x03
                    }]);
                }
                out.push(service);
                out.extend(body);
            }
            Message::Ready { service, extra, .. } => {
                out.push(worker.to_vec());
                out.push(vec![0x01]);
                out.push(service);
                out.extend(extra);
            }
            Message::WorkerRequest { address, body, .. } => {
                out.push(worker.to_vec());
                out.push(vec![0x02]);
                out.push(address);
                out.push(Vec::new());
                out.extend(body);
            }
            Message::WorkerReply {
                kind,
                address,
                body,
                ..
            } => {
                out.push(worker.to_vec());
                let command = match (version, kind) {
                    (Version::V1, _) => 0x03,
                    (Version::V2, ReplyKind::Partial) => 0x03,
                    (Version::V2, ReplyKind::Final) => 0x04,
                };
                out.push(vec![command]);
                out.push(address);
                out.push(Vec::new());
                out.extend(body);
            }
            Message::Heartbeat { .. } => {
                out.push(worker.to_vec());
                out.push(vec![if version == Version::V1 { 0x04 } else { 0x05 }]);
            }
            Message::Disconnect { .. } => {
                out.push(worker.to_vec());
                out.push(vec![if version == Version::V1 { 0x05 } else { 0x06 }]);
            }
        }
        out
    }

    /// The protocol revision of this message.
    pub fn version(&self) -> Version {
        match self {
            Message::ClientRequest { version, .. }
            | Message::ClientReply { version, .. }
            | Message::Ready { version, .. }
            | Message::WorkerRequest { version, .. }
            | Message::WorkerReply { version, .. }
            | Message::Heartbeat { version }
            | Message::Disconnect { version } => *version,
        }
    }
}

enum Decoder {
    ClientV1,
    ClientV2,
    Worker(Version),
}

fn decode_client_v1(mut after: Vec<Frame>, direction: Direction) -> Result<Message, CodecError> {
    if after.is_empty() {
        return Err(CodecError::Missing("service"));
    }
    let body = after.split_off(1);
    let service = after.swap_remove(0);
    Ok(match direction {
        Direction::ToBroker => Message::ClientRequest {
            version: Version::V1,
            service,
            body,
        },
        Direction::FromBroker => Message::ClientReply {
            version: Version::V1,
            kind: ReplyKind::Final,
            service,
            body,
        },
    })
}

fn command_byte(frame: Option<&Frame>) -> Result<u8, CodecError> {
    match frame {
        None => Err(CodecError::Missing("command")),
        Some(f) if f.len() == 1 => Ok(f[0]),
        Some(f) => Err(CodecError::UnknownCommand(truncated(f))),
    }
}

fn decode_client_v2(mut after: Vec<Frame>) -> Result<Message, CodecError> {
    let command = command_byte(after.first())?;
    if after.len() < 2 {
        return Err(CodecError::Missing("service"));
    }
    let body = after.split_off(2);
    let service = after.swap_remove(1);
    let version = Version::V2;
    Ok(match command {
        0x01 => Message::ClientRequest {
            version,
            service,
            body,
        },
        0x02 => Message::ClientReply {
            version,
            kind: ReplyKind::Partial,
            service,
            body,
        },
        0x03 => Message::ClientReply {
            version,
            kind: ReplyKind::Final,
            service,
            body,
        },
        other => return Err(CodecError::UnknownCommand(vec![other])),
    })
}

/// Splits `address "" body...` as carried by worker REQUEST and REPLY commands.
fn address_and_body(mut args: Vec<Frame>) -> Result<(Frame, Vec<Frame>), CodecError> {
    if args.is_empty() {
        return Err(CodecError::Missing("address"));
    }
    match args.get(1) {
        Some(empty) if empty.is_empty() => {
            let body = args.split_off(2);
            Ok((args.swap_remove(0), body))
        }
        _ => Err(CodecError::MissingAddressDelimiter),
    }
}

fn decode_worker(version: Version, mut after: Vec<Frame>) -> Result<Message, CodecError> {
    let command = command_byte(after.first())?;
    let mut args = after.split_off(1);
    let no_args = |name: &'static str, args: &[Frame], msg: Message| {
        if args.is_empty() {
            Ok(msg)
        } else {
            Err(CodecError::TrailingFrames(name))
        }
    };
    match (version, command) {
        (_, 0x01) => {
            if args.is_empty() {
                return Err(CodecError::Missing("service"));
            }
            let extra = args.split_off(1);
            Ok(Message::Ready {
                version,
                service: args.swap_remove(0),
                extra,
            })
        }
        (_, 0x02) => {
            let (address, body) = address_and_body(args)?;
            Ok(Message::WorkerRequest {
                version,
                address,
                body,
            })
        }
        (Version::V1, 0x03) | (Version::V2, 0x03 | 0x04) => {
            let (address, body) = address_and_body(args)?;
            let kind = if version == Version::V2 && command == 0x03 {
                ReplyKind::Partial
            } else {
                ReplyKind::Final
            };
            Ok(Message::WorkerReply {
                version,
                kind,
                address,
                body,
            })
        }
        (Version::V1, 0x04) | (Version::V2, 0x05) => {
            no_args("HEARTBEAT", &args, Message::Heartbeat { version })
        }
        (Version::V1, 0x05) | (Version::V2, 0x06) => {
            no_args("DISCONNECT", &args, Message::Disconnect { version })
        }
        (_, other) => Err(CodecError::UnknownCommand(vec![other])),
    }
}

/// Frames up to this size are copied into libzmq's inline small-message storage; larger
/// ones are handed over without copying. (Zero-copy costs an allocation of its own, which
/// is dearer than copying a few bytes.)
const INLINE_FRAME: usize = 64;

/// Sends `frames` as one multipart message, preceded by `peer` (a ROUTER identity) if given.
pub(crate) fn send_frames(
    socket: &zmq::Socket,
    peer: Option<&[u8]>,
    frames: Vec<Frame>,
    flags: i32,
) -> Result<(), zmq::Error> {
    let count = frames.len();
    if let Some(peer) = peer {
        let more = if count > 0 { zmq::SNDMORE } else { 0 };
        socket.send(peer, flags | more)?;
    }
    for (i, frame) in frames.into_iter().enumerate() {
        let more = if i + 1 < count { zmq::SNDMORE } else { 0 };
        if frame.len() <= INLINE_FRAME {
            socket.send(frame.as_slice(), flags | more)?;
        } else {
            socket.send(frame, flags | more)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_messages() -> Vec<Message> {
        let mut out = Vec::new();
        for version in [Version::V1, Version::V2] {
            let body = vec![b"a".to_vec(), Vec::new(), vec![0xff; 300]];
            out.push(Message::ClientRequest {
                version,
                service: b"echo".to_vec(),
                body: body.clone(),
            });
            out.push(Message::ClientReply {
                version,
                kind: ReplyKind::Final,
                service: b"echo".to_vec(),
                body: body.clone(),
            });
            out.push(Message::Ready {
                version,
                service: b"svc".to_vec(),
                extra: vec![b"x".to_vec()],
            });
            out.push(Message::Ready {
                version,
                service: b"svc".to_vec(),
                extra: vec![],
            });
            out.push(Message::WorkerRequest {
                version,
                address: b"\x01\x02".to_vec(),
                body: body.clone(),
            });
            out.push(Message::WorkerReply {
                version,
                kind: ReplyKind::Final,
                address: b"addr".to_vec(),
                body: body.clone(),
            });
            out.push(Message::Heartbeat { version });
            out.push(Message::Disconnect { version });
        }
        out.push(Message::ClientReply {
            version: Version::V2,
            kind: ReplyKind::Partial,
            service: b"s".to_vec(),
            body: vec![b"line".to_vec()],
        });
        out.push(Message::WorkerReply {
            version: Version::V2,
            kind: ReplyKind::Partial,
            address: b"a".to_vec(),
            body: vec![],
        });
        out
    }

    #[test]
    fn every_message_round_trips() {
        for msg in all_messages() {
            let direction = match msg {
                Message::ClientReply { .. } | Message::WorkerRequest { .. } => {
                    Direction::FromBroker
                }
                _ => Direction::ToBroker,
            };
            let frames = msg.encode();
            assert_eq!(
                Message::decode(&frames, direction),
                Ok(msg.clone()),
                "{frames:?}"
            );
        }
    }

    #[test]
    fn frames_match_the_rfc_tables() {
        let v1 = Message::WorkerRequest {
            version: Version::V1,
            address: b"c".to_vec(),
            body: vec![b"b".to_vec()],
        };
        assert_eq!(
            v1.encode(),
            vec![
                b"".to_vec(),
                b"MDPW01".to_vec(),
                vec![2],
                b"c".to_vec(),
                vec![],
                b"b".to_vec()
            ]
        );
        let v2 = Message::ClientReply {
            version: Version::V2,
            kind: ReplyKind::Final,
            service: b"s".to_vec(),
            body: vec![],
        };
        assert_eq!(
            v2.encode(),
            vec![b"MDPC02".to_vec(), vec![3], b"s".to_vec()]
        );
        assert_eq!(
            Message::Heartbeat {
                version: Version::V2
            }
            .encode(),
            vec![b"MDPW02".to_vec(), vec![5]]
        );
    }

    #[test]
    fn v2_tolerates_a_leading_delimiter_and_v1_requires_it() {
        let frames = vec![vec![], b"MDPW02".to_vec(), vec![5]];
        assert_eq!(
            Message::decode(&frames, Direction::ToBroker),
            Ok(Message::Heartbeat {
                version: Version::V2
            })
        );
        let frames = vec![b"MDPW01".to_vec(), vec![4]];
        assert_eq!(
            Message::decode(&frames, Direction::ToBroker),
            Err(CodecError::MissingDelimiter)
        );
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let cases: Vec<Vec<Frame>> = vec![
            vec![],
            vec![vec![]],
            vec![b"HTTP/1.1".to_vec()],
            vec![vec![], b"MDPW01".to_vec()],
            vec![vec![], b"MDPW01".to_vec(), vec![9]],
            vec![vec![], b"MDPW01".to_vec(), vec![1, 2]],
            vec![vec![], b"MDPW01".to_vec(), vec![1]],
            vec![vec![], b"MDPW01".to_vec(), vec![3], b"addr".to_vec()],
            vec![
                vec![],
                b"MDPW01".to_vec(),
                vec![3],
                b"addr".to_vec(),
                b"notempty".to_vec(),
            ],
            vec![vec![], b"MDPW01".to_vec(), vec![4], b"extra".to_vec()],
            vec![b"MDPC02".to_vec()],
            vec![b"MDPC02".to_vec(), vec![7], b"s".to_vec()],
            vec![b"MDPC02".to_vec(), vec![1]],
            vec![vec![], b"MDPC01".to_vec()],
            vec![b"MDPW02".to_vec(), vec![0x04]],
            vec![b"MDPW02".to_vec(), vec![]],
            vec![vec![0u8; 1 << 16]],
        ];
        for frames in cases {
            assert!(
                Message::decode(&frames, Direction::ToBroker).is_err(),
                "{frames:?}"
            );
        }
        // A deterministic pseudo-random sweep: whatever comes out, decoding must not panic.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let protocols = [MDPC01, MDPW01, MDPC02, MDPW02, b"junk"];
        for _ in 0..20_000 {
            let count = (next() % 6) as usize;
            let mut frames = Vec::new();
            for i in 0..count {
                let r = next();
                let frame = match (i, r % 4) {
                    (0, 0) => Vec::new(),
                    (0 | 1, 1) => protocols[(r >> 8) as usize % protocols.len()].to_vec(),
                    (_, 2) => vec![(r >> 16) as u8 % 8],
                    _ => (0..(r >> 24) % 5).map(|b| b as u8).collect(),
                };
                frames.push(frame);
            }
            let _ = Message::decode(&frames, Direction::ToBroker);
            let _ = Message::decode(&frames, Direction::FromBroker);
        }
    }
}
