//! Storage proofs on a devnet of real `cairn-node` processes with 6-second epochs: every node
//! commits, audits every peer, gossips its receipts; `cairn proofs --json` reads the ledgers.
//!
//! * Honest nodes pass every epoch, also while another node is stopped (which is offline, not
//!   at fault).
//! * A node whose shard pieces are flipped on disk is recorded faulty within two epochs and
//!   its shards are named for repair.
//! * A node that no longer holds a shard it signed a receipt for, and so leaves it out of its
//!   commitment, is caught by a targeted challenge from a keeper holding the receipt.
//!
//! Needs the `cairn` binary (`cargo build --release --workspace --bins`).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::devnet::{Net, open_db};
use serde_json::Value;

const EPOCH_MS: u64 = 6_000;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn epoch_now() -> u64 {
    now_ms() / EPOCH_MS
}

/// Sleeps until `n` epochs from now have begun and their audits are done (audits start in the
/// first third of an epoch).
async fn pass_epochs(n: u64) {
    let target = (epoch_now() + n) * EPOCH_MS + EPOCH_MS * 2 / 3;
    tokio::time::sleep(Duration::from_millis(target.saturating_sub(now_ms()))).await;
}

async fn proof_net(nodes: usize) -> Net {
    let args = [
        "--epoch",
        "6s",
        "--audits-per-epoch",
        "8",
        "--scrub-rate",
        "0",
    ];
    Net::start_with(nodes, args.iter().map(|s| s.to_string()).collect()).await
}

/// `cairn proofs --json`: every node's record, by peer id.
fn records(net: &Net) -> Vec<Value> {
    let out = net.ok(&["proofs", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["record"].clone())
        .collect()
}

fn record<'a>(all: &'a [Value], peer: &str) -> Option<&'a Value> {
    all.iter().find(|r| r["peer_id"] == peer)
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// Puts `len` bytes with a `k`+`m` code; returns the CID and `cairn stat --json`.
fn put(net: &Net, len: usize, seed: u64, k: u16, m: u16) -> (String, Value) {
    let file = net.path(&format!("f{seed}.bin"));
    std::fs::write(&file, cairn_testkit::data::bytes(len, seed)).unwrap();
    let (k, m) = (k.to_string(), m.to_string());
    let cid = net
        .ok(&["put", "--k", &k, "--m", &m, file.to_str().unwrap()])
        .trim()
        .to_string();
    let stat: Value = serde_json::from_str(&net.ok(&["stat", &cid, "--json"])).unwrap();
    (cid, stat)
}

/// `(shard CID, holder peer ids)` of every shard in a `cairn stat --json`.
fn shards(stat: &Value) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for stripe in stat["stripes"].as_array().unwrap() {
        for s in stripe["shards"].as_array().unwrap() {
            let holders = s["holders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_string())
                .collect();
            out.push((s["cid"].as_str().unwrap().to_string(), holders));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honest_nodes_pass_every_epoch_while_another_is_stopped() {
    let mut net = proof_net(5).await;
    let (_, stat) = put(&net, 3 << 20, 1, 2, 2);
    let held: Vec<String> = shards(&stat).into_iter().flat_map(|(_, h)| h).collect();
    // Shards taken in this epoch are challengeable from the next one.
    pass_epochs(1).await;
    let stopped = net.devnet.state.nodes[4].peer_id.clone();
    net.devnet.stop_node(4).await;
    let from = epoch_now();
    pass_epochs(3).await;
    let all = records(&net);
    for n in &net.devnet.state.nodes {
        let r = record(&all, &n.peer_id).unwrap_or_else(|| panic!("no record of {}", n.peer_id));
        assert_eq!(u(r, "faults"), 0, "{r}");
        assert_eq!(r["faulty"], false, "{r}");
        if n.peer_id == stopped {
            assert!(u(r, "offline") >= 2, "a stopped node is offline: {r}");
            continue;
        }
        // Three running auditors, three epochs: at least one passing audit per epoch.
        assert!(u(r, "passes") >= 3, "{r}");
        assert!(u(r, "proven_epochs") >= 3, "{r}");
        if held.contains(&n.peer_id) {
            assert!(u(r, "proven_byte_epochs") > 0, "{r}");
            assert!(r["probe_median_ms"].as_u64().is_some(), "probed: {r}");
        }
        assert!(u(r, "last_epoch") >= from + 2, "{r}");
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_pieces_make_a_node_faulty_within_two_epochs_and_name_its_shards() {
    let mut net = proof_net(5).await;
    let (_, stat) = put(&net, 4 << 20, 2, 2, 2);
    let all_shards = shards(&stat);
    let victim = all_shards[0].1[0].clone();
    let theirs: Vec<String> = all_shards
        .iter()
        .filter(|(_, h)| h.contains(&victim))
        .map(|(c, _)| c.clone())
        .collect();
    pass_epochs(1).await;
    let index = net.index_of(&victim);
    let mut flipped = 0;
    net.with_node_stopped(index, |db_path| {
        let db = open_db(db_path);
        let cf = db.cf_handle("shards").unwrap();
        let pieces: Vec<_> = db
            .iterator_cf(cf, rocksdb::IteratorMode::Start)
            .map(|r| r.unwrap())
            .collect();
        for (k, v) in pieces {
            let mut v = v.to_vec();
            for i in (0..v.len()).step_by(1024) {
                v[i] ^= 0x40;
            }
            db.put_cf(cf, k, v).unwrap();
            flipped += 1;
        }
    })
    .await;
    assert!(flipped > 0);
    let restarted = epoch_now();
    loop {
        let all = records(&net);
        if let Some(r) = record(&all, &victim)
            && r["faulty"] == true
        {
            let repair: Vec<&str> = r["repair"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            assert!(
                theirs.iter().any(|c| repair.contains(&c.as_str())),
                "the flipped shards {theirs:?} are named for repair: {r}"
            );
            assert!(u(r, "faults") >= 2, "{r}");
            break;
        }
        assert!(
            epoch_now() <= restarted + 2,
            "not faulty within two epochs of the damage: {:?}",
            record(&all, &victim)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Honest peers stay clean meanwhile.
    let all = records(&net);
    for n in &net.devnet.state.nodes {
        if n.peer_id != victim
            && let Some(r) = record(&all, &n.peer_id)
        {
            assert_eq!(u(r, "faults"), 0, "{r}");
        }
    }
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_left_out_of_the_commitment_is_caught_by_a_targeted_challenge() {
    let mut net = proof_net(5).await;
    let (cid, stat) = put(&net, 1 << 20, 3, 2, 2);
    let keepers: Vec<String> = stat["manifest_holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    // A holder that is not a keeper: every keeper holds its receipt and audits it.
    let (shard, victim) = shards(&stat)
        .into_iter()
        .find_map(|(c, h)| h.into_iter().find(|p| !keepers.contains(p)).map(|p| (c, p)))
        .expect("four holders, three keepers");
    // Shards are named from the second epoch after they were taken.
    pass_epochs(2).await;
    // The data owner's own audit: every holder proves its named shards.
    let audit = |net: &Net| {
        let out = net.cairn(&["audit", &cid, "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), v)
    };
    let (ok, report) = audit(&net);
    assert!(ok, "{report}");
    assert_eq!(u(&report, "receipts"), 4, "one receipt per shard: {report}");
    for n in report["nodes"].as_array().unwrap() {
        assert_eq!(n["verdict"], "pass", "{n}");
        assert!(u(n, "named") >= 1, "{n}");
    }
    let key = cairn_chunker::cids::parse(&shard).unwrap().to_bytes();
    let index = net.index_of(&victim);
    net.with_node_stopped(index, |db_path| {
        let db = open_db(db_path);
        let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), db_path).unwrap();
        for name in names
            .iter()
            .filter(|n| ["shards", "outboards", "leases"].contains(&n.as_str()))
        {
            let cf = db.cf_handle(name).unwrap();
            let keys: Vec<_> = db
                .prefix_iterator_cf(cf, &key)
                .map(|r| r.unwrap().0)
                .filter(|k| k.starts_with(&key))
                .collect();
            for k in keys {
                db.delete_cf(cf, k).unwrap();
            }
        }
    })
    .await;
    let restarted = epoch_now();
    loop {
        let all = records(&net);
        if let Some(r) = record(&all, &victim)
            && r["repair"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c == shard.as_str())
        {
            let kinds: Vec<&str> = r["recent_faults"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f["kind"].as_str().unwrap())
                .collect();
            assert!(
                kinds
                    .iter()
                    .any(|k| k.contains("neither committed nor declared")),
                "{r}"
            );
            break;
        }
        assert!(
            epoch_now() <= restarted + 2,
            "the omitted shard {shard} was not caught within two epochs: {:?}",
            record(&all, &victim)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And the owner's audit says so too, and fails.
    let (ok, report) = audit(&net);
    assert!(!ok, "{report}");
    let theirs = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["peer_id"] == victim.as_str())
        .unwrap();
    assert_eq!(theirs["verdict"], "fault", "{theirs}");
    net.stop().await;
}
