//! The `cairn-sim` binary: `run --json` prints the same bytes for the same seed, `--out` writes
//! them, and a bad scenario is refused with the field named.

use std::process::Command;

fn sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cairn-sim"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn json_runs_replay_byte_for_byte_and_out_writes_the_report() {
    let scenario = format!("{}/scenarios/domain-loss.toml", manifest_dir());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let a = sim(&[
        "run",
        &scenario,
        "--seed",
        "5",
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = sim(&["run", &scenario, "--seed", "5", "--json"]);
    assert_eq!(a.stdout, b.stdout);
    let written = std::fs::read(out.join("report.json")).unwrap();
    assert_eq!(written, a.stdout.strip_suffix(b"\n").unwrap());
    let report: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(report["seed"], 5);
    assert_eq!(report["losses"], 20);
    // The table names what a provider asks first.
    let t = sim(&["run", &scenario]);
    let table = String::from_utf8(t.stdout).unwrap();
    assert!(
        table.contains("objects lost") && table.contains("repair traffic"),
        "{table}"
    );
}

#[test]
fn a_bad_scenario_is_refused_with_the_field_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "name = \"x\"\ndays = 1\n[network]\nnodes = 3\ncapacity_gib = 1\n[data]\nobjects = 1\n\
         stripes_per_object = 1\nshard_mib = 1\nk = 4\nm = 2\n",
    )
    .unwrap();
    let out = sim(&["run", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("network.nodes") && err.contains("bad.toml"),
        "{err}"
    );
}

#[test]
fn out_writes_a_summary_and_a_chart_for_each_measure_with_earnings_by_kind() {
    let scenario = format!("{}/scenarios/cheaters.toml", manifest_dir());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let run = sim(&["run", &scenario, "--out", out.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert!(
        summary.contains("fetcher") && summary.contains("earned/disk"),
        "{summary}"
    );
    for name in [
        "durability.svg",
        "live-shards.svg",
        "repair.svg",
        "nodes.svg",
        "earnings.svg",
    ] {
        let svg = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.ends_with("</svg>\n"),
            "{name}"
        );
        assert!(svg.contains("<polyline"), "{name}");
    }
    // One line per kind of node: honest and the scenario's five adversaries.
    let earnings = std::fs::read_to_string(out.join("earnings.svg")).unwrap();
    assert_eq!(earnings.matches("<polyline").count(), 6);
    for kind in ["honest", "deleter", "late", "dark", "fetcher", "sybil"] {
        assert!(earnings.contains(&format!(">{kind}</text>")), "{kind}");
    }
}

/// This package's directory, as cargo says when it runs the test (a build shared between
/// checkouts in different places must not point into another one).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}
