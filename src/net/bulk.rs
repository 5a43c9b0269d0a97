//! The bulk path: chunk puts and gets pipelined over a few long-lived
//! streams per peer (`/pactfs/bulk/1`), beside request-response.
//!
//! A request-response exchange opens a stream per request and passes the
//! request and its answer through the swarm's event loop on both sides:
//! on two shared cores those hand-offs (thread wake-ups, context switches)
//! cost more CPU than moving a 1 MiB chunk. Here the caller's task writes
//! its frame straight onto a stream, the provider's stream task hands it
//! to the service on the blocking pool, and the answer comes back on the
//! same stream; answers come in request order, so a stream carries many
//! requests at once without ids.
//!
//! Frames and limits are the chunk protocols' own (`proto`, `codec::frame`);
//! only puts and gets travel here. A garbled, oversized or out-of-place
//! frame ends that stream (logged); the connection and the peer's other
//! streams go on. Bounds: [`MAX_STREAMS`] streams per peer, each with at
//! most [`DEPTH`] requests being served (the reader stops reading past
//! that, so a fast sender is slowed, not refused).
//!
//! A peer that does not accept the protocol (a client, an older node) is
//! remembered and reached through request-response instead.

use super::proto::{self, Refusal, Request, Response, WIRE_V1};
use super::{NetError, Service, node_key_of};
use crate::codec::frame;
use crate::lock;
use futures::io::{ReadHalf, WriteHalf};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, StreamProtocol};
use libp2p_stream::{Control, OpenStreamError};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub const BULK: StreamProtocol = StreamProtocol::new("/pactfs/bulk/1");
/// Streams one peer may have open to a provider (and that a client opens).
pub const MAX_STREAMS: usize = 4;
/// Requests of one stream being served at once.
pub const DEPTH: usize = 8;
/// How long one request may take (a 16 MiB chunk over a slow link included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Tries of one request over streams that break before answering.
const TRIES: u32 = 4;
/// The pause before the second try; each later one waits four times longer.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How long a peer that refused the bulk protocol is reached through
/// request-response before bulk is tried again (it may restart as a
/// provider, or with a newer pactfs).
const UNSUPPORTED_FOR: Duration = Duration::from_secs(600);

/// Whether a request travels on the bulk path.
pub fn carries(req: &Request) -> bool {
    matches!(req, Request::Put(_) | Request::Get(_))
}

// --- provider side --------------------------------------------------------------------

/// A peer's open bulk streams, oldest first: (number, its task).
type Streams = VecDeque<(u64, tokio::task::AbortHandle)>;

/// Called with each chunk stored through the bulk path (the event loop
/// announces it in the DHT).
pub type OnStored = Arc<dyn Fn([u8; 32]) + Send + Sync>;

/// Accepts bulk streams and serves each in its own task, until the
/// network stops (`stopped` resolves).
pub async fn serve(
    mut control: Control,
    service: Arc<dyn Service>,
    stored: OnStored,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut incoming = match control.accept(BULK) {
        Ok(i) => i,
        Err(e) => {
            tracing::error!(cause = %e, "cannot accept bulk streams");
            return;
        }
    };
    // Each peer's streams, oldest first: a new stream past the bound ends
    // the oldest (a stream of a connection that died without closing, say,
    // which lingers until the connection times out).
    let open: Arc<Mutex<HashMap<PeerId, Streams>>> = Arc::default();
    let mut next_id = 0u64;
    loop {
        let (peer, stream) = tokio::select! {
            next = incoming.next() => match next {
                Some(s) => s,
                None => break,
            },
            _ = &mut stopped => break,
        };
        let Some(from) = node_key_of(&peer) else {
            tracing::debug!(%peer, "bulk stream from a peer without an ed25519 key: dropped");
            continue;
        };
        next_id += 1;
        let id = next_id;
        let (service, stored, streams) = (service.clone(), stored.clone(), open.clone());
        let mut open = lock(&open);
        let mine = open.entry(peer).or_default();
        while mine.len() >= MAX_STREAMS {
            if let Some((_, oldest)) = mine.pop_front() {
                tracing::debug!(%peer, "more bulk streams than the bound: the oldest is closed");
                oldest.abort();
            }
        }
        let task = tokio::spawn(async move {
            serve_stream(service, stored, from, peer, stream).await;
            let mut open = lock(&streams);
            if let Some(mine) = open.get_mut(&peer) {
                mine.retain(|(i, _)| *i != id);
                if mine.is_empty() {
                    open.remove(&peer);
                }
            }
        });
        mine.push_back((id, task.abort_handle()));
    }
}

/// Reads requests, serves up to [`DEPTH`] at once on the blocking pool and
/// writes the answers back in order.
async fn serve_stream(
    service: Arc<dyn Service>,
    stored: OnStored,
    from: crate::promise::NodeKey,
    peer: PeerId,
    stream: libp2p::Stream,
) {
    let (mut rd, mut wr) = stream.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<tokio::task::JoinHandle<Response>>(DEPTH);
    let serving = Arc::new(tokio::sync::Semaphore::new(DEPTH));
    let reader = async move {
        loop {
            let (kind, body) = match frame::read_next(&mut rd, WIRE_V1, proto::request_limit).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(%peer, cause = %e, "refused a bulk frame: stream closed");
                    break;
                }
            };
            let req = match Request::decode(kind, body) {
                Ok(r) if carries(&r) => r,
                Ok(_) => {
                    tracing::warn!(%peer, kind, "a request that is not a put or a get on a bulk stream: stream closed");
                    break;
                }
                Err(e) => {
                    tracing::warn!(%peer, cause = %e, "refused a bulk message: stream closed");
                    break;
                }
            };
            let Ok(permit) = serving.clone().acquire_owned().await else { break };
            let service = service.clone();
            let handle = tokio::task::spawn_blocking(move || {
                let res = service.serve(&from, req);
                drop(permit);
                res
            });
            if tx.send(handle).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some(handle) = rx.recv().await {
            let res =
                handle.await.unwrap_or_else(|_| Response::refused(Refusal::Internal, "the request handler failed"));
            if let Response::Stored(r) = &res {
                stored(r.body.chunk);
            }
            let (kind, parts) = res.into_wire();
            if let Err(e) = frame::write_parts(&mut wr, WIRE_V1, kind, &parts).await {
                tracing::debug!(%peer, cause = %e, "bulk stream closed while answering");
                return;
            }
            // A chunk served: its buffer reads the next one.
            parts.into_iter().for_each(crate::bufpool::give);
        }
        let _ = wr.close().await;
    };
    futures::join!(reader, writer);
}

// --- client side ---------------------------------------------------------------------

type Reply = oneshot::Sender<Result<Response, String>>;

/// One open bulk stream: its write half and the answers it owes, in order.
struct Conn {
    writer: tokio::sync::Mutex<WriteHalf<libp2p::Stream>>,
    waiting: Mutex<VecDeque<Reply>>,
    /// Requests written and not yet answered.
    load: AtomicUsize,
    dead: AtomicBool,
}

impl Conn {
    /// Ends the stream's use: every request still owed an answer fails.
    fn fail(&self, why: &str) {
        self.dead.store(true, Ordering::Relaxed);
        for reply in lock(&self.waiting).drain(..) {
            let _ = reply.send(Err(why.to_string()));
        }
    }
}

#[derive(Default)]
struct Pool {
    conns: Vec<Arc<Conn>>,
}

/// Sends puts and gets over bulk streams; cheap to share.
pub struct Client {
    control: Mutex<Control>,
    pools: Mutex<HashMap<PeerId, Pool>>,
    /// One stream opening at a time per peer (libp2p_stream hands inbound
    /// streams over through a one-slot channel: a burst loses some).
    opening: Mutex<HashMap<PeerId, Arc<tokio::sync::Mutex<()>>>>,
    /// Peers that refused the bulk protocol, and when.
    unsupported: Mutex<HashMap<PeerId, Instant>>,
}

/// Why a bulk request did not get an answer.
pub enum Failed {
    /// The peer does not speak the bulk protocol: the request, to send
    /// through request-response instead.
    Unsupported(Request),
    Error(NetError),
}

impl Client {
    pub fn new(control: Control) -> Client {
        Client {
            control: Mutex::new(control),
            pools: Mutex::default(),
            opening: Mutex::default(),
            unsupported: Mutex::default(),
        }
    }

    /// Sends `req` to `peer` and waits for its answer. A stream that breaks
    /// before answering (a reset on opening, a closed connection) costs
    /// another try on another stream, up to [`TRIES`], each after a longer
    /// pause: puts and gets can be repeated. The pauses matter because
    /// libp2p-stream drops an inbound stream when the provider's accept
    /// loop has not yet taken the one before (a busy machine, several
    /// streams opened at once), and the new stream ends at once.
    pub async fn request(&self, peer: PeerId, req: Request) -> Result<Response, Failed> {
        {
            let mut unsupported = lock(&self.unsupported);
            match unsupported.get(&peer) {
                Some(since) if since.elapsed() < UNSUPPORTED_FOR => return Err(Failed::Unsupported(req)),
                Some(_) => {
                    unsupported.remove(&peer);
                }
                None => {}
            }
        }
        let fail = |cause: String| Failed::Error(NetError::Request { peer, cause });
        let mut conn = match self.conn(peer).await {
            Ok(c) => c,
            Err(None) => return Err(Failed::Unsupported(req)),
            Err(Some(e)) => return Err(Failed::Error(e)),
        };
        let (kind, parts) = req.into_wire();
        let mut last;
        let mut tries = 0;
        loop {
            tries += 1;
            last = match send(&conn, kind, &parts).await {
                Err(why) => why,
                Ok(rx) => match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
                    Ok(Ok(Ok(res))) => return Ok(res),
                    Ok(Ok(Err(why))) => why,
                    Ok(Err(_)) => "the bulk stream went away".into(),
                    Err(_) => return Err(fail(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs()))),
                },
            };
            if tries == TRIES {
                return Err(fail(last));
            }
            tracing::debug!(%peer, tries, cause = %last, "bulk request tried again");
            tokio::time::sleep(RETRY_PAUSE * 4u32.pow(tries - 1)).await;
            conn = match self.conn(peer).await {
                Ok(c) => c,
                Err(_) => return Err(fail(last)),
            };
        }
    }

    /// The least loaded live stream to `peer`, opening one more while the
    /// pool is below [`MAX_STREAMS`] and every stream is busy.
    /// `Err(None)`: the peer does not accept bulk streams.
    async fn conn(&self, peer: PeerId) -> Result<Arc<Conn>, Option<NetError>> {
        if let Some(c) = self.pick(peer, false) {
            return Ok(c);
        }
        let gate = lock(&self.opening).entry(peer).or_default().clone();
        let _one = gate.lock().await;
        if let Some(c) = self.pick(peer, false) {
            return Ok(c);
        }
        let mut control = lock(&self.control).clone();
        match control.open_stream(peer, BULK).await {
            Ok(stream) => {
                let (rd, wr) = stream.split();
                let conn = Arc::new(Conn {
                    writer: tokio::sync::Mutex::new(wr),
                    waiting: Mutex::default(),
                    load: AtomicUsize::new(0),
                    dead: AtomicBool::new(false),
                });
                tokio::spawn(read_answers(conn.clone(), rd, peer));
                let mut pools = lock(&self.pools);
                let pool = pools.entry(peer).or_default();
                pool.conns.retain(|c| !c.dead.load(Ordering::Relaxed));
                pool.conns.push(conn.clone());
                Ok(conn)
            }
            Err(OpenStreamError::UnsupportedProtocol(_)) => {
                tracing::debug!(%peer, "peer does not accept bulk streams: request-response instead");
                lock(&self.unsupported).insert(peer, Instant::now());
                Err(None)
            }
            Err(e) => match self.pick(peer, true) {
                Some(c) => Ok(c),
                None => Err(Some(NetError::Request { peer, cause: e.to_string() })),
            },
        }
    }

    /// A live stream to `peer`: the least loaded one if it is idle, if the
    /// pool is full, or with `any`; else `None` (open another).
    fn pick(&self, peer: PeerId, any: bool) -> Option<Arc<Conn>> {
        let mut pools = lock(&self.pools);
        let pool = pools.get_mut(&peer)?;
        pool.conns.retain(|c| !c.dead.load(Ordering::Relaxed));
        let best = pool.conns.iter().min_by_key(|c| c.load.load(Ordering::Relaxed))?;
        let idle = best.load.load(Ordering::Relaxed) == 0;
        (idle || any || pool.conns.len() >= MAX_STREAMS).then(|| best.clone())
    }
}

/// Writes one request frame and queues for its answer.
async fn send(
    conn: &Arc<Conn>,
    kind: u8,
    parts: &[Vec<u8>],
) -> Result<oneshot::Receiver<Result<Response, String>>, String> {
    let mut wr = conn.writer.lock().await;
    if conn.dead.load(Ordering::Relaxed) {
        return Err("the bulk stream broke".into());
    }
    let (tx, rx) = oneshot::channel();
    // Queued before the frame is written: the answer cannot come first.
    lock(&conn.waiting).push_back(tx);
    conn.load.fetch_add(1, Ordering::Relaxed);
    let midway = Midway(conn);
    let written = frame::write_parts(&mut *wr, WIRE_V1, kind, parts).await;
    // Written (or failed) to the end: nothing to abandon. Holds only a
    // reference, so forgetting it leaks nothing.
    std::mem::forget(midway);
    if let Err(e) = written {
        let why = format!("writing to the bulk stream: {e}");
        conn.fail(&why);
        return Err(why);
    }
    Ok(rx)
}

/// Armed while a frame is being written. A caller that gives up then (its
/// deadline passed) leaves half a frame on the stream, after which the
/// stream cannot be parsed: it is abandoned and closed, and the requests
/// it owed answers are tried again elsewhere.
struct Midway<'a>(&'a Arc<Conn>);

impl Drop for Midway<'_> {
    fn drop(&mut self) {
        self.0.fail("a request was abandoned while its frame was being written");
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let conn = self.0.clone();
            rt.spawn(async move {
                let _ = conn.writer.lock().await.close().await;
            });
        }
    }
}

/// Hands each answer on a stream to the oldest request waiting for one.
async fn read_answers(conn: Arc<Conn>, mut rd: ReadHalf<libp2p::Stream>, peer: PeerId) {
    let why = loop {
        let (kind, body) = match frame::read(&mut rd, WIRE_V1, proto::response_limit).await {
            Ok(f) => f,
            Err(e) => break format!("bulk stream ended: {e}"),
        };
        let res = match Response::decode(kind, body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, cause = %e, "refused a bulk answer: stream closed");
                break format!("garbled answer: {e}");
            }
        };
        let Some(reply) = lock(&conn.waiting).pop_front() else {
            tracing::warn!(%peer, "an answer nobody asked for on a bulk stream: stream closed");
            break "an unasked-for answer".to_string();
        };
        conn.load.fetch_sub(1, Ordering::Relaxed);
        let _ = reply.send(Ok(res));
    };
    tracing::debug!(%peer, %why, "bulk stream closed");
    conn.fail(&why);
    // Closing the write half too tells the provider the stream is done.
    let _ = conn.writer.lock().await.close().await;
}
