//! The object store view against a real nats-server.

#![allow(clippy::unwrap_used)] // test helpers panic on failure by design

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use kvtk_core::object::{ObjectInfo, ObjectMeta, ObjectStoreConfig, ObjectWatch};
use kvtk_core::{ErrorKind, Kv};
use kvtk_tests::{within, NatsServer};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// Bytes that differ from chunk to chunk (xorshift), so a chunk out of order would show.
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("SHA-256={}", URL_SAFE.encode(Sha256::digest(bytes)))
}

async fn next(watch: &mut ObjectWatch) -> ObjectInfo {
    kvtk_tests::next("a watch event", watch)
        .await
        .expect("watch item ok")
}

#[tokio::test]
async fn a_multi_chunk_object_round_trips_byte_exact_with_its_digest() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    let store = kv
        .create_object_store(ObjectStoreConfig::new("blobs"))
        .await
        .unwrap();
    let chunk = 64 * 1024;
    let bytes = data(5 * chunk + 123);

    let meta = ObjectMeta::new("dir/big.bin")
        .description("six chunks")
        .metadata("kind", "test")
        .chunk_size(chunk);
    let put = store.put(meta, &mut bytes.as_slice()).await.unwrap();
    assert_eq!(put.size(), bytes.len() as u64);
    assert_eq!(put.chunks(), 6);
    assert_eq!(put.chunk_size(), Some(chunk));
    assert_eq!(put.digest(), Some(sha256_digest(&bytes).as_str()));

    let info = store.info("dir/big.bin").await.unwrap();
    assert_eq!(info, put);
    assert_eq!(info.description(), Some("six chunks"));
    assert_eq!(
        info.metadata().get("kind").map(String::as_str),
        Some("test")
    );
    assert!(info.modified().is_some());
    assert!(!info.is_deleted() && info.link().is_none());

    // Streamed in small reads, then all at once, both byte-exact.
    let mut reader = store.get("dir/big.bin").await.unwrap();
    assert_eq!(reader.info(), put);
    let mut streamed = Vec::new();
    let mut buf = [0u8; 1000];
    loop {
        let n = within("read", reader.read(&mut buf)).await.unwrap();
        if n == 0 {
            break;
        }
        streamed.extend_from_slice(&buf[..n]);
    }
    assert!(streamed == bytes, "streamed read differs");
    let whole = within("get_bytes", store.get_bytes("dir/big.bin"))
        .await
        .unwrap();
    assert!(whole == bytes, "get_bytes differs");

    // Another handle on another connection reads the same object.
    let other = Kv::new(server.connect().await)
        .open_object_store("blobs")
        .await
        .unwrap();
    let again = within("get_bytes", other.get_bytes("dir/big.bin"))
        .await
        .unwrap();
    assert_eq!(sha256_digest(&again), sha256_digest(&bytes));
}

#[tokio::test]
async fn a_digest_mismatch_fails_the_read_as_a_codec_error() {
    let server = NatsServer::start().await;
    let client = server.connect().await;
    let store = Kv::new(client.clone())
        .create_object_store(ObjectStoreConfig::new("tamper"))
        .await
        .unwrap();
    let bytes = data(3 * 1024);
    store
        .put(ObjectMeta::new("o").chunk_size(1024), &mut bytes.as_slice())
        .await
        .unwrap();

    // Rewrite the metadata as another writer could, with the digest of other data.
    let js = async_nats::jetstream::new(client);
    let mut info = js
        .get_object_store("tamper")
        .await
        .unwrap()
        .info("o")
        .await
        .unwrap();
    info.digest = Some(sha256_digest(b"something else"));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Rollup", "sub");
    js.publish_with_headers(
        format!("$O.tamper.M.{}", URL_SAFE.encode("o")),
        headers,
        serde_json::to_vec(&info).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let err = within("get_bytes", store.get_bytes("o")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec, "{err}");
    assert_eq!(err.operation(), kvtk_core::Operation::Object);
    assert_eq!(err.key(), Some("o"));
    kvtk_tests::assert_one_layer_each(&err);

    // Streamed, the read that brings the last chunk fails and delivers none of it; the
    // reader stays failed.
    let mut reader = store.get("o").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut delivered = 0;
    let failure = loop {
        match within("read", reader.read(&mut buf)).await {
            Ok(0) => panic!("the read ended without reporting the mismatch"),
            Ok(n) => delivered += n,
            Err(e) => break e,
        }
    };
    assert_eq!(failure.kind(), std::io::ErrorKind::InvalidData);
    assert_eq!(delivered, 2 * 1024);
    let again = within("read", reader.read(&mut buf)).await.unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn replacing_an_object_removes_the_old_chunks() {
    let server = NatsServer::start().await;
    let client = server.connect().await;
    let kv = Kv::new(client.clone());
    let store = kv
        .create_object_store(ObjectStoreConfig::new("replace"))
        .await
        .unwrap();
    let first = data(3 * 1024);
    let second = b"short".to_vec();
    let v1 = store
        .put(ObjectMeta::new("o").chunk_size(1024), &mut first.as_slice())
        .await
        .unwrap();
    assert_eq!(v1.chunks(), 3);
    let v2 = store.put_bytes("o", &second).await.unwrap();
    assert_eq!((v2.chunks(), v2.size()), (1, 5));
    assert_eq!(store.get_bytes("o").await.unwrap(), second);

    // One chunk and one metadata message remain: the first version's chunks were purged.
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("OBJ_replace")
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 2);
}

#[tokio::test]
async fn list_watch_links_and_delete() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);
    let store = kv
        .create_object_store(ObjectStoreConfig::new("docs"))
        .await
        .unwrap();
    assert!(store.list().await.unwrap().is_empty());
    let mut watch = store.watch().await.unwrap();

    let a = store.put_bytes("a", data(10)).await.unwrap();
    store.put_bytes("b", b"bee").await.unwrap();
    let link = store.link("latest", &a).await.unwrap();
    let target = link.link().unwrap();
    assert_eq!((target.store, target.object), ("docs", Some("a")));
    store.link_store("all-blobs", "blobs").await.unwrap();

    let seen: Vec<String> = [
        next(&mut watch).await,
        next(&mut watch).await,
        next(&mut watch).await,
        next(&mut watch).await,
    ]
    .iter()
    .map(|i| i.name().to_string())
    .collect();
    assert_eq!(seen, ["a", "b", "latest", "all-blobs"]);

    let names: Vec<String> = store
        .list()
        .await
        .unwrap()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    assert_eq!(names, ["a", "all-blobs", "b", "latest"]);

    // A link reads its target; a link to a whole store has no data of its own.
    assert_eq!(store.get_bytes("latest").await.unwrap(), data(10));
    let err = store.get("all-blobs").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // A link may not replace an object nor point to a link.
    let err = store.link("b", &a).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);
    let err = store.link("chain", &link).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    store.delete("a").await.unwrap();
    let deleted = next(&mut watch).await;
    assert_eq!((deleted.name(), deleted.is_deleted()), ("a", true));
    let missing = store.info("a").await.unwrap_err();
    kvtk_tests::assert_one_layer_each(&missing);
    for err in [
        missing,
        store.get("a").await.unwrap_err(),
        store.get("latest").await.unwrap_err(),
        store.delete("a").await.unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    }
    assert_eq!(store.list().await.unwrap().len(), 3);

    // watch_all starts with the latest metadata of every object, the deletion included.
    let mut all = store.watch_all().await.unwrap();
    let mut state = BTreeSet::new();
    for _ in 0..4 {
        let i = next(&mut all).await;
        state.insert((i.name().to_string(), i.is_deleted()));
    }
    let expected: BTreeSet<(String, bool)> = [
        ("a", true),
        ("all-blobs", false),
        ("b", false),
        ("latest", false),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_string(), d))
    .collect();
    assert_eq!(state, expected);
}

#[tokio::test]
async fn stores_are_created_opened_and_deleted_with_kv_core_error_kinds() {
    let server = NatsServer::start().await;
    let kv = Kv::new(server.connect().await);

    let err = kv.open_object_store("nope").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BucketNotFound);
    let err = kv.open_object_store("bad name").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    let cfg = ObjectStoreConfig::new("small").max_bytes(64 * 1024);
    let store = kv.create_object_store(cfg.clone()).await.unwrap();
    assert_eq!(store.name(), "small");
    kv.create_object_store(cfg.clone()).await.unwrap();
    let err = kv
        .create_object_store(cfg.clone().max_bytes(128 * 1024))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BucketExists);
    kv.create_or_open_object_store(ObjectStoreConfig::new("small"))
        .await
        .unwrap();

    let err = store.put_bytes("", b"x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidKey);
    let err = store
        .put_bytes(ObjectMeta::new("x").chunk_size(0), b"x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    // A full store refuses the object, and says so as a non-transient error.
    let err = store
        .put(
            ObjectMeta::new("too-big").chunk_size(16 * 1024),
            &mut data(200 * 1024).as_slice(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Server, "{err}");
    assert!(!err.is_transient());
    assert_eq!(
        store.info("too-big").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    assert!(kv.delete_object_store("small").await.unwrap());
    assert!(!kv.delete_object_store("small").await.unwrap());
    let err = kv.open_object_store("small").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BucketNotFound);
}
