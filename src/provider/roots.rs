//! Clients' signed roots, kept so that a client restoring on a new machine
//! can find its snapshot (market mode has no DHT to hold them).
//!
//! A root is kept only when it is the sender's own (signed by the client
//! it names, and that client is the peer sending it), the sender has a
//! live storage promise here (only clients pay for the room), and it is
//! newer than the one held. Anyone may ask for a client's root: it is
//! public, its part keys sealed under the client's secret.

use super::{Provider, internal};
use crate::net::{Refusal, Response};
use crate::promise::{NodeKey, PromiseKind, decode_root, unix_now};

const ROOT_PREFIX: &[u8] = b"root/";

fn root_key(client: &NodeKey) -> Vec<u8> {
    [ROOT_PREFIX, &client.0].concat()
}

impl Provider {
    pub(super) fn put_root(&self, from: &NodeKey, bytes: Vec<u8>) -> Response {
        let root = match decode_root(&bytes, Some(from)) {
            Ok(r) => r,
            Err(e) => return Response::refused(Refusal::Unauthorized, format!("root refused: {e}")),
        };
        let now = unix_now();
        let client = self.book().sold.values().any(|s| {
            let t = &s.record.promise.terms;
            t.client == *from && t.kind == PromiseKind::Storage && now <= t.expiry
        });
        if !client {
            return Response::refused(Refusal::Unauthorized, "roots are kept only for clients with a live promise");
        }
        // One writer at a time, so that a root never replaces a newer one.
        let _one = crate::lock(&self.cheques);
        let held = match self.store.market_get(&root_key(from)) {
            Ok(v) => v,
            Err(e) => return internal(e),
        };
        if let Some(old) = held.as_deref().and_then(|b| decode_root(b, Some(from)).ok())
            && old.body.seq >= root.body.seq
        {
            return Response::Root(held);
        }
        if let Err(e) = self.store.market_put(&root_key(from), &bytes, true) {
            return internal(e);
        }
        tracing::debug!(client = ?from, seq = root.body.seq, "client root kept");
        Response::Root(Some(bytes))
    }

    pub(super) fn get_root(&self, client: &NodeKey) -> Response {
        match self.store.market_get(&root_key(client)) {
            Ok(v) => Response::Root(v),
            Err(e) => internal(e),
        }
    }
}
