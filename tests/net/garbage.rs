//! Garbage: raw bytes thrown at a provider's TCP and QUIC ports, and a TCP
//! connection that never says anything, must not take it down: it still
//! runs, still answers `node info`, still serves its replicas, and new data
//! written through the client still gets placed and scrubs clean.

use crate::cluster::*;
use crate::common::*;
use crate::node::*;
use std::io::Write;
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::time::Duration;

/// Writes `bytes` on a fresh TCP connection, then closes it. The provider may
/// drop the connection at the first bad byte: a failed write ends the attempt.
fn send_tcp(port: u16, bytes: &[u8]) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("connect to tcp/{port}: {e}"));
    // Bounds only this sender (a provider that stops reading must not stall
    // the test); nothing is asserted about how long anything takes.
    conn.set_write_timeout(Some(Duration::from_secs(30))).expect("set write timeout");
    for piece in bytes.chunks(64 * KIB) {
        if conn.write_all(piece).is_err() {
            break;
        }
    }
    let _ = conn.shutdown(Shutdown::Both);
}

/// 100 datagrams of garbage to a QUIC port: every other one shaped like a
/// QUIC v1 Initial (long header, version 1, an 8-byte connection id) so the
/// server gets as far as trying to decrypt it.
fn send_udp(port: u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
    for n in 0..100u64 {
        let mut datagram = test_data(1000 + n, 1 + (n as usize * 37) % 1400);
        if n % 2 == 0 {
            datagram.resize(1200, 0);
            let length = (1200 - 18) as u16 | 0x4000;
            datagram[..5].copy_from_slice(&[0xc3, 0, 0, 0, 1]);
            datagram[5] = 8; // destination connection id length; the id is garbage
            datagram[14] = 0; // source connection id length
            datagram[15] = 0; // token length
            datagram[16..18].copy_from_slice(&length.to_be_bytes());
        }
        socket.send_to(&datagram, ("127.0.0.1", port)).unwrap_or_else(|e| panic!("send to udp/{port}: {e}"));
    }
}

fn garbage(mode: Mode) {
    let mut c = Cluster::start(mode);
    let before = write_files(&c.client, &[("before", 11, 2 * MIB)]);
    let chunks = num(&c.wait_placed(), "chunks");
    let counts = c.provider_chunks(REPLICATION * chunks);
    // The provider holding the most replicas: the clean scrub at the end
    // proves it still serves them.
    let victim = (0..PROVIDERS).max_by_key(|&i| counts[i]).unwrap();
    let (name, peer_id) = (c.providers[victim].name.clone(), c.providers[victim].peer_id.clone());
    let tcp_port = port_of(&c.providers[victim].tcp, "tcp");
    let udp_port = port_of(&c.providers[victim].quic, "udp");
    let pid = c.providers[victim].pid();

    // Held open, silent, until the end of the test.
    let silent = TcpStream::connect(("127.0.0.1", tcp_port)).unwrap_or_else(|e| panic!("connect to {name}: {e}"));
    send_tcp(tcp_port, &test_data(21, 300));
    let mut big = test_data(22, 300);
    big.extend(test_data(23, MIB));
    send_tcp(tcp_port, &big);
    // A correct multistream-select header proposing noise, then garbage
    // where the noise handshake should be.
    let mut handshake = b"\x13/multistream/1.0.0\n\x07/noise\n".to_vec();
    handshake.extend(test_data(24, 64 * KIB));
    send_tcp(tcp_port, &handshake);
    send_udp(udp_port);

    let provider = &mut c.providers[victim];
    assert!(provider.is_running(), "{name} died from garbage on its ports");
    let info = provider.info();
    assert_eq!(text(&info, "peer_id"), peer_id, "{name} still answers node info as itself: {info}");
    assert_eq!(provider.pid(), pid, "{name} is the same process");

    let after = write_files(&c.client, &[("after", 12, 5 * MIB)]);
    let chunks = num(&c.wait_placed(), "chunks");
    c.provider_chunks(REPLICATION * chunks);
    c.assert_scrub_clean(chunks);
    assert!(c.providers[victim].is_running(), "{name} died after the garbage");
    assert_files(&before);
    assert_files(&after);
    drop(silent);
    c.shutdown();
}

#[test]
fn garbage_hybrid() {
    garbage(Mode::Hybrid);
}

#[test]
fn garbage_market() {
    garbage(Mode::Market);
}
