//! The simulator against itself and against closed forms: the same seed gives the same bytes;
//! without repair, stripes survive independent losses as the binomial formula says; repair
//! keeps every object through churn that loses many without it; a lost failure domain costs
//! each stripe at most one shard.

use cairn_sim::scenario::Adversary;
use cairn_sim::{Report, Scenario, run};

fn scenario(file: &str) -> Scenario {
    let path = format!("{}/scenarios/{file}", manifest_dir());
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
    // Everything else that draws: adversaries and audits, rot, bandwidth, uploads over time.
    let mut s = scenario("cheaters.toml");
    s.days = 6.0;
    s.churn.bitrot_per_tib_year = 0.2;
    s.network.bandwidth_mib_s = 8;
    s.data.upload_days = 3.0;
    let a = serde_json::to_string(&quiet(s.clone(), 9)).unwrap();
    let b = serde_json::to_string(&quiet(s, 9)).unwrap();
    assert_eq!(a, b);
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
    // Keepers on lost disks were replaced: every manifest kept its copies.
    assert!(on.manifest_copies_made > 0, "{}", on.table());
    assert_eq!(on.manifests_lost, 0, "{}", on.table());
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

fn kind<'a>(r: &'a Report, name: &str) -> &'a cairn_sim::report::Kind {
    r.kinds
        .iter()
        .find(|k| k.name == name)
        .unwrap_or_else(|| panic!("no {name} in\n{}", r.table()))
}

#[test]
fn deleters_fail_audits_as_the_closed_form_says_and_are_all_found() {
    let r = quiet(scenario("cheaters.toml"), 11);
    let deleters = kind(&r, "deleter");
    assert!(deleters.nodes >= 5, "{}", r.table());
    // Failed audits against the sum of 1-(1-f)^c over deleters' audits: a sum of independent
    // Bernoulli trials, so within a few of its standard deviations.
    let want = r.audit_failures_expected;
    let sigma = want.sqrt();
    assert!(
        want > 100.0 && (r.audit_failures as f64 - want).abs() < 4.0 * sigma + 2.0,
        "{} failed, {want:.1} expected",
        r.audit_failures
    );
    assert_eq!(r.honest_faulty, 0, "{}", r.table());
    assert_eq!(deleters.detected, deleters.nodes, "{}", r.table());
    // With c = 32 and f = 1 %, an audit fails 27.5 % of the time, three a node an epoch: found
    // within a day.
    assert!(deleters.detection_epochs_max <= 24, "{}", r.table());
    // Late answerers run out of misses and are found too; dark nodes are offline, which is no
    // fault.
    assert_eq!(
        kind(&r, "late").detected,
        kind(&r, "late").nodes,
        "{}",
        r.table()
    );
    assert_eq!(kind(&r, "dark").detected, 0, "{}", r.table());
    // Their copies were rebuilt elsewhere, and nothing was lost.
    assert_eq!(r.objects_lost, 0, "{}", r.table());
    assert!(r.shards_rebuilt > 0);
}

#[test]
fn cheating_does_not_pay_for_any_kind_of_adversary_in_the_shipped_scenario() {
    let r = quiet(scenario("cheaters.toml"), 1);
    let honest = kind(&r, "honest").earnings_per_disk;
    assert!(honest > 0.0, "an honest node earns\n{}", r.table());
    for k in r.kinds.iter().filter(|k| k.name != "honest") {
        assert!(
            !k.pays && k.earnings_per_disk < honest,
            "a {} earned {:.2} a disk, an honest node {honest:.2}\n{}",
            k.name,
            k.earnings_per_disk,
            r.table()
        );
    }
    assert_eq!(r.kinds.len(), 6, "{}", r.table());
}

#[test]
fn a_fetcher_pays_when_nothing_is_degraded_unless_the_deadline_is_shorter_than_its_fetching() {
    // No outages, and few enough fetchers that no stripe loses k shards to them: every stripe
    // can always be read, so a fetcher that stores nothing answers every audit with chunks
    // fetched from the other shards, in time. (Where fetchers are many, stripes they share
    // are lost, and the audits that land on them fail.)
    let mut s = scenario("cheaters.toml");
    s.churn.outages_per_node_year = 0.0;
    s.days = 10.0;
    s.proofs.adversaries = vec![Adversary::Fetcher {
        nodes: 0.02,
        deleted: 1.0,
        fetch_seconds: 2.0,
    }];
    let r = quiet(s.clone(), 5);
    assert_eq!(r.objects_lost, 0, "{}", r.table());
    let f = kind(&r, "fetcher");
    assert_eq!(f.detected, 0, "{}", r.table());
    assert!(f.pays, "{}", r.table());
    assert!(f.disk_tib_months < 0.01, "it stores nothing\n{}", r.table());
    // With answers due within 1.5 s (honest nodes answer in 0.2 s on average here), fetching
    // makes every answer it must fetch for late: it runs out of misses and is found.
    s.proofs.deadline_seconds = 1.5;
    s.proofs.answer_seconds = 0.2;
    let r = quiet(s, 5);
    let f = kind(&r, "fetcher");
    assert_eq!(f.detected, f.nodes, "{}", r.table());
    assert!(!f.pays, "{}", r.table());
}

#[test]
fn old_copies_are_collected_when_their_lease_ends_and_kept_without_one() {
    let churn = "[churn]\noutages_per_node_year = 24.0\noutage_hours = 2.0";
    let r = quiet(small(churn), 4);
    assert!(r.shards_rebuilt > 0, "{}", r.table());
    // Every rebuild around a node that came back leaves an old copy to collect; a few are
    // still within their lease at the end, and one whose replacement went silent is kept.
    assert!(
        r.copies_collected > r.shards_rebuilt / 2 && r.copies_collected <= r.shards_rebuilt,
        "{}",
        r.table()
    );
    let mut s = small(churn);
    s.leases.term_hours = 1e6;
    let kept = quiet(s, 4);
    assert_eq!(kept.copies_collected, 0, "{}", kept.table());
}

#[test]
fn without_adversaries_no_audit_fails_and_no_one_is_faulty() {
    let mut s = scenario("cheaters.toml");
    s.proofs.adversaries.clear();
    s.days = 5.0;
    let r = quiet(s, 2);
    assert!(r.audits > 0);
    assert_eq!((r.audit_failures, r.honest_faulty), (0, 0));
    assert_eq!(r.verdicts.get("fault"), None, "{}", r.table());
    assert_eq!(r.kinds.len(), 1, "{}", r.table());
}

#[test]
fn rot_is_found_by_the_scrub_and_rebuilt_and_audits_that_meet_it_first_fail() {
    let text = |scrub: f64| {
        format!(
            "[churn]\nbitrot_per_tib_year = 5000.0\nscrub_mib_s = {scrub}\n\
             [proofs]\nenabled = true\nhonest_sample = 10"
        )
    };
    // Small disks, so the few GiB stored are a fair share of each and rot strikes them.
    let mut s = small(&text(32.0));
    s.days = 60.0;
    s.network.capacity_gib = 8;
    let r = quiet(s.clone(), 8);
    assert!(r.copies_rotted > 20, "{}", r.table());
    // Every rotten copy is found by the scrub within a pass (a few hours here) unless a
    // rebuild or the end comes first; each is rebuilt elsewhere, and nothing is lost.
    assert!(r.rot_found * 10 >= r.copies_rotted * 8, "{}", r.table());
    assert!(r.shards_rebuilt >= r.rot_found, "{}", r.table());
    assert_eq!(r.objects_lost, 0, "{}", r.table());
    // A scrub a hundred times slower leaves rot on disk for longer: more audits meet it first
    // (the node then quarantines it and declares it in its next commitment).
    let mut slow = small(&text(0.32));
    slow.days = 60.0;
    slow.network.capacity_gib = 8;
    let slow = quiet(slow, 8);
    assert!(
        slow.audits_failed_on_rot > r.audits_failed_on_rot.max(1) * 5,
        "{} audits failed on rot with a slow scrub, {} with the default",
        slow.audits_failed_on_rot,
        r.audits_failed_on_rot
    );
}

#[test]
fn a_node_short_of_bandwidth_puts_rebuilds_off_without_losing_them() {
    let churn = "[churn]\noutages_per_node_year = 24.0\noutage_hours = 8.0\nlosses_per_node_year = 1.0\nreplace_lost = true";
    let mut s = small(churn);
    s.data.shard_mib = 1024;
    let free = quiet(s.clone(), 6);
    assert_eq!(free.rebuilds_short_of_bandwidth, 0, "{}", free.table());
    // At 1 MiB/s a node sends (and, apart, takes) 3.5 GiB an hour: three 1 GiB shards a
    // pass, and a lost node leaves dozens to rebuild.
    s.network.bandwidth_mib_s = 1;
    let r = quiet(s, 6);
    assert!(r.rebuilds_short_of_bandwidth > 0, "{}", r.table());
    assert_eq!(r.objects_lost, 0, "{}", r.table());
    assert!(
        r.shards_rebuilt * 10 >= free.shards_rebuilt * 8,
        "{}",
        r.table()
    );
}

#[test]
fn objects_uploaded_over_time_arrive_at_an_even_pace() {
    let mut s = small("");
    s.data.upload_days = 60.0;
    let r = quiet(s, 3);
    let at = |day: f64| r.daily.iter().find(|d| d.day >= day).unwrap().stripes;
    assert_eq!(r.stripes, 300);
    assert!((140..=160).contains(&at(30.0)), "{}", at(30.0));
    assert_eq!(at(61.0), 300);
}

/// This package's directory, as cargo says when it runs the test (a build shared between
/// checkouts in different places must not point into another one).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}
