use super::*;
use crate::net::proto::Refused;
use crate::promise::PutToken;
use crate::store::Store;

fn token(client: &Signer, provider: NodeKey) -> crate::promise::Signed<PutToken> {
    client.sign(PutToken::new(client.node_key(), provider, 1))
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    crate::test_data::data(n, u64::from(seed))
}

fn put(p: &Provider, client: &Signer, body: Vec<u8>) -> Response {
    let id = ChunkId::of(&body).0;
    p.serve(&client.node_key(), Request::Put(PutChunk { token: token(client, p.me), id, body }))
}

#[test]
fn stores_verifies_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let p =
        Provider::new(Arc::new(Store::open(dir.path(), 0, 0).unwrap()), Signer::from_seed(&[1; 32]), 64 << 20).unwrap();
    let client = Signer::from_seed(&[2; 32]);
    let b = body(300_000, 1);
    let id = ChunkId::of(&b);
    match put(&p, &client, b.clone()) {
        Response::Stored(r) => r.check(&p.me, &client.node_key(), &id.0, b.len() as u32).unwrap(),
        other => panic!("expected a receipt, got {other:?}"),
    }
    // Storing the same chunk again is answered with a receipt and no new bytes.
    assert!(matches!(put(&p, &client, b.clone()), Response::Stored(_)));
    assert_eq!(p.stats().chunks, 1);
    assert_eq!(
        p.serve(&client.node_key(), Request::Get(GetChunk { id: id.0, range: None })),
        Response::Chunk(b.clone())
    );
    assert_eq!(
        p.serve(&client.node_key(), Request::Get(GetChunk { id: id.0, range: Some((10, 5)) })),
        Response::Chunk(b[10..15].to_vec())
    );
    let past = Request::Get(GetChunk { id: id.0, range: Some((b.len() as u64 - 2, 5)) });
    assert!(matches!(p.serve(&client.node_key(), past), Response::Refused(Refused { why: Refusal::BadRequest, .. })));
    let missing = Request::Get(GetChunk { id: [7; 32], range: None });
    assert!(matches!(p.serve(&client.node_key(), missing), Response::Refused(Refused { why: Refusal::NotFound, .. })));
    let has = Request::Has(HasChunks { ids: vec![id.0, [7; 32]] });
    assert_eq!(p.serve(&client.node_key(), has), Response::Has(vec![true, false]));
    // Everything survives a reopen.
    drop(p);
    let p =
        Provider::new(Arc::new(Store::open(dir.path(), 0, 0).unwrap()), Signer::from_seed(&[1; 32]), 64 << 20).unwrap();
    assert_eq!(p.stats().chunks, 1);
    assert_eq!(p.held().unwrap(), vec![id.0]);
    assert_eq!(p.serve(&client.node_key(), Request::Get(GetChunk { id: id.0, range: None })), Response::Chunk(b));
}

#[test]
fn refuses_what_it_must() {
    let dir = tempfile::tempdir().unwrap();
    let p =
        Provider::new(Arc::new(Store::open(dir.path(), 0, 0).unwrap()), Signer::from_seed(&[1; 32]), 200_000).unwrap();
    let client = Signer::from_seed(&[2; 32]);
    let other = Signer::from_seed(&[3; 32]);
    let refusal = |r: Response| match r {
        Response::Refused(r) => r.why,
        other => panic!("expected a refusal, got {other:?}"),
    };
    // A body that does not hash to its id.
    let b = body(1000, 1);
    let req = PutChunk { token: token(&client, p.me), id: [9; 32], body: b.clone() };
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Put(req))), Refusal::BadChunk);
    // A token signed by someone else than the uploading peer.
    let req = PutChunk { token: token(&other, p.me), id: ChunkId::of(&b).0, body: b.clone() };
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Put(req))), Refusal::Unauthorized);
    // A token for another provider.
    let req = PutChunk { token: token(&client, other.node_key()), id: ChunkId::of(&b).0, body: b.clone() };
    assert_eq!(refusal(p.serve(&client.node_key(), Request::Put(req))), Refusal::Unauthorized);
    // Capacity is a hard limit.
    assert!(matches!(put(&p, &client, body(150_000, 2)), Response::Stored(_)));
    assert_eq!(refusal(put(&p, &client, body(150_000, 3))), Refusal::Full);
    assert_eq!(p.stats().chunks, 1);
}
