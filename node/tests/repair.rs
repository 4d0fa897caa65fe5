//! Self-repair on a devnet of real `cairn-node` processes (repair passes every second, peers
//! silent for 3 s count as lost):
//!
//! * 4+2 on 8 nodes: two nodes are `kill -9`ed; every stripe is back to 6 live shards on 6
//!   distinct live nodes, the manifest back to 3 copies; they come back (no shard is rebuilt
//!   again); they and two more are killed and every byte
//!   still reads, verified. Killed nodes that come back cause no rebuild.
//! * A node whose shard pieces are flipped on disk finds them corrupt (its scrub quarantines
//!   them) and the keepers rebuild them elsewhere; restarting it rebuilds nothing twice.
//! * A node that comes back after its shards were rebuilt elsewhere holds spare copies: the
//!   owner's next renewal is carried to one copy of each shard, the others lapse when their
//!   lease ends, and the nodes' `used` is back to one copy of each shard.
//!
//! * Two nodes join a network of six that holds an object: rebalancing copies shards from the
//!   full nodes to them (each to a node ranked above its old holder, so the new copy is the
//!   one kept leased), the old copies are named spare, the nodes' net fill is unchanged, and
//!   the moves stop once the fills are within the spread of the mean.
//!
//! Needs the `cairn` binary (`cargo build --release --workspace --bins`).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cairn_wire::admin::http_get;
use common::devnet::{Net, open_db};
use serde_json::Value;

/// Repair passes every second, silent peers lost after 3 s; 2 s epochs, shards no lease
/// claims held 4 epochs (+1 of grace), collected every second: a rebuilt shard the keeper did
/// not carry the object's lease to is gone 10 s later.
async fn repair_net(nodes: usize) -> Net {
    Net::start_with(nodes, repair_args(&["--lease-epochs", "4"])).await
}

/// The devnet flags of [`repair_net`] but the upload hold, and `more`.
fn repair_args(more: &[&str]) -> Vec<String> {
    let args = [
        "--repair-interval",
        "1s",
        "--repair-grace",
        "3s",
        "--scrub-rate",
        "0",
        "--epoch",
        "2s",
        "--grace-epochs",
        "1",
        "--gc-interval",
        "1s",
    ];
    args.iter().chain(more).map(|s| s.to_string()).collect()
}

/// Puts `len` bytes with a 4+2 code; returns the CID and the bytes.
fn put(net: &Net, len: usize, seed: u64) -> (String, Vec<u8>) {
    let file = net.path(&format!("f{seed}.bin"));
    let bytes = cairn_testkit::data::bytes(len, seed);
    std::fs::write(&file, &bytes).unwrap();
    let cid = net
        .ok(&["put", "--k", "4", "--m", "2", file.to_str().unwrap()])
        .trim()
        .to_string();
    (cid, bytes)
}

fn stat(net: &Net, cid: &str) -> Value {
    serde_json::from_str(&net.ok(&["stat", cid, "--json"])).unwrap()
}

/// Whether every stripe has all its shards on distinct live nodes (none corrupt counted) and
/// the manifest has `copies` copies; if not, what is missing.
fn healthy(stat: &Value, copies: usize) -> Result<(), String> {
    let keepers = stat["manifest_holders"].as_array().unwrap().len();
    if keepers < copies {
        return Err(format!("manifest on {keepers} nodes"));
    }
    for stripe in stat["stripes"].as_array().unwrap() {
        let shards = stripe["shards"].as_array().unwrap();
        let mut nodes = HashSet::new();
        for s in shards {
            let holders = s["holders"].as_array().unwrap();
            let Some(h) = holders.iter().find(|h| !nodes.contains(*h)) else {
                return Err(format!(
                    "stripe {}: shard {} has no holder",
                    stripe["index"], s["index"]
                ));
            };
            nodes.insert(h.clone());
        }
    }
    Ok(())
}

async fn wait_healthy(net: &Net, cid: &str, within: Duration) -> Value {
    wait_healthy_with(net, cid, within, 3).await
}

/// [`wait_healthy`] for a manifest kept on `copies` nodes (`m + 1`).
async fn wait_healthy_with(net: &Net, cid: &str, within: Duration, copies: usize) -> Value {
    let start = Instant::now();
    loop {
        let st = stat(net, cid);
        match healthy(&st, copies) {
            Ok(()) => return st,
            Err(why) if start.elapsed() > within => {
                panic!("not healed within {within:?}: {why}\n{st}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A node (peer id) holding shards of the object `stat` describes but not its manifest.
fn holder_not_keeping(stat: &Value) -> String {
    let keepers: HashSet<String> = stat["manifest_holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    stat["stripes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["shards"].as_array().unwrap().iter())
        .map(|s| s["holders"][0].as_str().unwrap().to_string())
        .find(|p| !keepers.contains(p))
        .expect("more holders than keepers")
}

/// `cairn get` writes exactly `want`.
fn reads_back(net: &Net, cid: &str, want: &[u8], name: &str) {
    let out = net.path(name);
    net.ok(&["get", cid, "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == want, "{name}: bytes differ");
}

/// The sum of a counter over the running nodes' `/metrics`.
async fn counter(net: &Net, name: &str, skip: &[usize]) -> u64 {
    let mut sum = 0;
    for (i, n) in net.devnet.state.nodes.iter().enumerate() {
        if skip.contains(&i) {
            continue;
        }
        let (_, text) = http_get(n.admin, "/metrics", Duration::from_secs(5))
            .await
            .unwrap();
        sum += text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map_or(0, |v| v.trim().parse::<u64>().unwrap());
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_nodes_are_repaired_around_and_two_more_losses_still_read() {
    let mut net = repair_net(8).await;
    let (cid, bytes) = put(&net, 10 << 20, 1);
    let before = stat(&net, &cid);
    healthy(&before, 3).unwrap();
    // Kill two nodes that hold shards (the stripe with most of them on one node: any two).
    let holders: Vec<String> = before["stripes"][0]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["holders"][0].as_str().unwrap().to_string())
        .collect();
    let first: Vec<usize> = holders[..2].iter().map(|p| net.index_of(p)).collect();
    for &i in &first {
        net.devnet.kill_node(i).await;
    }
    let lost = healthy(&stat(&net, &cid), 3);
    assert!(lost.is_err(), "killing two holders loses shards");
    let healed = wait_healthy(&net, &cid, Duration::from_secs(90)).await;
    // No shard is on a dead node, and each stripe's shards are on 6 distinct nodes.
    let dead: HashSet<String> = first
        .iter()
        .map(|&i| net.devnet.state.nodes[i].peer_id.clone())
        .collect();
    for stripe in healed["stripes"].as_array().unwrap() {
        assert_eq!(stripe["live"], 6, "{stripe}");
    }
    let shown = healed.to_string();
    assert!(dead.iter().all(|d| !shown.contains(d.as_str())), "{shown}");
    let rebuilt = counter(&net, "cairn_repair_shards_rebuilt_total", &first).await;
    assert!(rebuilt >= 2, "{rebuilt} shards rebuilt");
    // The object's lease reached the new holders: past their upload hold and its grace the
    // rebuilt shards are still there, and nothing had to be rebuilt again.
    tokio::time::sleep(Duration::from_secs(14)).await;
    let later = stat(&net, &cid);
    healthy(&later, 3).unwrap_or_else(|why| panic!("after the upload holds: {why}\n{later}"));
    assert_eq!(
        counter(&net, "cairn_repair_shards_rebuilt_total", &first).await,
        rebuilt,
        "rebuilt shards were collected and rebuilt again"
    );
    // The two come back with their old copies: spare copies now, nothing is rebuilt again.
    for &i in &first {
        net.devnet.restart_node(i).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    // (The returning nodes count from 0 again: any rebuild of theirs shows too.)
    let again = counter(&net, "cairn_repair_shards_rebuilt_total", &[]).await;
    assert_eq!(again, rebuilt, "a returning node caused rebuilds");
    reads_back(&net, &cid, &bytes, "after-return.bin");
    // The same two and two more die: four of eight nodes gone, every byte still reads.
    let second: Vec<usize> = (0..8).filter(|i| !first.contains(i)).take(2).collect();
    for &i in first.iter().chain(&second) {
        net.devnet.kill_node(i).await;
    }
    reads_back(&net, &cid, &bytes, "after-four.bin");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_pieces_are_rebuilt_elsewhere_and_a_restart_rebuilds_nothing_twice() {
    let mut net = repair_net(7).await;
    let (cid, bytes) = put(&net, 6 << 20, 2);
    let st = stat(&net, &cid);
    // A node holding shards but not the manifest.
    let victim = holder_not_keeping(&st);
    let index = net.index_of(&victim);
    let data_dir = net.devnet.state.nodes[index].data_dir.clone();
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
            v[0] ^= 0x40;
            db.put_cf(cf, k, v).unwrap();
            flipped += 1;
        }
        drop(db);
        // Its scrub starts at once and reads everything within a second.
        let config = data_dir.join("config.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("scrub_start_secs") {
                    "scrub_start_secs = 0".to_string()
                } else if l.starts_with("scrub_rate") {
                    "scrub_rate = \"1GiB\"".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        assert!(text.contains("scrub_start_secs = 0"), "{text}");
        std::fs::write(&config, text).unwrap();
    })
    .await;
    assert!(flipped > 0);
    let healed = wait_healthy(&net, &cid, Duration::from_secs(60)).await;
    let corrupt: usize = healed["stripes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["shards"].as_array().unwrap().iter())
        .filter(|s| !s["corrupt"].as_array().unwrap().is_empty())
        .count();
    assert!(corrupt > 0, "the victim's copies are quarantined: {healed}");
    // The victim's own counters restart with it: count the others.
    let rebuilt = counter(&net, "cairn_repair_shards_rebuilt_total", &[index]).await;
    assert!(rebuilt >= 1);
    // Restarting the victim (its corrupt copies still quarantined) rebuilds nothing twice.
    net.devnet.restart_node(index).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        counter(&net, "cairn_repair_shards_rebuilt_total", &[index]).await,
        rebuilt
    );
    reads_back(&net, &cid, &bytes, "read.bin");
    net.stop().await;
}

/// `cairn-node drain --json` on a node: its stdout, parsed, once it says it is safe to stop.
async fn drain(net: &Net, index: usize) -> Value {
    let dir = net.devnet.state.nodes[index].data_dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cairn-node"))
            .args(["drain", "--json", "--timeout", "90s", "--data-dir"])
            .arg(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "drain failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_leaves_with_nothing_lost_and_one_killed_mid_drain_loses_nothing() {
    let mut net = repair_net(8).await;
    let (cid, bytes) = put(&net, 8 << 20, 3);
    let st = stat(&net, &cid);
    // A keeper that also holds shards: its manifest copy must go elsewhere too.
    let holders: HashSet<String> = st["stripes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["shards"].as_array().unwrap().iter())
        .flat_map(|s| s["holders"].as_array().unwrap().iter())
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    let keeper = st["manifest_holders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_string())
        .find(|k| holders.contains(k))
        .expect("with 8 nodes and 6 shards a stripe, a keeper holds shards");
    let index = net.index_of(&keeper);
    let report = drain(&net, index).await;
    assert_eq!(report["safe"], true, "{report}");
    assert!(report["shards"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["shards"], report["shards_elsewhere"], "{report}");
    assert_eq!(
        report["manifests"], report["manifests_elsewhere"],
        "{report}"
    );
    // The keepers moved every shard; the node pushed none itself.
    assert_eq!(report["shards_pushed"], 0, "{report}");
    // Gone at once, before any repair could notice: the object is whole without it.
    net.devnet.kill_node(index).await;
    let now = stat(&net, &cid);
    healthy(&now, 3).unwrap_or_else(|why| panic!("{why}: {now}"));
    reads_back(&net, &cid, &bytes, "drained.bin");
    // Another holder starts to drain and is killed a moment later: nothing is lost (what was
    // not copied yet is repaired like any lost node's shards).
    let other = holders
        .iter()
        .map(|p| net.index_of(p))
        .find(|&i| i != index)
        .unwrap();
    let dir = net.devnet.state.nodes[other].data_dir.clone();
    std::fs::write(dir.join("draining"), b"").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    net.devnet.kill_node(other).await;
    wait_healthy(&net, &cid, Duration::from_secs(60)).await;
    reads_back(&net, &cid, &bytes, "killed-draining.bin");
    net.stop().await;
}

/// The bytes the running nodes hold, summed (`cairn nodes --json`).
fn used(net: &Net) -> u64 {
    let v: Value = serde_json::from_str(&net.ok(&["nodes", "--json"])).unwrap();
    v["used"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_after_its_shards_were_rebuilt_gives_the_spare_copies_back() {
    let mut net = repair_net(5).await;
    let file = net.path("spares.bin");
    let bytes = cairn_testkit::data::bytes(3 << 20, 5);
    std::fs::write(&file, &bytes).unwrap();
    // Leased for 40 s (20 epochs) by its owner.
    let cid = net
        .ok(&[
            "put",
            "--k",
            "2",
            "--m",
            "1",
            "--lease",
            "40s",
            file.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    let st = wait_healthy_with(&net, &cid, Duration::from_secs(30), 2).await;
    let one_copy = used(&net);
    // A holder that keeps no manifest goes away; its shards are rebuilt elsewhere.
    let victim = holder_not_keeping(&st);
    let index = net.index_of(&victim);
    net.devnet.stop_node(index).await;
    wait_healthy_with(&net, &cid, Duration::from_secs(60), 2).await;
    // Back, with its old copies beside the rebuilt ones.
    net.devnet.restart_node(index).await.unwrap();
    let start = Instant::now();
    while used(&net) <= one_copy {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the node is not back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let with_spares = used(&net);
    // The keeper names the old copies spare to their holder, with the new copies' receipts:
    // the nodes count exactly the second copies out of their fill.
    let start = Instant::now();
    let mut spare = 0;
    while spare != with_spares - one_copy {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "spare bytes {spare}, second copies {}",
            with_spares - one_copy
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        spare = counter(&net, "cairn_spare_bytes", &[]).await;
    }
    // The owner renews; once the first lease and the grace have passed, only the copies the
    // keeper carried the renewal to are left: one of each shard.
    net.ok(&["renew", &cid, "--lease", "3m"]);
    let start = Instant::now();
    let mut now = with_spares;
    while now != one_copy && start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = used(&net);
    }
    assert_eq!(
        now, one_copy,
        "used with one copy of each shard (with spares: {with_spares})"
    );
    reads_back(&net, &cid, &bytes, "spares-back.bin");
    // And it stays so: the renewed copies are not collected.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(used(&net), one_copy);
    reads_back(&net, &cid, &bytes, "spares-later.bin");
    net.stop().await;
}

/// The per-node value of a gauge or counter, by node index (`None` for a node not answering).
async fn per_node(net: &Net, name: &str) -> Vec<Option<u64>> {
    let mut out = Vec::new();
    for n in &net.devnet.state.nodes {
        let v = match http_get(n.admin, "/metrics", Duration::from_secs(5)).await {
            Ok((_, text)) => text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse::<u64>().ok()),
            Err(_) => None,
        };
        out.push(v);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_that_join_take_shards_from_full_ones_and_the_old_copies_become_spare() {
    // 32 MiB nodes; nodes more than 2 % of capacity away from the mean fill rebalance.
    // Upload holds of 200 s: nothing (a hedge's spare copy, say) is collected meanwhile.
    let args = repair_args(&["--rebalance-spread", "0.02", "--lease-epochs", "100"]);
    let mut net = Net::start_sized(8, "32MiB", args).await;
    // Two nodes are not there yet: the object goes to the other six.
    net.devnet.stop_node(7).await;
    net.devnet.stop_node(6).await;
    let file = net.path("joined.bin");
    let bytes = cairn_testkit::data::bytes(24 << 20, 21);
    std::fs::write(&file, &bytes).unwrap();
    let cid = net
        .ok(&[
            "put",
            "--k",
            "4",
            "--m",
            "2",
            "--lease",
            "10m",
            file.to_str().unwrap(),
        ])
        .trim()
        .to_string();
    wait_healthy(&net, &cid, Duration::from_secs(30)).await;
    let used_before = counter(&net, "cairn_shard_bytes_stored", &[6, 7]).await;
    let spare_before = counter(&net, "cairn_spare_bytes", &[6, 7]).await;
    assert_eq!(
        counter(&net, "cairn_rebalance_shards_total", &[6, 7]).await,
        0
    );
    // They join, empty.
    net.devnet.restart_node(6).await.unwrap();
    net.devnet.restart_node(7).await.unwrap();
    // Net fills (spare copies left out) until no node is above the band and both new nodes
    // hold shards.
    let fills = |stored: &[Option<u64>], spare: &[Option<u64>]| -> Vec<f64> {
        stored
            .iter()
            .zip(spare)
            .map(|(u, s)| (u.unwrap_or(0) - s.unwrap_or(0)) as f64 / (32u64 << 20) as f64)
            .collect()
    };
    let start = Instant::now();
    loop {
        let stored = per_node(&net, "cairn_shard_bytes_stored").await;
        let spare = per_node(&net, "cairn_spare_bytes").await;
        let f = fills(&stored, &spare);
        let mean = f.iter().sum::<f64>() / f.len() as f64;
        if f[6] > 0.0 && f[7] > 0.0 && f.iter().all(|x| *x <= mean + 0.02 + 1e-9) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "rebalancing did not bring the fills into the band: {f:?} (mean {mean})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // And it stays so: nothing moves for 5 passes (no shard goes back and forth).
    let moved = counter(&net, "cairn_rebalance_shards_total", &[]).await;
    assert!(moved > 0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        counter(&net, "cairn_rebalance_shards_total", &[]).await,
        moved,
        "moves went on after the fills were in the band"
    );
    // No copy was dropped: each move added one, and each old copy is named spare.
    let rebalanced = counter(&net, "cairn_rebalance_bytes_total", &[]).await;
    let used = counter(&net, "cairn_shard_bytes_stored", &[]).await;
    let spare = counter(&net, "cairn_spare_bytes", &[]).await;
    assert_eq!(
        used - used_before,
        rebalanced,
        "used grew by the copies made"
    );
    assert!(
        spare >= spare_before + rebalanced,
        "spare {spare} (before {spare_before}), rebalanced {rebalanced}"
    );
    // Every stripe still has 6 shards on 6 nodes, and every byte reads back.
    wait_healthy(&net, &cid, Duration::from_secs(10)).await;
    reads_back(&net, &cid, &bytes, "joined-back.bin");
    net.stop().await;
}
