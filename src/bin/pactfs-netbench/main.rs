//! pactfs-netbench: how fast can bytes cross a libp2p connection, before pactfs
//! adds anything of its own?
//!
//! `raw-serve`/`raw-send` move framed bytes over bare `libp2p_stream` streams
//! (TCP+noise+yamux, or QUIC), the most pactfs's network layer could reach on
//! the same transport; `tcp-serve`/`tcp-send` move the same frames over one
//! plain tokio TCP connection, the ceiling for all of it. `scripts/bench-net`
//! runs them and prints the table.
//!
//! Wire format, on every stream: frames `[u32 BE length][payload]`, ended by
//! the end of the stream (or a zero-length frame); the receiver then answers
//! with the payload byte count as a u64 BE and closes.
//!
//! The baselines use external crates only, not the pactfs library, so they
//! cannot move when pactfs changes; `pactfs-put`/`pactfs-get` (in
//! `pactfs_path`) are the pactfs library's own client against a real
//! `pactfs provider` process.
//!
//! `probe` is no benchmark: the market tests run it against a real provider
//! to see what it answers to replayed, forged and unauthorised requests.

mod pactfs_path;
mod probe;

use std::io::{self, Write as _};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Parser, Subcommand, ValueEnum};
use futures::io::BufReader;
use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, StreamExt as _};
use libp2p::core::upgrade;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Stream, StreamProtocol, Swarm, noise, tcp, yamux};

const RAW_PROTOCOL: StreamProtocol = StreamProtocol::new("/pactfs-bench/raw/1");
/// A frame length above this is refused before allocating: the length comes
/// from the network, and a 4 GiB `vec!` is not something a peer may ask for.
const MAX_FRAME: u64 = 64 << 20;
/// How long a connection without streams stays open (the swarm's default is
/// 10 s): generous, so that a slow start on a loaded machine never loses it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Parser)]
#[command(about = "Throughput baselines for pactfs's network layer")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve /pactfs-bench/raw/1 on a libp2p swarm; prints the listen multiaddr.
    RawServe {
        #[arg(long, value_enum)]
        transport: Transport,
        #[arg(long, default_value_t = 0)]
        listen_port: u16,
    },
    /// Send --total bytes to a raw-serve over --streams concurrent streams;
    /// with several --addr, --total to each of them at once.
    RawSend {
        /// Full multiaddr including /p2p/<peer id>, as raw-serve printed it.
        #[arg(long, required = true)]
        addr: Vec<Multiaddr>,
        #[arg(long, value_parser = parse_size)]
        total: u64,
        #[arg(long, value_parser = parse_size)]
        chunk: u64,
        #[arg(long, default_value_t = 4)]
        streams: u64,
    },
    /// Serve the same frames over plain TCP; prints HOST:PORT.
    TcpServe {
        #[arg(long, default_value_t = 0)]
        listen_port: u16,
    },
    /// Send --total bytes over one plain TCP connection (one libp2p connection
    /// is one TCP connection too, so this is the ceiling for raw-send over tcp).
    TcpSend {
        #[arg(long)]
        addr: String,
        #[arg(long, value_parser = parse_size)]
        total: u64,
        #[arg(long, value_parser = parse_size)]
        chunk: u64,
    },
    /// Put --total bytes as distinct chunks to a `pactfs provider` at --addr.
    PactfsPut(PactfsArgs),
    /// Get back, verifying each, the chunks `pactfs-put` stored with the same seed.
    PactfsGet(PactfsArgs),
    /// Send a `pactfs provider` requests it must refuse (a replayed bid,
    /// uploads without a promise, fetches as someone else) and the ones it
    /// must serve; prints each answer's kind as one JSON object.
    Probe {
        /// The provider's multiaddr, including /p2p/<peer id>.
        #[arg(long)]
        peer: Multiaddr,
        /// The network mode of the probe's client nodes.
        #[arg(long, value_enum, default_value_t = ProbeMode::Market)]
        mode: ProbeMode,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProbeMode {
    Hybrid,
    Market,
}

#[derive(clap::Args)]
struct PactfsArgs {
    #[arg(long)]
    addr: Multiaddr,
    #[arg(long, value_parser = parse_size)]
    total: u64,
    #[arg(long, value_parser = parse_size)]
    chunk: u64,
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// Chunk contents and client identity: the same seed gets back what was put.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Transport {
    Tcp,
    Quic,
}

/// "1048576", "64KiB", "1MiB", "1GiB" (a space before the suffix is allowed).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = [("KiB", 1u64 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)]
        .iter()
        .find_map(|&(suf, m)| s.strip_suffix(suf).map(|d| (d.trim_end(), m)))
        .unwrap_or((s, 1));
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {s:?} (integer, or with KiB/MiB/GiB)"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size too large: {s:?}"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // Both ends get the multi-threaded runtime, as a pactfs node has.
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::RawServe { transport, listen_port } => raw_serve(transport, listen_port).await,
            Cmd::RawSend { addr, total, chunk, streams } => raw_send(addr, total, chunk, streams).await,
            Cmd::TcpServe { listen_port } => tcp_serve(listen_port).await,
            Cmd::TcpSend { addr, total, chunk } => tcp_send(&addr, total, chunk).await,
            Cmd::PactfsPut(a) => pactfs_path::put(a.addr, a.total, a.chunk, a.streams, a.seed).await,
            Cmd::PactfsGet(a) => pactfs_path::get(a.addr, a.total, a.chunk, a.streams, a.seed).await,
            Cmd::Probe { peer, mode } => {
                let mode = match mode {
                    ProbeMode::Hybrid => pactfs::net::Mode::Hybrid,
                    ProbeMode::Market => pactfs::net::Mode::Market,
                };
                probe::probe(peer, mode).await
            }
        }
    })
}

// --- libp2p ------------------------------------------------------------------

/// TCP+noise+yamux and QUIC, as pactfs's node uses them, with only the stream
/// behaviour: nothing else (identify, kad, ping) competes for the connection.
fn new_swarm() -> Result<Swarm<libp2p_stream::Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .context("building the TCP transport")?
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .context("building the behaviour")?
        // Multistream-select V1, not the default V1Lazy, for open_accepted:
        // open_stream then returns once the server has negotiated the stream.
        // One round trip per stream opened; data is not affected.
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(IDLE_TIMEOUT).with_substream_upgrade_protocol_override(upgrade::Version::V1)
        })
        .build())
}

async fn raw_serve(transport: Transport, port: u16) -> Result<()> {
    let mut swarm = new_swarm()?;
    let shutdown = shutdown_signal()?;
    let listen: Multiaddr = match transport {
        Transport::Tcp => format!("/ip4/127.0.0.1/tcp/{port}"),
        Transport::Quic => format!("/ip4/127.0.0.1/udp/{port}/quic-v1"),
    }
    .parse()
    .context("building the listen address")?;
    swarm.listen_on(listen.clone()).with_context(|| format!("listening on {listen}"))?;

    let mut incoming = swarm.behaviour().new_control().accept(RAW_PROTOCOL).context("registering the protocol")?;
    // The incoming queue is small and streams are dropped when it is full, so
    // this loop only hands each stream to its own task.
    tokio::spawn(async move {
        while let Some((peer, stream)) = incoming.next().await {
            tokio::spawn(async move {
                if let Err(e) = receive(BufReader::with_capacity(64 << 10, stream)).await {
                    eprintln!("raw-serve: stream from {peer}: {e:#}");
                }
            });
        }
    });

    let local = *swarm.local_peer_id();
    let mut printed = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } if !printed => {
                    let full = address.with_p2p(local).map_err(|a| anyhow::anyhow!("cannot add /p2p to {a}"))?;
                    announce(&full.to_string())?;
                    printed = true;
                }
                SwarmEvent::ListenerError { error, .. } => eprintln!("raw-serve: listener error: {error}"),
                SwarmEvent::ListenerClosed { reason, .. } => bail!("listener closed: {reason:?}"),
                _ => {}
            },
        }
    }
}

async fn raw_send(addrs: Vec<Multiaddr>, total: u64, chunk: u64, streams: u64) -> Result<()> {
    ensure!(streams > 0, "--streams must be at least 1");
    let mut peers = Vec::with_capacity(addrs.len());
    for addr in &addrs {
        match addr.iter().last() {
            Some(Protocol::P2p(p)) => peers.push(p),
            _ => bail!("--addr {addr} does not end in /p2p/<peer id>"),
        }
    }
    let transport = if addrs.iter().any(|a| a.iter().any(|p| matches!(p, Protocol::QuicV1))) { "quic" } else { "tcp" };
    let bodies = std::sync::Arc::new(bodies(BASELINE_SEED, total, chunk)?);

    let mut swarm = new_swarm()?;
    for addr in &addrs {
        swarm.dial(addr.clone()).with_context(|| format!("dialling {addr}"))?;
    }
    // Connection setup (handshakes) is not part of the measurement: wait for it.
    let connected = async {
        let mut waiting: std::collections::HashSet<PeerId> = peers.iter().copied().collect();
        while !waiting.is_empty() {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                    waiting.remove(&peer_id);
                }
                SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                    bail!("dialling {peer_id:?}: {error}")
                }
                _ => {}
            }
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), connected)
        .await
        .with_context(|| format!("no connection to every one of {addrs:?} within 30 s"))??;
    let mut control = swarm.behaviour().new_control();
    // The swarm must keep being polled for the connection to make progress.
    // (The process exits right after the transfer: no clean close, which
    // libp2p would report to the server as a closed-with-error connection anyway.)
    let driver = tokio::spawn(async move {
        loop {
            if let SwarmEvent::ConnectionClosed { cause: Some(e), .. } = swarm.select_next_some().await {
                eprintln!("raw-send: connection closed: {e}");
            }
        }
    });

    let cpu0 = cpu_seconds()?;
    let t0 = Instant::now();
    // All streams are opened before any is loaded, so that the probes (see
    // open_accepted) do not queue behind data.
    let mut opened = Vec::new();
    let mut dropped = 0;
    for &peer in &peers {
        for share in split(bodies.len(), streams as usize) {
            opened.push((open_accepted(&mut control, peer, &mut dropped).await?, share));
        }
    }
    let tasks: Vec<_> = opened
        .into_iter()
        .map(|(stream, share)| {
            let bodies = bodies.clone();
            tokio::spawn(async move { send(stream, &bodies[share]).await })
        })
        .collect();
    let mut bytes = 0;
    for t in tasks {
        bytes += t.await.context("a sender task failed")??;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu0;
    driver.abort();
    if dropped > 0 {
        eprintln!("raw-send: the server dropped {dropped} probe stream(s) (libp2p_stream's accept channel was full)");
    }
    report("raw", transport, bytes, seconds, cpu)
}

/// Opens a stream that the server is sure to take. libp2p_stream hands inbound
/// streams to the acceptor through a channel of capacity one and resets a
/// stream that arrives while the previous one is still in it: opened back to
/// back, one run in three lost a data stream on this 2-core machine. So an
/// empty probe stream goes first, retried until acknowledged: its ack proves
/// that the acceptor has emptied the channel. The data stream opened next is
/// then delivered into an empty channel, and with V1 (see new_swarm) it has
/// been handed over before open_stream returns, so before the next probe can
/// arrive. Only probes are ever retried; `dropped` counts the lost ones.
async fn open_accepted(control: &mut libp2p_stream::Control, peer: PeerId, dropped: &mut u32) -> Result<Stream> {
    for _ in 0..1000 {
        let probe = control.open_stream(peer, RAW_PROTOCOL).await.context("opening a probe stream")?;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), send(probe, &[])).await {
            return control.open_stream(peer, RAW_PROTOCOL).await.context("opening a stream");
        }
        *dropped += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("the server took none of 1000 probe streams")
}

// --- plain TCP ---------------------------------------------------------------

async fn tcp_serve(port: u16) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.context("binding 127.0.0.1")?;
    let shutdown = shutdown_signal()?;
    announce(&listener.local_addr().context("reading the listen address")?.to_string())?;
    let accept = async {
        loop {
            let (sock, peer) = listener.accept().await.context("accepting")?;
            sock.set_nodelay(true).context("setting TCP_NODELAY")?;
            tokio::spawn(async move {
                // libp2p's own tokio adapter, so this speaks futures::io like a libp2p stream.
                let sock = tcp::tokio::TcpStream(sock);
                if let Err(e) = receive(BufReader::with_capacity(64 << 10, sock)).await {
                    eprintln!("tcp-serve: connection from {peer}: {e:#}");
                }
            });
        }
    };
    tokio::select! {
        () = shutdown => Ok(()),
        r = accept => r,
    }
}

async fn tcp_send(addr: &str, total: u64, chunk: u64) -> Result<()> {
    let bodies = bodies(BASELINE_SEED, total, chunk)?;
    let sock = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    sock.set_nodelay(true).context("setting TCP_NODELAY")?;
    let cpu0 = cpu_seconds()?;
    let t0 = Instant::now();
    let bytes = send(tcp::tokio::TcpStream(sock), &bodies).await?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds()? - cpu0;
    report("tcp", "plain", bytes, seconds, cpu)
}

// --- frames ------------------------------------------------------------------

/// Reads frames until the end of the stream or a zero-length frame, each into
/// a freshly allocated buffer as a real receiver would; then acks the count.
async fn receive<S: AsyncRead + AsyncWrite + Unpin>(mut s: BufReader<S>) -> Result<()> {
    let mut received: u64 = 0;
    loop {
        let mut hdr = [0u8; 4];
        if !read_header(&mut s, &mut hdr).await? {
            break;
        }
        let len = u64::from(u32::from_be_bytes(hdr));
        if len == 0 {
            break;
        }
        ensure!(len <= MAX_FRAME, "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit");
        let mut buf = vec![0u8; len as usize];
        s.read_exact(&mut buf).await.with_context(|| format!("reading a {len}-byte frame after {received} bytes"))?;
        received += len;
    }
    let mut s = s.into_inner();
    s.write_all(&received.to_be_bytes()).await.context("writing the ack")?;
    s.close().await.context("closing after the ack")?;
    Ok(())
}

/// Fills `hdr`; false on a clean end of stream before its first byte.
async fn read_header<R: AsyncRead + Unpin>(r: &mut R, hdr: &mut [u8; 4]) -> Result<bool> {
    let mut got = 0;
    while got < hdr.len() {
        match r.read(&mut hdr[got..]).await.context("reading a frame header")? {
            0 if got == 0 => return Ok(false),
            0 => bail!("stream ended inside a frame header"),
            n => got += n,
        }
    }
    Ok(true)
}

/// Sends each body as one frame, half-closes, and checks the receiver's
/// count. Returns the bytes sent.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bodies: &[Vec<u8>]) -> Result<u64> {
    let mut sent = 0;
    for body in bodies {
        // Header and payload go in separate writes: both transports buffer or
        // coalesce small writes, and copying 1 MiB to prepend 4 bytes would not be fair.
        s.write_all(&(body.len() as u32).to_be_bytes()).await.context("writing a frame header")?;
        s.write_all(body).await.with_context(|| format!("writing a frame, {sent} bytes in"))?;
        sent += body.len() as u64;
    }
    s.flush().await.context("flushing")?;
    // Half-close: the receiver reads to the end, then answers on the other half.
    s.close().await.context("closing the sending side")?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).await.context("reading the ack")?;
    let acked = u64::from_be_bytes(ack);
    ensure!(acked == sent, "receiver counted {acked} bytes, sent {sent}");
    Ok(sent)
}

/// The chunk bodies every sender carries: `total / chunk` (at least one)
/// distinct buffers of `chunk` bytes (xorshift bytes, the first 16 the
/// chunk's number and the seed), the same for the same seed. The baselines
/// send exactly the bytes `pactfs-put` does with its default seed, and from
/// memory as it does, not one buffer kept hot in the CPU cache.
pub(crate) fn bodies(seed: u64, total: u64, chunk: u64) -> Result<Vec<Vec<u8>>> {
    ensure!(total > 0, "--total must be positive");
    ensure!((1..=MAX_FRAME).contains(&chunk), "--chunk must be between 1 and {MAX_FRAME} bytes");
    let size = chunk.min(total) as usize;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let base: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Ok((0..(total / chunk).max(1))
        .map(|i| {
            let mut b = base.clone();
            let n = b.len().min(16);
            b[..n].copy_from_slice(&[i.to_le_bytes(), seed.to_le_bytes()].concat()[..n]);
            b
        })
        .collect())
}

/// The seed of the baselines' bodies: `pactfs-put`'s default.
const BASELINE_SEED: u64 = 1;

/// `count` items split over `n` streams as index ranges, the remainder
/// spread over the first ones; streams with nothing to send are left out.
fn split(count: usize, n: usize) -> Vec<std::ops::Range<usize>> {
    let mut start = 0;
    (0..n)
        .map(|i| {
            let len = count / n + usize::from(i < count % n);
            start += len;
            start - len..start
        })
        .filter(|r| !r.is_empty())
        .collect()
}

// --- process plumbing --------------------------------------------------------

/// User + system CPU time of this whole process (all runtime threads).
fn cpu_seconds() -> Result<f64> {
    // SAFETY: getrusage only writes into the zeroed struct we pass it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Err(io::Error::last_os_error()).context("getrusage");
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// One line on stdout, flushed: the script waits for it to learn where to dial.
fn announce(line: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).context("writing to stdout")
}

fn report(mode: &str, transport: &str, bytes: u64, seconds: f64, cpu_s: f64) -> Result<()> {
    let mib_s = bytes as f64 / (1u64 << 20) as f64 / seconds;
    // Written by hand rather than with json!, whose map would sort the keys:
    // this order reads better in a log. mode and transport are fixed words.
    announce(&format!(
        r#"{{"mode":"{mode}","transport":"{transport}","bytes":{bytes},"seconds":{seconds:.4},"mib_s":{mib_s:.1},"cpu_s":{cpu_s:.3}}}"#
    ))
}

/// Installs the SIGTERM and SIGINT handlers now (before the listen line goes
/// out, so a kill from the script never meets the default action) and returns
/// a future that resolves on either: servers then exit 0.
fn shutdown_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
