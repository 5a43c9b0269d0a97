//! Snapshot round trip through real stores and a drive; root signing.

use super::*;
use crate::chunk::ChunkSizes;
use crate::fs::{Caller, Drive, Remote};
use crate::promise::Signer;
use crate::store::ROOT_INO;
use crate::test_data::data;
use std::sync::Arc;

const ME: Caller = Caller { uid: 0, gid: 0, pid: 0 };

/// Serves chunk bodies from another store: the "providers" of the test.
struct From(Arc<Store>);

impl Remote for From {
    fn fetch(&self, id: &ChunkId) -> Result<crate::chunk::Verified, String> {
        let body = self.0.chunk_body(id).map_err(|e| e.to_string())?;
        crate::chunk::Verified::check(*id, body).map_err(|_| "a body that does not hash to its id".to_owned())
    }
}

fn drive(store: Arc<Store>) -> Drive {
    Drive::new(store, UserSecret::from_bytes([5; 32]), ChunkSizes { min: 256, avg: 1024, max: 4096 }, 1 << 40)
}

fn read_file(d: &Drive, parent: u64, name: &[u8]) -> Vec<u8> {
    let ino = d.lookup(parent, name).unwrap();
    let fh = d.open(ino.ino).unwrap();
    let mut out = Vec::new();
    while (out.len() as u64) < ino.size {
        let got = d.read(fh, out.len() as u64, 1 << 20).unwrap().as_slice().to_vec();
        assert!(!got.is_empty());
        out.extend_from_slice(&got);
    }
    d.release(fh).unwrap();
    out
}

#[test]
fn a_snapshot_rebuilds_the_tree_with_every_chunk_remote() {
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Arc::new(Store::open(da.path(), 0, 0).unwrap());
    let drive_a = drive(a.clone());
    let dir = drive_a.mkdir(ME, ROOT_INO, b"docs", 0o750).unwrap();
    let files: Vec<(u64, &[u8], Vec<u8>)> =
        vec![(ROOT_INO, b"small", data(100, 1)), (dir.ino, b"big", data(300_000, 2)), (dir.ino, b"empty", Vec::new())];
    for (parent, name, bytes) in &files {
        let (_, fh) = drive_a.create(ME, *parent, name, 0o640).unwrap();
        drive_a.write(fh, 0, bytes).unwrap();
        drive_a.release(fh).unwrap();
    }
    drive_a.symlink(ME, dir.ino, b"link", b"../small").unwrap();
    drive_a.setxattr(dir.ino, b"user.tag", b"kept", 0).unwrap();
    drive_a.sync_all().unwrap();

    let secret = UserSecret::from_bytes([5; 32]);
    let parts = take(&a, &secret).unwrap();
    assert_eq!(parts.len(), 1);
    let again = take(&a, &secret).unwrap();
    assert_eq!(again[0].part, parts[0].part, "an unchanged store seals to the same blobs");

    let b = Arc::new(Store::open(db.path(), 0, 0).unwrap());
    let refs: Vec<PartRef> = parts.iter().map(|p| p.part.clone()).collect();
    let mut tampered = parts[0].sealed.clone();
    tampered[10] ^= 1;
    assert!(matches!(load(&b, &refs, vec![tampered]), Err(SnapshotError::BadPart { .. })));
    let loaded = load(&b, &refs, parts.into_iter().map(|p| p.sealed).collect()).unwrap();
    assert!(loaded > 10);
    assert!(b.stats().unwrap().chunks > 0);
    for (id, rec) in b.chunks_all() {
        assert!(!rec.is_local(), "chunk {id} restored without its body");
    }
    assert!(b.load_snapshot(Vec::new()).is_err(), "a snapshot loads only into a fresh store");

    let drive_b = drive(b.clone());
    drive_b.set_remote(Arc::new(From(a.clone())));
    for (parent, name, bytes) in &files {
        assert_eq!(&read_file(&drive_b, *parent, name), bytes, "{}", String::from_utf8_lossy(name));
    }
    let link = drive_b.lookup(dir.ino, b"link").unwrap();
    assert_eq!(drive_b.readlink(link.ino).unwrap(), b"../small");
    assert_eq!(drive_b.getxattr(dir.ino, b"user.tag").unwrap(), b"kept");
    assert_eq!(drive_b.getattr(dir.ino).unwrap().perm, 0o750);
    // A new file after the restore gets a fresh inode number.
    let (fresh, fh) = drive_b.create(ME, ROOT_INO, b"new", 0o600).unwrap();
    drive_b.release(fh).unwrap();
    assert!(fresh.ino > files.len() as u64 + 3);
}

#[test]
fn a_big_tree_is_cut_into_chunk_sized_parts() {
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(d.path(), 0, 0).unwrap());
    let drive = drive(store.clone());
    // 60 dirs x 100 xattrs of 1 KiB: about 6 MiB of metadata.
    for i in 0..60u32 {
        let dir = drive.mkdir(ME, ROOT_INO, format!("d{i}").as_bytes(), 0o755).unwrap();
        for j in 0..100u32 {
            drive.setxattr(dir.ino, format!("user.x{j}").as_bytes(), &data(1024, u64::from(i * 1000 + j)), 0).unwrap();
        }
    }
    let secret = UserSecret::from_bytes([5; 32]);
    let parts = take(&store, &secret).unwrap();
    assert!(parts.len() >= 2, "{} parts", parts.len());
    for p in &parts {
        assert!(p.part.len as usize <= MAX_PART_BYTES);
    }
    let other = tempfile::tempdir().unwrap();
    let b = Store::open(other.path(), 0, 0).unwrap();
    let refs: Vec<PartRef> = parts.iter().map(|p| p.part.clone()).collect();
    // Parts out of order are refused.
    let mut swapped: Vec<Vec<u8>> = parts.iter().map(|p| p.sealed.clone()).collect();
    swapped.swap(0, 1);
    let mut swapped_refs = refs.clone();
    swapped_refs.swap(0, 1);
    assert!(load(&b, &swapped_refs, swapped).is_err());
    load(&b, &refs, parts.into_iter().map(|p| p.sealed).collect()).unwrap();
    let d7 = b.lookup(ROOT_INO, b"d7").unwrap().unwrap();
    assert_eq!(b.xattr_names(d7.ino).unwrap().len(), 100);
}

#[test]
fn a_root_verifies_only_for_its_client_and_opens_only_with_its_secret() {
    let signer = Signer::from_seed(&[1; 32]);
    let secret = UserSecret::from_bytes([2; 32]);
    let parts = vec![
        PartRef { id: [3; 32], key: [4; 32], len: 5, holders: vec![NodeKey([1; 32])] },
        PartRef { id: [6; 32], key: [7; 32], len: 8, holders: Vec::new() },
    ];
    let ledger: Vec<[u8; 32]> = (0..100u8).map(|i| [i; 32]).collect();
    let root = make_root(&signer, &secret, 7, [9; 16], &parts, &ledger).unwrap();
    assert_eq!(root.body.ledger.len(), MAX_ROOT_LEDGER);
    assert_eq!(root.body.ledger.last(), Some(&[99; 32]));
    let bytes = promise::encode_root(&root);
    assert!(bytes.len() < MAX_ROOT_BYTES);
    let me = signer.node_key();
    let back = decode_root(&bytes, &me).unwrap();
    assert_eq!(root_parts(&back.body, &secret).unwrap(), parts);
    assert!(matches!(root_parts(&back.body, &UserSecret::from_bytes([0; 32])), Err(SnapshotError::WrongSecret)));
    assert!(!String::from_utf8_lossy(&bytes).contains("\u{4}\u{4}\u{4}\u{4}"), "part keys are not in the clear");

    // Another node's root, or a changed one, is refused.
    let other = Signer::from_seed(&[8; 32]);
    assert!(matches!(decode_root(&bytes, &other.node_key()), Err(SnapshotError::Root(RootError::WrongClient))));
    let mut forged = root.clone();
    forged.body.seq = 99;
    assert!(decode_root(&promise::encode_root(&forged), &me).is_err());
    let theirs = make_root(&other, &secret, 100, [9; 16], &parts, &[]).unwrap();
    let mut stolen = theirs.clone();
    stolen.body.client = me;
    assert!(decode_root(&promise::encode_root(&stolen), &me).is_err());

    // The newest verified root wins; garbage and forgeries are ignored.
    let older = promise::encode_root(&make_root(&signer, &secret, 3, [1; 16], &parts, &[]).unwrap());
    let forged = promise::encode_root(&forged);
    let cands: Vec<&[u8]> = vec![&older, b"junk", &forged, &bytes];
    assert_eq!(newest(cands, &me).unwrap().body.seq, 7);
    assert_ne!(promise::root_dht_key(&me), promise::root_dht_key(&other.node_key()));
}
