//! The hello: the first frame of a worker ([`HelloEnvelope`]) and the
//! master's answer ([`HelloReply`]), and their pure encoders and decoders,
//! which `connect`, `accept`, the tests and the fuzz target all run.

use bincode::{Decode, Encode};
use ffrtmp_runtime::wire::{self, ToMaster, PROTOCOL_VERSION};
use quinn::VarInt;

use super::{close, TransportError};

/// Hello frames are small.
pub(super) const MAX_HELLO_BYTES: usize = 64 * 1024;

/// The first frame from a worker. Frozen layout.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct HelloEnvelope {
    /// The worker's protocol version, outside the versioned payload.
    pub protocol_version: u32,
    /// bincode of `wire::ToMaster::Hello` in that protocol version.
    pub hello: Vec<u8>,
}

/// The master's answer. Frozen layout.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct HelloReply {
    /// The master's protocol version.
    pub protocol_version: u32,
    /// Whether the worker is admitted.
    pub accepted: bool,
    /// Why not, when not accepted (the worker prints it); empty otherwise.
    pub reason: String,
}

/// bincode's standard configuration, refusing anything over `LIMIT` bytes:
/// the frozen encoding of the hello and join messages.
fn bincode_cfg<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Encodes a hello or join message (at most `LIMIT` bytes).
pub(crate) fn encode_limited<const LIMIT: usize, T: Encode>(
    v: &T,
) -> Result<Vec<u8>, TransportError> {
    bincode::encode_to_vec(v, bincode_cfg::<LIMIT>())
        .map_err(|e| TransportError::Malformed(e.to_string()))
}

/// Decodes a whole frame as one hello or join message (at most `LIMIT`
/// bytes); trailing bytes are an error.
pub(crate) fn decode_limited<const LIMIT: usize, T: Decode<()>>(
    b: &[u8],
) -> Result<T, TransportError> {
    let (v, used) = bincode::decode_from_slice(b, bincode_cfg::<LIMIT>())
        .map_err(|e| TransportError::Malformed(e.to_string()))?;
    if used != b.len() {
        return Err(TransportError::Malformed("trailing bytes".into()));
    }
    Ok(v)
}

/// Why the master refuses a worker's first frame. Each kind closes the
/// connection with its own code (see [`close`]); the message is the reason
/// the worker prints.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// Not a [`HelloEnvelope`] (or no frame at all).
    #[error("malformed hello: {0}")]
    Envelope(String),
    /// The envelope announces another protocol version than the master's.
    #[error("protocol version {theirs} is not supported: this master speaks {ours}")]
    Version {
        /// The master's version.
        ours: u32,
        /// The version in the envelope.
        theirs: u32,
    },
    /// The envelope's payload is not a `ToMaster::Hello` of our version.
    #[error("the first message must be a hello")]
    NotHello,
}

impl HelloError {
    /// The application close code the master uses for this refusal.
    pub fn close_code(&self) -> VarInt {
        match self {
            HelloError::Envelope(_) | HelloError::NotHello => close::BAD_HELLO,
            HelloError::Version { .. } => close::VERSION_MISMATCH,
        }
    }
}

impl From<HelloError> for TransportError {
    fn from(e: HelloError) -> Self {
        match e {
            HelloError::Envelope(m) => TransportError::Malformed(m),
            HelloError::Version { ours, theirs } => {
                TransportError::VersionMismatch { ours, theirs }
            }
            HelloError::NotHello => TransportError::Malformed("first message not a hello".into()),
        }
    }
}

/// The master's decoding of a worker's first frame (untrusted bytes): a
/// [`HelloEnvelope`] of exactly our [`PROTOCOL_VERSION`] whose payload is a
/// `ToMaster::Hello`. Pure, so tests and fuzzing run exactly what
/// [`accept`](super::accept) runs.
pub fn decode_hello(frame: &[u8]) -> Result<ToMaster, HelloError> {
    let env: HelloEnvelope = decode_limited::<MAX_HELLO_BYTES, _>(frame).map_err(|e| match e {
        TransportError::Malformed(m) => HelloError::Envelope(m),
        other => HelloError::Envelope(other.to_string()),
    })?;
    if env.protocol_version != PROTOCOL_VERSION {
        return Err(HelloError::Version {
            ours: PROTOCOL_VERSION,
            theirs: env.protocol_version,
        });
    }
    match wire::decode(&env.hello) {
        Ok(h @ ToMaster::Hello { .. }) => Ok(h),
        Ok(_) | Err(_) => Err(HelloError::NotHello),
    }
}

/// The worker's decoding of the master's answer to its hello.
pub fn decode_hello_reply(frame: &[u8]) -> Result<HelloReply, TransportError> {
    decode_limited::<MAX_HELLO_BYTES, _>(frame)
}

/// A hello frame as a worker sends it (the inverse of [`decode_hello`] for
/// `protocol_version == PROTOCOL_VERSION`).
pub fn encode_hello(protocol_version: u32, hello: &ToMaster) -> Result<Vec<u8>, TransportError> {
    let env = HelloEnvelope {
        protocol_version,
        hello: wire::encode(hello).map_err(|e| TransportError::Malformed(e.to_string()))?,
    };
    encode_limited::<MAX_HELLO_BYTES, _>(&env)
}

/// The master's answer as it goes on the wire.
pub fn encode_hello_reply(reply: &HelloReply) -> Result<Vec<u8>, TransportError> {
    encode_limited::<MAX_HELLO_BYTES, _>(reply)
}
