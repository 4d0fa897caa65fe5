//! `cairn-sim run SCENARIO.toml [--seed S] [--json] [--out DIR]`: simulates a Cairn network
//! and reports what it lost, what repair cost, how fast adversaries were found and what each
//! kind of node earned; `--out` also writes the charts.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-sim",
    version,
    about = "Simulates a Cairn network with Cairn's own policy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario (sim/scenarios/ has some) and prints its summary.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// The seed every random choice comes from.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print the whole report (summary and a line per day) as JSON.
        #[arg(long)]
        json: bool,
        /// Also write the report (`report.json`), its summary (`summary.txt`) and its charts
        /// (`*.svg`) into this directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let Command::Run {
        scenario,
        seed,
        json,
        out,
    } = Cli::parse().command;
    let text = std::fs::read_to_string(&scenario)
        .with_context(|| format!("reading the scenario {}", scenario.display()))?;
    let s = cairn_sim::Scenario::from_toml(&text)
        .with_context(|| format!("in {} (sim/scenarios/ has examples)", scenario.display()))?;
    let bar = if json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(1000)
    };
    let started = std::time::Instant::now();
    let report = cairn_sim::run(s, seed, |done| bar.set_position((done * 1000.0) as u64));
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let body = serde_json::to_string_pretty(&report)?;
    if let Some(dir) = out {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut files = vec![
            ("report.json".to_string(), body.clone()),
            ("summary.txt".to_string(), report.table()),
        ];
        for (name, chart) in cairn_sim::plot::charts(&report) {
            files.push((name.to_string(), chart.svg()));
        }
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if json {
        println!("{body}");
    } else {
        print!("{}", report.table());
        println!(
            "{:>20}  {:.2} s, {:.0} events per second",
            "took",
            elapsed.as_secs_f64(),
            report.events as f64 / elapsed.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}
