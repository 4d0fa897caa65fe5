//! The catalog's backup at scale: a catalog larger than one manifest is exported as pieces and
//! an index, restored whole by an in-process gateway and by a real `cairn-gateway` on a fresh
//! disk, and indexes whose pieces are missing, forged or repeated are refused.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Net, bytes, client, init_gateway, run_gateway};
use serde_json::Value;

/// A gateway in this process over the devnet's nodes, its catalog in `dir/catalog` and its key
/// `dir/gateway.key` (made if missing): what a test needs to call an export with a lowered
/// piece size.
async fn gateway_in_process(net: &Net, dir: &std::path::Path) -> cairn_gateway::Gateway {
    use cairn_gateway::catalog::Catalog;
    std::fs::create_dir_all(dir).unwrap();
    let catalog = std::sync::Arc::new(Catalog::open(&dir.join("catalog")).unwrap());
    let key_path = dir.join(cairn_gateway::config::KEY_FILE);
    let key = if key_path.exists() {
        cairn_client::keys::load(&key_path).unwrap()
    } else {
        cairn_client::keys::generate(&key_path).unwrap()
    };
    let network = net.network().await;
    let opts = cairn_client::put::PutOptions::for_network(network.nodes().len());
    let reads = cairn_gateway::s3::ReadSettings {
        cache_bytes: 0,
        readahead_bytes: 0,
    };
    cairn_gateway::Gateway::new(
        network,
        catalog,
        key,
        opts,
        cairn_gateway::metrics::GatewayMetrics::new(),
        reads,
    )
}

type Records = Vec<(String, String, cairn_gateway::catalog::ObjectRecord)>;

/// Every bucket (name, created) and every object of a gateway's catalog.
async fn catalog_of(gw: &cairn_gateway::Gateway) -> (Vec<(String, u64)>, Records) {
    let c = gw.catalog().clone();
    tokio::task::spawn_blocking(move || {
        let buckets = c.buckets().unwrap();
        let buckets = buckets
            .into_iter()
            .map(|(n, r)| (n, r.created_ms))
            .collect();
        (buckets, c.all_objects().unwrap())
    })
    .await
    .unwrap()
}

/// Export pieces are capped at a size a test can lower: a catalog of 2,000 keys (every shape
/// of key an export escapes, user metadata, checksums, three kinds of location) then takes
/// several pieces and an index. Restored into a fresh catalog, every record comes back as it
/// was; a gateway started on a fresh disk with the exporter's key finds the index (not one of
/// its pieces) and serves every key with its ETag, metadata and bytes. An index whose pieces
/// are missing, forged or named twice is refused, and the refused restore changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_larger_than_one_piece_is_exported_in_pieces_and_restored_whole() {
    use cairn_chunker::manifest::{DatasetManifest, Location as EntryLocation};
    use cairn_client::get::{Manifest, fetch_manifest};
    use cairn_gateway::catalog::{BucketRecord, ObjectRecord};
    use cairn_gateway::snapshot::PIECES_DIR;
    use cairn_wire::protocol::ManifestKind;

    let net = Net::start(4).await;
    // Real bytes for the keys to point at: an inline, a packed and an object-sized file.
    let src = net.dir.path().join("piece-src");
    std::fs::create_dir_all(&src).unwrap();
    let files = [
        ("tiny.txt", bytes(10, 1)),
        ("small.bin", bytes(5000, 2)),
        ("large.bin", bytes(300_000, 3)),
    ];
    for (name, data) in &files {
        std::fs::write(src.join(name), data).unwrap();
    }
    assert!(net.cairn(&["key", "generate"]).status.success());
    let out = net.cairn_ok(&[
        "put",
        src.to_str().unwrap(),
        "--k",
        "2",
        "--m",
        "2",
        "--json",
    ]);
    let put: Value = serde_json::from_slice(&out.stdout).unwrap();
    let dataset: cairn_chunker::Cid = put["cid"].as_str().unwrap().parse().unwrap();

    let dir_a = net.dir.path().join("gw-pieces-a");
    let a = gateway_in_process(&net, &dir_a).await;
    a.import("corpus", "src/", None, &dataset, &BTreeMap::new())
        .await
        .unwrap();
    let (_, real) = catalog_of(&a).await;
    assert_eq!(real.len(), 3);
    let body_of = |r: &ObjectRecord| {
        let (_, data) = files
            .iter()
            .find(|(_, d)| blake3::hash(d).to_hex().as_str() == r.blake3)
            .unwrap();
        data.clone()
    };
    let mut synthetic: BTreeMap<String, Vec<(String, ObjectRecord)>> = BTreeMap::new();
    for i in 0..2000usize {
        let bucket = ["alpha", "beta"][i % 2];
        let key = match i % 6 {
            0 => format!("train/{i:05}.tar"),
            // A key that is also another key's directory, and one that is not a path.
            1 => format!("train/{:05}.tar/part", i - 1),
            2 => format!("weird//{i}"),
            3 => format!("ünïcode/{i}-{}", "x".repeat(i % 700)),
            4 => format!("../up/{i}"),
            _ => format!("k{i}"),
        };
        let mut r = real[i % 3].2.clone();
        r.etag = format!("{:032x}", i * 7919);
        r.metadata = BTreeMap::from([
            ("i".to_string(), i.to_string()),
            ("team".to_string(), "vision".to_string()),
        ]);
        r.content_type = (i % 4 == 0).then(|| format!("application/x-{i}"));
        r.checksums = if i % 5 == 0 {
            BTreeMap::from([("crc32".to_string(), format!("{i:08}"))])
        } else {
            BTreeMap::new()
        };
        r.modified_ms = 1_700_000_000_000 + i as u64;
        synthetic
            .entry(bucket.to_string())
            .or_default()
            .push((key, r));
    }
    let c = a.catalog().clone();
    tokio::task::spawn_blocking(move || {
        for (bucket, records) in synthetic {
            c.put_objects(&bucket, 1_600_000_000_000, &records).unwrap();
        }
        c.create_bucket(
            "empty",
            &BucketRecord {
                created_ms: 1_650_000_000_000,
            },
        )
        .unwrap();
    })
    .await
    .unwrap();
    let (buckets, objects) = catalog_of(&a).await;
    assert_eq!((buckets.len(), objects.len()), (4, 2003));

    let report = a.export_in_pieces(64 << 10).await.unwrap();
    assert!(report.pieces >= 4, "{report:?}");
    assert_eq!((report.buckets, report.objects), (4, 2003));
    let index_cid: cairn_chunker::Cid = report.cid.parse().unwrap();
    let index = match fetch_manifest(&*a.net().await, &index_cid)
        .await
        .unwrap()
        .manifest
    {
        Manifest::Dataset(d) => d,
        Manifest::Object(_) => panic!("the export is a dataset"),
    };
    let named: Vec<&String> = index
        .entries
        .keys()
        .filter(|p| p.starts_with(PIECES_DIR))
        .collect();
    assert_eq!(named.len(), report.pieces, "{:?}", index.entries.keys());

    // Restored into a fresh catalog: every bucket and record as it was.
    let b = gateway_in_process(&net, &net.dir.path().join("gw-pieces-b")).await;
    let restored = b.restore(&index_cid).await.unwrap();
    assert_eq!(restored.objects, 2003);
    assert_eq!(catalog_of(&b).await, (buckets.clone(), objects.clone()));

    // A gateway on a fresh disk with the exporter's key finds the index and restores it.
    let dir_c = net.dir.path().join("gw-pieces-c");
    init_gateway(&dir_c, "PIECEKEY", "piece-secret-1234");
    std::fs::copy(
        dir_a.join(cairn_gateway::config::KEY_FILE),
        dir_c.join(cairn_gateway::config::KEY_FILE),
    )
    .unwrap();
    let (mut gw_c, info) = run_gateway(&net, &dir_c, &[]).await;
    let (code, text) = cairn_wire::admin::http_get(info.admin, "/status", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    let status: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        status["last_export"]["cid"],
        report.cid.as_str(),
        "{status}"
    );
    let s3 = client(&info.endpoint, "PIECEKEY", "piece-secret-1234", true);
    let listed = s3.list_buckets().send().await.unwrap();
    let names: Vec<&str> = listed.buckets().iter().filter_map(|b| b.name()).collect();
    assert_eq!(names, ["alpha", "beta", "corpus", "empty"]);
    let mut seen = 0;
    for (bucket, key, r) in &objects {
        // Keys with `..` parts are checked through the listing below (an HTTP path cannot
        // carry them unchanged).
        if !key.starts_with("../") {
            let head = s3
                .head_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{bucket}/{key}: {e:?}"));
            assert_eq!(
                head.e_tag(),
                Some(format!("\"{}\"", r.etag).as_str()),
                "{key}"
            );
            assert_eq!(head.content_length(), Some(r.size as i64), "{key}");
            let meta = head.metadata().cloned().unwrap_or_default();
            for (k, v) in &r.metadata {
                assert_eq!(meta.get(k), Some(v), "{bucket}/{key}: {k}");
            }
            if let Some(ct) = &r.content_type {
                assert_eq!(head.content_type(), Some(ct.as_str()), "{key}");
            }
            seen += 1;
        }
    }
    assert!(seen > 1600, "{seen}");
    for bucket in ["alpha", "beta", "corpus"] {
        let mut token = None;
        let mut listed = Vec::new();
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(bucket)
                .set_continuation_token(token.clone())
                .send()
                .await
                .unwrap();
            for o in page.contents() {
                listed.push((
                    o.key().unwrap().to_string(),
                    o.e_tag().unwrap().to_string(),
                    o.size().unwrap(),
                ));
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => break,
            }
        }
        let want: Vec<(String, String, i64)> = objects
            .iter()
            .filter(|(b, _, _)| b == bucket)
            .map(|(_, k, r)| (k.clone(), format!("\"{}\"", r.etag), r.size as i64))
            .collect();
        assert_eq!(listed, want, "{bucket}");
    }
    // The bytes: the real keys, and keys that point at the same files (but for the made-up
    // checksums of some, which a whole read returns and the SDK would check).
    for (bucket, key, r) in objects.iter().step_by(97).chain(&real) {
        if key.starts_with("../") || !r.checksums.is_empty() {
            continue;
        }
        let got = s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap();
        let got = got.body.collect().await.unwrap().into_bytes();
        assert!(got == body_of(r), "{bucket}/{key}");
    }
    let _ = gw_c.kill().await;

    // Indexes signed by the gateway's key whose pieces are missing, forged or named twice.
    let key = a.signing_key().clone();
    let net_a = a.net().await;
    let publish = |d: DatasetManifest, k: ed25519_dalek::SigningKey| {
        let net_a = net_a.clone();
        let opts = a.options().clone();
        async move {
            let bytes = d.to_bytes();
            let cid = cairn_chunker::cids::dag_cbor(&bytes);
            cairn_client::put::publish_manifest(
                &net_a,
                &k,
                &cid,
                ManifestKind::Dataset,
                &bytes,
                &opts,
                None,
            )
            .await
            .unwrap();
            cid
        }
    };
    let piece_path = |n: usize| format!("{PIECES_DIR}/{n:06}");
    let naming = |n: usize, cid: &cairn_chunker::Cid, objects: Option<usize>| {
        let mut d = index.clone();
        let e = d.entries.get_mut(&piece_path(n)).unwrap();
        let text = cid.to_string().into_bytes();
        (e.size, e.blake3) = (text.len() as u64, blake3::hash(&text));
        e.location = EntryLocation::Inline(text);
        if let Some(o) = objects {
            e.meta.insert("objects".into(), o.to_string());
        }
        d
    };
    let piece_cid = |n: usize| match &index.entries[&piece_path(n)].location {
        EntryLocation::Inline(b) => std::str::from_utf8(b)
            .unwrap()
            .parse::<cairn_chunker::Cid>()
            .unwrap(),
        other => panic!("{other:?}"),
    };
    // A piece no node has.
    let missing = publish(
        naming(1, &cairn_chunker::cids::dag_cbor(b"nowhere"), None),
        key.clone(),
    )
    .await;
    // A piece of other entries, signed by another key.
    let mut other = match fetch_manifest(&net_a, &piece_cid(1))
        .await
        .unwrap()
        .manifest
    {
        Manifest::Dataset(d) => d,
        Manifest::Object(_) => unreachable!(),
    };
    let first = other.entries.values_mut().next().unwrap();
    first.meta.insert("etag".into(), "0".repeat(32));
    let n = other.entries.len();
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let forged_piece = publish(other, stranger).await;
    let forged = publish(naming(1, &forged_piece, Some(n)), key.clone()).await;
    // The same piece twice.
    let twice = publish(
        naming(2, &piece_cid(0), Some(index_count(&index, 0))),
        key.clone(),
    )
    .await;

    let d = gateway_in_process(&net, &net.dir.path().join("gw-pieces-d")).await;
    let c = d.catalog().clone();
    let mut kept = real[0].2.clone();
    kept.etag = "f".repeat(32);
    tokio::task::spawn_blocking(move || {
        c.put_objects("alpha", 1, &[("train/00000.tar".to_string(), kept)])
            .unwrap()
    })
    .await
    .unwrap();
    let before = catalog_of(&d).await;
    for (cid, says, status) in [
        (missing, "pieces/000001", 503),
        (
            forged,
            "is not signed by the key that signed the index",
            400,
        ),
        (twice, "names piece", 400),
    ] {
        let e = d.restore(&cid).await.expect_err(says);
        let text = e.to_string();
        assert!(text.contains(says), "{text}");
        assert_eq!(e.status().as_u16(), status, "{text}");
        assert_eq!(
            catalog_of(&d).await,
            before,
            "a refused restore changes nothing"
        );
    }
    net.stop().await;
}

/// The entry count an index gives piece `n`.
fn index_count(index: &cairn_chunker::manifest::DatasetManifest, n: usize) -> usize {
    let path = format!("{}/{n:06}", cairn_gateway::snapshot::PIECES_DIR);
    index.entries[&path].meta["objects"].parse().unwrap()
}
