//! kvtk-core's object store view: a large object put in chunks, read back as a stream with its
//! digest checked, a link, the listing, and the store deleted.
//!
//! Run with `cargo run -p kvtk-core --example objects`. Uses `NATS_URL` when set, else a
//! throwaway nats-server; the store it creates is deleted at the end.

use kvtk_core::object::{ObjectMeta, ObjectStore, ObjectStoreConfig};
use kvtk_core::Kv;
use tokio::io::AsyncReadExt;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

const STORE: &str = "example-objects";

#[tokio::main]
async fn main() -> Res {
    let (_server, url) = match std::env::var("NATS_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            let server = kvtk_tests::NatsServer::start().await;
            let url = server.client_url();
            (Some(server), url)
        }
    };
    let kv = Kv::connect(&url).await?;
    let store = kv
        .create_or_open_object_store(ObjectStoreConfig::new(STORE).description("example"))
        .await?;
    let result = tour(&store).await;
    kv.delete_object_store(STORE).await?;
    result
}

async fn tour(store: &ObjectStore) -> Res {
    // Any tokio AsyncRead will do: a file, a socket, or a slice as here.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let info = store
        .put(
            ObjectMeta::new("datasets/sample.bin")
                .metadata("content-type", "application/octet-stream"),
            &mut data.as_slice(),
        )
        .await?;
    println!(
        "stored {} bytes in {} chunks ({})",
        info.size(),
        info.chunks(),
        info.digest().unwrap_or("-")
    );

    let mut reader = store.get("datasets/sample.bin").await?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut total, mut matches) = (0usize, true);
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        matches &= buf[..n] == data[total..total + n];
        total += n;
    }
    println!("read {total} bytes back as a stream; identical: {matches}");
    if !matches || total != data.len() {
        return Err("the object read back differs".into());
    }

    store.link("datasets/latest", &info).await?;
    for object in store.list().await? {
        match object.link() {
            Some(link) => println!("  {} -> {:?}", object.name(), link.object),
            None => println!("  {} ({} bytes)", object.name(), object.size()),
        }
    }
    Ok(())
}
