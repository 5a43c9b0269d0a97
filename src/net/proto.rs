//! The chunk and market protocols: message types, their limits and their
//! stream codec.
//!
//! Chunk operations are request-response protocols of their own
//! (`/pactfs/put/1`, `/pactfs/get/1`, `/pactfs/has/1`); asks, bids and
//! cheques share `/pactfs/market/1`. Every message is one `codec::frame`
//! whose kind names the message and bounds its size.

use crate::codec::{self, frame};
use crate::promise::{
    Ask, Bid, Cheque, ChequeAck, MAX_PROMISE_BYTES, MAX_ROOT_BYTES, NodeKey, Promise, Receipt, Signed,
};
use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use serde::{Deserialize, Serialize};

/// Version byte of every frame.
pub const WIRE_V1: u8 = 1;
/// The largest sealed chunk (configuration bounds chunks to 16 MiB) plus
/// the AEAD tag and slack.
pub const MAX_CHUNK: usize = 16 * 1024 * 1024 + 4096;
/// Most chunk ids one has-chunks request may name.
pub const MAX_HAS_IDS: usize = 4096;
/// Slack for the fixed fields around a chunk body.
const ENVELOPE: usize = 4096;

pub const PUT: StreamProtocol = StreamProtocol::new("/pactfs/put/1");
pub const GET: StreamProtocol = StreamProtocol::new("/pactfs/get/1");
pub const HAS: StreamProtocol = StreamProtocol::new("/pactfs/has/1");
pub const MARKET: StreamProtocol = StreamProtocol::new("/pactfs/market/1");

/// Upload one sealed chunk under a promise (its id: the provider holds the
/// promise it signed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutChunk {
    pub promise: [u8; 32],
    pub id: [u8; 32],
    pub body: Vec<u8>,
}

/// Fetch a chunk, or `len` bytes of it from `offset`, under a promise that
/// covers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetChunk {
    pub promise: [u8; 32],
    pub id: [u8; 32],
    pub range: Option<(u64, u32)>,
}

/// Largest byte range one audit may ask for.
pub const MAX_AUDIT_RANGE: u32 = 1024 * 1024;

/// Audit: prove you hold `len` bytes of chunk `id` from `offset` (a node
/// of the chunk's BLAKE3 tree, see `chunk::proof`), under a promise.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditChunk {
    pub promise: [u8; 32],
    pub id: [u8; 32],
    pub offset: u64,
    pub len: u32,
}

/// The answer to an audit: the bytes and the sibling chaining values from
/// the root down (`chunk::proof::verify` checks them against the id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audited {
    #[serde(with = "codec::bytes")]
    pub bytes: Vec<u8>,
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, { crate::chunk::proof::MAX_SIBLINGS }>")]
    pub siblings: Vec<[u8; 32]>,
}

/// A provider's answer to a bid below its price: the price it would take.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Milli-credits per GiB-month.
    pub price: u64,
    #[serde(with = "codec::string")]
    pub message: String,
}

/// Which of these chunks does the provider hold?
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HasChunks {
    #[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_HAS_IDS>")]
    pub ids: Vec<[u8; 32]>,
}

/// The answer to [`HasChunks`], one flag per id asked.
/// A root on the wire (bytes decoded without trusting the length prefix).
#[derive(Serialize, Deserialize)]
struct RootBytes(codec::Bytes);

#[derive(Serialize, Deserialize)]
struct RootAnswer(Option<codec::Bytes>);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct HasAnswer(#[serde(deserialize_with = "codec::bounded_seq::<_, _, MAX_HAS_IDS>")] Vec<bool>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Put(PutChunk),
    Get(GetChunk),
    Has(HasChunks),
    /// The provider's current ask.
    Ask,
    Bid(Bid),
    Pay(Signed<Cheque>),
    /// Keep this signed root (an encoded `promise::Root`) for its client,
    /// if it is the sender's own and newer than the one held.
    PutRoot(Vec<u8>),
    /// The newest root held for this client.
    GetRoot(NodeKey),
    Audit(AuditChunk),
}

/// Why a request was not served; the message is for logs and people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// Too many requests in flight from this peer: try again later.
    Busy,
    /// No room for the chunk within the provider's capacity.
    Full,
    /// The provider does not hold the chunk.
    NotFound,
    /// The capability is missing, expired, forged or for another node.
    Unauthorized,
    /// A bid whose nonce the provider has already seen.
    Replayed,
    /// The client owes for promises past the provider's grace.
    Unpaid,
    /// The body does not hash to the chunk id.
    BadChunk,
    /// The request is well-formed but not acceptable (a bad range, say).
    BadRequest,
    /// This node does not serve that protocol (it is not a provider).
    Unsupported,
    /// The provider failed (its disk, say).
    Internal,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub why: Refusal,
    #[serde(with = "codec::string")]
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Response {
    Stored(Signed<Receipt>),
    Chunk(Vec<u8>),
    Has(Vec<bool>),
    Ask(Signed<Ask>),
    Promise(Box<Promise>),
    Counter(Counter),
    Paid(Signed<ChequeAck>),
    Refused(Refused),
    /// The newest root held for the client asked about (or just put).
    Root(Option<Vec<u8>>),
    Audited(Audited),
}

impl Response {
    pub fn refused(why: Refusal, message: impl Into<String>) -> Response {
        Response::Refused(Refused { why, message: message.into() })
    }
}

// Frame kinds. Requests and responses have separate kind spaces.
const REQ_PUT: u8 = 1;
const REQ_GET: u8 = 2;
const REQ_HAS: u8 = 3;
const REQ_ASK: u8 = 4;
const REQ_BID: u8 = 5;
const REQ_PAY: u8 = 6;
const REQ_PUT_ROOT: u8 = 7;
const REQ_GET_ROOT: u8 = 8;
const REQ_AUDIT: u8 = 16;
const RES_STORED: u8 = 1;
const RES_CHUNK: u8 = 2;
const RES_HAS: u8 = 3;
const RES_REFUSED: u8 = 4;
const RES_ASK: u8 = 5;
const RES_PROMISE: u8 = 6;
const RES_COUNTER: u8 = 7;
const RES_PAID: u8 = 8;
const RES_ROOT: u8 = 9;
const RES_AUDITED: u8 = 16;
/// An ask, a cheque or its acknowledgement: small statements.
const SMALL: usize = 4096;

/// The largest body of each request kind.
pub fn request_limit(kind: u8) -> Option<usize> {
    match kind {
        REQ_PUT => Some(MAX_CHUNK + ENVELOPE),
        REQ_GET => Some(128),
        REQ_HAS => Some(MAX_HAS_IDS * 33 + 16),
        REQ_ASK => Some(0),
        REQ_BID => Some(MAX_PROMISE_BYTES),
        REQ_PAY => Some(SMALL),
        REQ_PUT_ROOT => Some(MAX_ROOT_BYTES + 16),
        REQ_GET_ROOT => Some(64),
        REQ_AUDIT => Some(128),
        _ => None,
    }
}

/// The largest body of each response kind.
pub fn response_limit(kind: u8) -> Option<usize> {
    match kind {
        RES_STORED => Some(1024),
        RES_CHUNK => Some(MAX_CHUNK),
        RES_HAS => Some(MAX_HAS_IDS + 16),
        RES_REFUSED => Some(ENVELOPE),
        RES_ASK | RES_COUNTER | RES_PAID => Some(SMALL),
        RES_PROMISE => Some(MAX_PROMISE_BYTES),
        RES_ROOT => Some(MAX_ROOT_BYTES + 16),
        RES_AUDITED => Some(MAX_AUDIT_RANGE as usize + crate::chunk::proof::MAX_SIBLINGS * 32 + 64),
        _ => None,
    }
}

/// The fixed fields of a put. They travel after its body, so the receiver
/// cuts them off the end of the frame and keeps the body where it landed.
#[derive(Serialize, Deserialize)]
struct PutHead {
    promise: [u8; 32],
    id: [u8; 32],
}

fn malformed(what: &str) -> codec::CodecError {
    codec::CodecError::Malformed(what.to_string())
}

impl Request {
    /// The frame kind and the parts of the frame body, written in order. A
    /// put is `body | head | head length u32 BE`: the chunk is never copied.
    pub fn into_wire(self) -> (u8, Vec<Vec<u8>>) {
        match self {
            Request::Put(m) => {
                let head = codec::encode_body(&PutHead { promise: m.promise, id: m.id });
                let len = u32::try_from(head.len()).unwrap_or(u32::MAX).to_be_bytes().to_vec();
                (REQ_PUT, vec![m.body, head, len])
            }
            Request::Get(m) => (REQ_GET, vec![codec::encode_body(&m)]),
            Request::Has(m) => (REQ_HAS, vec![codec::encode_body(&m)]),
            Request::Ask => (REQ_ASK, vec![]),
            Request::Bid(m) => (REQ_BID, vec![codec::encode_body(&m)]),
            Request::Pay(m) => (REQ_PAY, vec![codec::encode_body(&m)]),
            Request::PutRoot(m) => (REQ_PUT_ROOT, vec![codec::encode_body(&RootBytes(codec::Bytes(m)))]),
            Request::GetRoot(m) => (REQ_GET_ROOT, vec![codec::encode_body(&m)]),
            Request::Audit(m) => (REQ_AUDIT, vec![codec::encode_body(&m)]),
        }
    }
    /// The frame kind and the whole frame body (for tests and tools).
    pub fn encode(&self) -> (u8, Vec<u8>) {
        let (kind, parts) = self.clone().into_wire();
        (kind, parts.concat())
    }
    pub fn decode(kind: u8, body: Vec<u8>) -> Result<Request, codec::CodecError> {
        Ok(match kind {
            REQ_PUT => {
                let n = body.len();
                let tail = n.checked_sub(4).ok_or_else(|| malformed("put frame too short"))?;
                let head_len = u32::from_be_bytes([body[tail], body[tail + 1], body[tail + 2], body[tail + 3]]);
                let start = tail.checked_sub(head_len as usize).ok_or_else(|| malformed("put head past the frame"))?;
                let head: PutHead = codec::decode_body(&body[start..tail])?;
                let mut body = body;
                body.truncate(start);
                Request::Put(PutChunk { promise: head.promise, id: head.id, body })
            }
            REQ_GET => Request::Get(codec::decode_body(&body)?),
            REQ_HAS => Request::Has(codec::decode_body(&body)?),
            REQ_ASK if body.is_empty() => Request::Ask,
            REQ_ASK => return Err(malformed("an ask request has no body")),
            REQ_BID => Request::Bid(codec::decode_body(&body)?),
            REQ_PAY => Request::Pay(codec::decode_body(&body)?),
            REQ_PUT_ROOT => Request::PutRoot(codec::decode_body::<RootBytes>(&body)?.0.0),
            REQ_GET_ROOT => Request::GetRoot(codec::decode_body(&body)?),
            REQ_AUDIT => Request::Audit(codec::decode_body(&body)?),
            other => return Err(codec::CodecError::Malformed(format!("unknown request kind {other}"))),
        })
    }
    /// The protocol this request travels on.
    pub fn protocol(&self) -> StreamProtocol {
        match self {
            Request::Put(_) => PUT,
            Request::Get(_) => GET,
            Request::Has(_) => HAS,
            Request::Ask
            | Request::Bid(_)
            | Request::Pay(_)
            | Request::Audit(_)
            | Request::PutRoot(_)
            | Request::GetRoot(_) => MARKET,
        }
    }
}

impl Response {
    /// As [`Request::into_wire`]; a chunk's frame body is the chunk itself.
    pub fn into_wire(self) -> (u8, Vec<Vec<u8>>) {
        match self {
            Response::Stored(m) => (RES_STORED, vec![codec::encode_body(&m)]),
            Response::Chunk(m) => (RES_CHUNK, vec![m]),
            Response::Has(m) => (RES_HAS, vec![codec::encode_body(&HasAnswer(m))]),
            Response::Refused(m) => (RES_REFUSED, vec![codec::encode_body(&m)]),
            Response::Ask(m) => (RES_ASK, vec![codec::encode_body(&m)]),
            Response::Promise(m) => (RES_PROMISE, vec![codec::encode_body(&m)]),
            Response::Counter(m) => (RES_COUNTER, vec![codec::encode_body(&m)]),
            Response::Paid(m) => (RES_PAID, vec![codec::encode_body(&m)]),
            Response::Root(m) => (RES_ROOT, vec![codec::encode_body(&RootAnswer(m.map(codec::Bytes)))]),
            Response::Audited(m) => (RES_AUDITED, vec![codec::encode_body(&m)]),
        }
    }
    pub fn encode(&self) -> (u8, Vec<u8>) {
        let (kind, parts) = self.clone().into_wire();
        (kind, parts.concat())
    }
    pub fn decode(kind: u8, body: Vec<u8>) -> Result<Response, codec::CodecError> {
        Ok(match kind {
            RES_STORED => Response::Stored(codec::decode_body(&body)?),
            RES_CHUNK => Response::Chunk(body),
            RES_HAS => Response::Has(codec::decode_body::<HasAnswer>(&body)?.0),
            RES_REFUSED => Response::Refused(codec::decode_body(&body)?),
            RES_ASK => Response::Ask(codec::decode_body(&body)?),
            RES_PROMISE => Response::Promise(Box::new(codec::decode_body(&body)?)),
            RES_COUNTER => Response::Counter(codec::decode_body(&body)?),
            RES_PAID => Response::Paid(codec::decode_body(&body)?),
            RES_ROOT => Response::Root(codec::decode_body::<RootAnswer>(&body)?.0.map(|b| b.0)),
            RES_AUDITED => Response::Audited(codec::decode_body(&body)?),
            other => return Err(codec::CodecError::Malformed(format!("unknown response kind {other}"))),
        })
    }
}

fn invalid(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// The request-response codec of the chunk protocols.
#[derive(Clone, Default)]
pub struct ChunkCodec;

impl libp2p::request_response::Codec for ChunkCodec {
    type Protocol = StreamProtocol;
    type Request = Request;
    type Response = Response;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        protocol: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Request> {
        let (kind, body) = frame::read(io, WIRE_V1, request_limit).await?;
        let req = Request::decode(kind, body).map_err(invalid)?;
        if req.protocol() != *protocol {
            return Err(invalid(format!("a {kind} request on {protocol}")));
        }
        Ok(req)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> std::io::Result<Response> {
        let (kind, body) = frame::read(io, WIRE_V1, response_limit).await?;
        Response::decode(kind, body).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Request,
    ) -> std::io::Result<()> {
        let (kind, parts) = req.into_wire();
        frame::write_parts(io, WIRE_V1, kind, &parts).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Response,
    ) -> std::io::Result<()> {
        let (kind, parts) = res.into_wire();
        frame::write_parts(io, WIRE_V1, kind, &parts).await
    }
}
