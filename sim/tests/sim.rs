//! The simulator against itself and against closed forms: the same seed gives the same bytes;
//! without repair, stripes survive independent losses as the binomial formula says; repair
//! keeps every object through churn that loses many without it; a lost failure domain costs
//! each stripe at most one shard.

use cairn_sim::{Report, Scenario, run};

fn scenario(file: &str) -> Scenario {
    let path = format!("{}/scenarios/{file}", env!("CARGO_MANIFEST_DIR"));
    Scenario::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn quiet(s: Scenario, seed: u64) -> Report {
    run(s, seed, |_| {})
}

/// A small network for the tests: `days` long.
fn small(extra: &str) -> Scenario {
    let text = format!(
        r#"
name = "small"
days = 120
[network]
nodes = 60
capacity_gib = 4096
labels = 10
[data]
objects = 30
stripes_per_object = 10
shard_mib = 64
k = 4
m = 2
{extra}
"#
    );
    Scenario::from_toml(&text).unwrap()
}

#[test]
fn the_same_seed_gives_the_same_report_byte_for_byte() {
    let churn = "[churn]\noutages_per_node_year = 24.0\noutage_hours = 2.0\nlosses_per_node_year = 1.0\nreplace_lost = true";
    let a = serde_json::to_string(&quiet(small(churn), 42)).unwrap();
    let b = serde_json::to_string(&quiet(small(churn), 42)).unwrap();
    assert_eq!(a, b);
    let c = serde_json::to_string(&quiet(small(churn), 43)).unwrap();
    assert_ne!(a, c, "another seed, another run");
}

/// P(at least k of n independent nodes survive), each with probability p.
fn binomial_survival(k: usize, n: usize, p: f64) -> f64 {
    let choose = |n: usize, j: usize| -> f64 {
        (0..j).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
    };
    (k..=n)
        .map(|j| choose(n, j) * p.powi(j as i32) * (1.0 - p).powi((n - j) as i32))
        .sum()
}

#[test]
fn without_repair_stripes_survive_losses_as_the_binomial_formula_says() {
    // 1,000 nodes, each lost with rate 1.2 a year, for 200 days, nothing replaced or repaired.
    let text = r#"
name = "binomial"
days = 200
[network]
nodes = 1000
capacity_gib = 4096
[data]
objects = 500
stripes_per_object = 6
shard_mib = 1
k = 4
m = 2
[churn]
losses_per_node_year = 1.2
[repair]
enabled = false
"#;
    let r = quiet(Scenario::from_toml(text).unwrap(), 7);
    // Each node survives with p = e^(-1.2 * 200/365); the formula is taken at the share of
    // nodes that did survive in this run, since every stripe shares that one draw (over ten
    // seeds the stripes then scatter around the formula by about one binomial sigma).
    let expected = (-1.2f64 * 200.0 / 365.0).exp();
    let p = r.nodes_end as f64 / r.nodes_start as f64;
    assert!(
        (p - expected).abs() < 0.05,
        "{p} of the nodes survived, {expected} expected"
    );
    let want = binomial_survival(4, 6, p);
    let got = 1.0 - r.stripes_lost as f64 / r.stripes as f64;
    let sigma = (want * (1.0 - want) / r.stripes as f64).sqrt();
    assert!(
        (got - want).abs() < 4.0 * sigma + 0.005,
        "surviving {got:.4}, formula {want:.4} (p {p:.4}, sigma {sigma:.4})"
    );
    assert!(r.stripes_lost > 0 && r.stripes_lost < r.stripes);
}

#[test]
fn repair_keeps_every_object_through_churn_that_loses_many_without_it() {
    let on = quiet(scenario("churn.toml"), 1);
    let off = quiet(scenario("repair-off.toml"), 1);
    assert_eq!(on.objects_lost, 0, "{}", on.table());
    // (Stripes may be unreadable for a while: weekly outages sometimes take three holders of
    // one stripe down at once. They lose nothing.)
    assert!(on.shards_rebuilt > 0);
    assert!(off.objects_lost > on.objects / 4, "{}", off.table());
    assert_eq!(off.shards_rebuilt, 0);
    // A rebuild reads k shards and writes the missing ones (1 or 2 of a 4+2 stripe): from
    // 1 + 4/2 to 1 + 4 bytes moved per byte rebuilt.
    let rebuilt = on.repair_written_bytes as f64;
    let per = (on.repair_read_bytes + on.repair_written_bytes) as f64 / rebuilt;
    assert!((1.0 + 4.0 / 2.0..=5.0).contains(&per), "{per}");
}

#[test]
fn a_lost_failure_domain_costs_each_stripe_one_shard_and_repair_puts_it_back() {
    // The shipped scenario without its outages: only the rack's loss takes shards away.
    let mut s = scenario("domain-loss.toml");
    s.churn.outages_per_node_year = 0.0;
    let r = quiet(s, 3);
    assert_eq!(r.objects_lost, 0, "{}", r.table());
    assert_eq!(r.losses, 20, "every node of rack d0");
    // One shard of a stripe at most went with the rack (12 racks, 6 shards: each on its own).
    assert_eq!(r.fewest_live_shards, r.k + r.m - 1, "{}", r.table());
    assert!(r.shards_rebuilt > 0, "{}", r.table());
    // Each rebuilt shard was one the rack held; every stripe is whole again by the end.
    let end = r.daily.last().unwrap();
    assert_eq!(end.fewest_live_shards, r.k + r.m, "{}", r.table());
    let before = r.daily.iter().find(|d| d.day >= 29.0).unwrap();
    assert_eq!(
        before.repair_bytes, 0,
        "nothing to repair before the rack went"
    );
}

#[test]
fn bad_scenarios_are_refused_with_the_field_named() {
    let cases = [
        ("k = 4\nm = 2", "k = 0\nm = 2", "data.k"),
        ("nodes = 60", "nodes = 5", "network.nodes"),
        ("days = 120", "days = -1", "days"),
    ];
    for (from, to, field) in cases {
        let base = r#"
name = "small"
days = 120
[network]
nodes = 60
capacity_gib = 4096
[data]
objects = 1
stripes_per_object = 1
shard_mib = 1
k = 4
m = 2
"#;
        let err = Scenario::from_toml(&base.replace(from, to))
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "{err}");
    }
    assert!(Scenario::from_toml("name = 1").is_err());
}

#[test]
fn cheaters_fail_audits_as_the_closed_form_says_and_are_all_found() {
    let r = quiet(scenario("cheaters.toml"), 11);
    assert!(r.cheaters > 10, "{}", r.table());
    // Failed audits against the sum of 1-(1-f)^c over cheaters' audits: a sum of independent
    // Bernoulli trials, so within a few of its standard deviations.
    let want = r.audit_failures_expected;
    let sigma = want.sqrt();
    assert!(
        (r.audit_failures as f64 - want).abs() < 4.0 * sigma + 2.0,
        "{} failed, {want:.1} expected",
        r.audit_failures
    );
    assert_eq!(r.honest_faulty, 0, "{}", r.table());
    assert_eq!(r.cheaters_detected, r.cheaters, "{}", r.table());
    // With c = 32 and f = 1 %, an audit fails 27.5 % of the time, three a node an epoch: found
    // within a day.
    assert!(r.detection_epochs_max <= 24, "{}", r.table());
    // Their copies were rebuilt elsewhere, and nothing was lost.
    assert_eq!(r.objects_lost, 0, "{}", r.table());
    assert!(r.shards_rebuilt > 0);
}

#[test]
fn without_cheaters_no_audit_fails() {
    let mut s = scenario("cheaters.toml");
    s.proofs.cheaters = 0.0;
    s.days = 5.0;
    let r = quiet(s, 2);
    assert!(r.audits > 0);
    assert_eq!((r.audit_failures, r.cheaters, r.honest_faulty), (0, 0, 0));
}
