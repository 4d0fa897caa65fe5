//! Leases and garbage collection on a devnet of real `cairn-node` processes with 2-second
//! epochs, a 3-epoch upload hold, a 1-epoch grace and a GC pass every second:
//!
//! * `cairn put --lease` holds an object past its upload hold; `cairn release` ends the
//!   owner's hold, and once the upload hold and the grace have passed the nodes delete its
//!   shards: `used` falls back to what the live object needs, which still reads verified.
//! * A release whose signature was tampered with is refused by keepers and shard holders
//!   alike, saying why, and ends nothing; the same release untampered then does.
//! * Shards stored with no manifest (no one ever leased them) go when their upload hold and
//!   the grace have passed, and not before.
//! * A spare copy of a leased object's shard (a hedge's loser: stored, its receipt dropped) goes
//!   after its upload hold and the grace, while keepers run repair passes every second and
//!   carry the lease to the shard's holders; the object's own copies stay.
//! * With no repair pass to fall back on, a renewal a keeper carries at once reaches a live copy
//!   of each shard: when the first holder in rank is down, the next one takes it.
//! * A release speaks for its object and its owner only: an object sharing every shard with
//!   the released one (the same bytes under other metadata) stays readable, and so does an
//!   object another owner renewed.
//!
//! Needs the `cairn` binary (`cargo build --release --workspace --bins`).

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_chunker::cids::Cid;
use cairn_client::network::Network;
use cairn_proofs::lease::LeaseStatement;
use common::devnet::Net;
use serde_json::Value;

async fn lease_net(nodes: usize) -> Net {
    lease_net_with(nodes, &[]).await
}

/// [`lease_net`] with `extra` node arguments.
async fn lease_net_with(nodes: usize, extra: &[&str]) -> Net {
    let args = [
        "--epoch",
        "2s",
        "--lease-epochs",
        "3",
        "--grace-epochs",
        "1",
        "--gc-interval",
        "1s",
        "--scrub-rate",
        "0",
    ];
    let args = args.iter().chain(extra).map(|s| s.to_string()).collect();
    Net::start_with(nodes, args).await
}

fn used(net: &Net) -> u64 {
    let v: Value = serde_json::from_str(&net.ok(&["nodes", "--json"])).unwrap();
    v["used"].as_u64().unwrap_or_else(|| panic!("used in {v}"))
}

fn put(net: &Net, len: usize, seed: u64, lease: &str) -> String {
    put_as(net, len, seed, lease, "application/octet-stream")
}

/// Uploads `len` bytes of seed `seed` with this content type (other metadata, another
/// manifest over the same shards) under a lease of `lease`.
fn put_as(net: &Net, len: usize, seed: u64, lease: &str, content_type: &str) -> String {
    let file = net.path(&format!("f{seed}.bin"));
    std::fs::write(&file, cairn_testkit::data::bytes(len, seed)).unwrap();
    let out = net.ok(&[
        "put",
        "--k",
        "2",
        "--m",
        "1",
        "--lease",
        lease,
        "--content-type",
        content_type,
        "--json",
        file.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["lease"]["end_epoch"].as_u64().unwrap() > 0, "{v}");
    v["cid"].as_str().unwrap().to_string()
}

/// Whether `cairn get CID` reads the object back as `len` bytes of seed `seed`.
fn reads(net: &Net, cid: &str, len: usize, seed: u64) -> bool {
    let file = net.path(&format!("back-{cid}.bin"));
    net.cairn(&["get", cid, "-o", file.to_str().unwrap()])
        .status
        .success()
        && std::fs::read(&file).unwrap() == cairn_testkit::data::bytes(len, seed)
}

/// A client of the devnet's nodes, as `cairn` joins it.
async fn network(net: &Net) -> Network {
    let peers: Vec<libp2p::Multiaddr> = (net.devnet.state.nodes.iter())
        .map(|n| n.multiaddr.parse().unwrap())
        .collect();
    Network::connect(&peers).await.unwrap()
}

/// Every stored shard of an object.
async fn shards_of(client: &Network, object: &Cid) -> Vec<Cid> {
    let m = cairn_client::get::object_manifest(client, object)
        .await
        .unwrap();
    (m.stripes.iter())
        .flat_map(|s| s.stored_shards().map(|(_, r)| r.cid).collect::<Vec<_>>())
        .collect()
}

/// Waits (at most `limit`) until `used` is `want`; returns what it last was.
async fn wait_used(net: &Net, want: u64, limit: Duration) -> u64 {
    let started = Instant::now();
    loop {
        let now = used(net);
        if now == want || started.elapsed() > limit {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_object_is_collected_and_a_leased_one_stays_readable() {
    let net = lease_net(3).await;
    let kept = put(&net, 300_000, 1, "10m");
    let with_kept = used(&net);
    assert!(with_kept > 0);
    let gone = put(&net, 500_000, 2, "10m");
    assert!(used(&net) > with_kept);

    // Past the upload hold and the grace: both leased objects stay.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(used(&net) > with_kept, "a leased object was collected");

    let out = net.ok(&["release", "--json", &gone]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["end_epoch"], 0, "{v}");
    assert!(v["objects"][0]["keepers"].as_u64().unwrap() >= 1, "{v}");

    // The release reaches the holders, the grace passes, GC runs: only `kept` is left.
    let left = wait_used(&net, with_kept, Duration::from_secs(25)).await;
    assert_eq!(
        left, with_kept,
        "used did not fall back to the live object's shards"
    );

    let file = net.path("back.bin");
    net.ok(&["get", &kept, "-o", file.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        cairn_testkit::data::bytes(300_000, 1)
    );
    // The released object is gone.
    assert!(
        !net.cairn(&["get", &gone, "-o", "/dev/null"])
            .status
            .success()
    );
    net.stop().await;
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Past the upload hold (3 epochs after the one a shard is taken in) and the grace (1), in
/// whatever part of an epoch the shards were taken, with GC passes in between: 6 epochs and
/// a second.
const PAST_THE_UPLOAD_HOLD: Duration = Duration::from_secs(13);

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_release_is_refused_by_keepers_and_holders_and_ends_nothing() {
    let net = lease_net(3).await;
    let text = put(&net, 300_000, 3, "10m");
    let put_at = Instant::now();
    let with_object = used(&net);
    let object: Cid = text.parse().unwrap();
    let client = network(&net).await;
    let key = cairn_client::keys::load(&net.path("key")).unwrap();

    // The owner's own release, one signature byte flipped.
    let release = LeaseStatement::release(&key, &object.to_bytes(), unix_ms());
    let mut tampered = release.clone();
    tampered.signature.0[7] ^= 0x20;
    let tampered = tampered.to_bytes();
    let refused = |e: &dyn std::fmt::Display| {
        let e = e.to_string();
        assert!(
            e.contains("signature does not verify") && e.contains("nothing was changed"),
            "{e}"
        );
    };

    let keepers = client.locate(&[object]).await.intact(&object).to_vec();
    assert!(!keepers.is_empty(), "no node keeps the manifest");
    for &i in &keepers {
        let target = client.nodes()[i].target;
        let answer = client
            .data()
            .lease(&target, std::slice::from_ref(&tampered))
            .await;
        refused(&answer.expect_err("a keeper took a tampered release"));
    }
    let shards = shards_of(&client, &object).await;
    let holders = client.locate(&shards).await;
    let mut asked = 0;
    for (i, node) in client.nodes().iter().enumerate() {
        let held: Vec<Cid> = (shards.iter())
            .filter(|c| holders.intact(c).contains(&i))
            .copied()
            .collect();
        if held.is_empty() {
            continue;
        }
        let answer = client.data().hold(&node.target, &tampered, &held).await;
        refused(&answer.expect_err("a holder applied a tampered release"));
        asked += 1;
    }
    assert!(asked > 0, "no node holds a shard");

    // Past the upload hold and the grace: a release taken would have let GC delete the shards.
    tokio::time::sleep(PAST_THE_UPLOAD_HOLD.saturating_sub(put_at.elapsed())).await;
    assert_eq!(used(&net), with_object, "a tampered release freed shards");
    assert!(reads(&net, &text, 300_000, 3));

    // The same release untampered is taken, and the object goes: the refusal was the signature's.
    for &i in &keepers {
        let target = client.nodes()[i].target;
        let (accepted, why) = client
            .data()
            .lease(&target, &[release.to_bytes()])
            .await
            .unwrap();
        assert_eq!((accepted, why.len()), (1, 0), "{why:?}");
    }
    assert_eq!(wait_used(&net, 0, Duration::from_secs(10)).await, 0);
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shards_no_lease_claims_go_after_their_upload_hold_and_the_grace() {
    let net = lease_net(3).await;
    let client = network(&net).await;
    let before = used(&net);
    let target = client.nodes()[0].target;
    let mut stored = Vec::new();
    for seed in 0..2u64 {
        let data = cairn_testkit::data::bytes(200_000, 100 + seed);
        let cid = cairn_chunker::cids::raw(&data);
        let receipt = client
            .data()
            .store(&target, &cid, Bytes::from(data))
            .await
            .unwrap();
        assert_eq!(
            receipt.end - receipt.start,
            3,
            "the upload hold is --lease-epochs"
        );
        stored.push(cid);
    }
    assert_eq!(used(&net), before + 400_000);
    // Within the upload hold they stay.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        used(&net),
        before + 400_000,
        "collected within the upload hold"
    );
    // After it and the grace they go, and the space with them.
    let left = wait_used(&net, before, Duration::from_secs(14)).await;
    assert_eq!(left, before, "shards no one leased were not collected");
    let held = client.data().has(&target, &stored).await.unwrap();
    assert!(
        held.iter()
            .all(|h| *h == cairn_wire::protocol::Holding::Absent),
        "{held:?}"
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hedges_spare_copy_goes_and_the_leased_copies_stay() {
    let net = lease_net_with(4, &["--repair-interval", "1s"]).await;
    let kept = put(&net, 300_000, 7, "10m");
    let client = network(&net).await;
    let shards = shards_of(&client, &kept.parse().unwrap()).await;
    // A node that does not hold the first shard takes a copy of it, as a hedge that lost the
    // race leaves one: its receipt goes nowhere.
    let (mut spare, mut holder) = (None, None);
    for node in client.nodes() {
        let held = client.data().has(&node.target, &shards[..1]).await.unwrap();
        match held[0] {
            cairn_wire::protocol::Holding::Absent => spare = Some(node.target),
            cairn_wire::protocol::Holding::Intact(_) => holder = Some(node.target),
            _ => {}
        }
    }
    let spare = spare.expect("4 nodes, 3 shards a stripe: one node lacks the first shard");
    let bytes = (client.data())
        .fetch(&holder.unwrap(), &shards[0], None, None)
        .await
        .unwrap();
    client
        .data()
        .store(&spare, &shards[0], bytes)
        .await
        .unwrap();
    // Past the upload hold and the grace, with repair passes (and their lease carrying) every
    // second: the spare copy went, the leased object reads.
    let started = Instant::now();
    loop {
        let held = client.data().has(&spare, &shards[..1]).await.unwrap();
        if held[0] == cairn_wire::protocol::Holding::Absent {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the spare copy was kept: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        started.elapsed() > Duration::from_secs(4),
        "gone within its upload hold"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(reads(&net, &kept, 300_000, 7), "the leased object");
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_carried_at_once_reaches_the_next_holder_when_the_first_is_down() {
    // Repair passes an hour apart: only the keepers' at-once carrying renews anything.
    let mut net = lease_net_with(4, &["--repair-interval", "1h"]).await;
    let cid = put(&net, 300_000, 8, "20s");
    let object: Cid = cid.parse().unwrap();
    let client = network(&net).await;
    let shard = shards_of(&client, &object).await[0];
    let st: Value = serde_json::from_str(&net.ok(&["stat", &cid, "--json"])).unwrap();
    let keepers: Vec<String> = (st["manifest_holders"].as_array().unwrap().iter())
        .map(|h| h.as_str().unwrap().to_string())
        .collect();
    // A second copy of the shard, on a node that lacks it, with its receipt kept by the
    // keepers: the shard now has two holders the keepers know.
    let (mut holder, mut spare) = (None, None);
    for node in client.nodes() {
        match client.data().has(&node.target, &[shard]).await.unwrap()[0] {
            cairn_wire::protocol::Holding::Absent => spare = Some(node.target),
            cairn_wire::protocol::Holding::Intact(_) => holder = Some(node.target),
            _ => {}
        }
    }
    let (holder, spare) = (holder.unwrap(), spare.unwrap());
    let bytes = client
        .data()
        .fetch(&holder, &shard, None, None)
        .await
        .unwrap();
    let receipt = client.data().store(&spare, &shard, bytes).await.unwrap();
    for node in client.nodes() {
        if keepers.contains(&node.peer().to_string()) {
            (client.data())
                .put_receipts(&node.target, &object, &[receipt.to_bytes()])
                .await
                .unwrap();
        }
    }
    // The first of the two in rank goes down; the renewal must reach the other.
    let ids = [holder.peer.to_bytes(), spare.peer.to_bytes()];
    let order = cairn_policy::keeper::ranking(&shard.to_bytes(), &ids);
    let (down, survivor) = if order[0] == 0 {
        (holder, spare)
    } else {
        (spare, holder)
    };
    net.devnet
        .stop_node(net.index_of(&down.peer.to_string()))
        .await;
    net.ok(&["renew", &cid, "--lease", "2m"]);
    // Past the first lease (20 s), the spare's upload hold and the grace: the survivor holds it.
    tokio::time::sleep(Duration::from_secs(26)).await;
    let held = client.data().has(&survivor, &[shard]).await.unwrap();
    assert!(
        matches!(held[0], cairn_wire::protocol::Holding::Intact(_)),
        "the renewal did not reach the next holder: {held:?}"
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_leaves_objects_sharing_its_shards_and_other_owners_leases() {
    let net = lease_net(3).await;
    // The same bytes twice under other metadata: two manifests over the same shards.
    let a = put_as(&net, 400_000, 5, "10m", "text/plain");
    let b = put_as(&net, 400_000, 5, "10m", "application/x-b");
    assert_ne!(a, b);
    // An object the owner leases, and another owner renews too.
    let c = put(&net, 200_000, 6, "10m");
    let put_at = Instant::now();
    let client = network(&net).await;
    assert_eq!(
        shards_of(&client, &a.parse().unwrap()).await,
        shards_of(&client, &b.parse().unwrap()).await,
        "the same bytes are the same shards"
    );
    let other = net.path("other-key");
    let made = net.cairn_as(&other, &["key", "generate"]);
    assert!(made.status.success(), "{made:?}");
    let renewed = net.cairn_as(&other, &["renew", "--lease", "10m", "--json", &c]);
    assert!(renewed.status.success(), "{renewed:?}");
    let all = used(&net);

    net.ok(&["release", &a]);
    net.ok(&["release", &c]);

    // Past the upload holds and the grace: A's manifest is gone, but its shards are B's too,
    // and C is held by the other owner: nothing is freed and both read.
    tokio::time::sleep(PAST_THE_UPLOAD_HOLD.saturating_sub(put_at.elapsed())).await;
    assert!(reads(&net, &b, 400_000, 5), "the object sharing A's shards");
    assert!(
        reads(&net, &c, 200_000, 6),
        "the object another owner renewed"
    );
    assert_eq!(used(&net), all, "a release freed shards someone else holds");
    assert!(
        !reads(&net, &a, 400_000, 5),
        "the released manifest was kept"
    );
    net.stop().await;
}
