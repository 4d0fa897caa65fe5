//! What nodes store is checked by whoever reads it: a devnet of real `cairn-node` processes,
//! the real `cairn` CLI, and the nodes' RocksDB edited between runs (a provenance envelope's
//! signature, then a manifest's bytes) must make `cairn verify` and `cairn get` fail, and say
//! why.
//!
//! It lives with the node because it opens the nodes' RocksDB directly (the client crate does
//! not depend on RocksDB, even in its tests). The `cairn` binary must have been built:
//! `cargo build --release --workspace --bins`.

mod common;

use common::devnet::{Net, open_db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_manifest_or_signature_fails_verify() {
    let mut net = Net::start(6).await;
    let data = cairn_testkit::data::bytes(3 << 20, 4);
    let file = net.path("f.bin");
    std::fs::write(&file, &data).unwrap();
    let cid_text = net.ok(&["put", file.to_str().unwrap()]).trim().to_string();
    assert!(net.cairn(&["verify", &cid_text]).status.success());
    let cid = cairn_chunker::cids::parse(&cid_text).unwrap();
    let key = cid.to_bytes();

    // Tamper with every stored copy's signature: flip a byte of each provenance envelope.
    let mut touched = 0;
    net.with_nodes_stopped(|db_path| {
        let db = open_db(db_path);
        let prov = db.cf_handle("provenance").unwrap();
        let items: Vec<_> = db
            .prefix_iterator_cf(prov, &key)
            .map(|r| r.unwrap())
            .filter(|(k, _)| k.starts_with(&key))
            .collect();
        for (k, v) in items {
            let mut v = v.to_vec();
            let n = v.len();
            v[n - 5] ^= 0x01; // inside the signature bytes, at the end of the envelope
            db.put_cf(prov, k, v).unwrap();
            touched += 1;
        }
    })
    .await;
    assert!(touched >= 1);
    let verify = net.cairn(&["verify", &cid_text]);
    assert!(!verify.status.success());
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(report.contains("signature"), "{report}");
    let get = net.cairn(&["get", &cid_text, "-o", net.path("x").to_str().unwrap()]);
    assert!(!get.status.success());
    assert!(String::from_utf8_lossy(&get.stderr).contains("tampered"));

    // Now the manifest bytes themselves: a node serving altered bytes is caught by the CID.
    net.with_nodes_stopped(|db_path| {
        let db = open_db(db_path);
        let manifests = db.cf_handle("manifests").unwrap();
        if let Some(v) = db.get_cf(manifests, &key).unwrap() {
            let mut v = v.to_vec();
            let n = v.len();
            v[n / 2] ^= 0x01;
            db.put_cf(manifests, &key, v).unwrap();
        }
    })
    .await;
    let verify = net.cairn(&["verify", &cid_text]);
    assert!(!verify.status.success());
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        report.contains("not available") || report.contains("corrupt"),
        "{report}"
    );
    net.stop().await;
}
