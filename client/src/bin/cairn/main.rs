//! `cairn`: the Cairn command-line tool.
//!
//! [`cli`] has the flags and commands, each command its own module; [`errors`] words what
//! failed, [`ui`] prints.

// Doc comments on the clap types are the terminal's `--help` text, where `<peer id>` is a
// placeholder, not an HTML tag.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command};

mod audit;
mod cid;
mod cli;
mod devnet;
mod errors;
mod get;
mod key;
mod lease;
mod ls;
mod nodes;
mod proofs;
mod publish;
mod put;
mod stat;
mod ui;
mod verify;

/// Where a partial download lives until it is complete, so Ctrl-C can remove it.
type Partial = Arc<Mutex<Option<PathBuf>>>;

async fn run(cli: Cli, partial: Partial) -> anyhow::Result<()> {
    let g = &cli.global;
    match &cli.command {
        Command::Key(args) => key::run(g, args),
        Command::Put(args) => put::run(g, args).await,
        Command::Get(args) => get::run(g, args, &partial).await,
        Command::Ls(args) => ls::run(g, args).await,
        Command::Stat(args) => stat::run(g, args).await,
        Command::Nodes => nodes::run(g).await,
        Command::Verify(args) => verify::run(g, args).await,
        Command::Proofs(args) => proofs::run(g, args).await,
        Command::Audit(args) => audit::run(g, args).await,
        Command::Renew(args) => lease::renew(g, args).await,
        Command::Release(args) => lease::release(g, args).await,
        Command::Cid(args) => cid::run(g, args).await,
        Command::Devnet(args) => devnet::run(g, args).await,
    }
}

/// Removes the partial download, if one was being written.
fn remove_partial(partial: &Partial) {
    if let Some(p) = partial.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = std::fs::remove_file(p);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cairn: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let partial: Partial = Arc::new(Mutex::new(None));
    let is_devnet = matches!(cli.command, Command::Devnet { .. });
    let result = rt.block_on(async {
        if is_devnet {
            // The devnet handles Ctrl-C itself, to stop its nodes.
            return Some(run(cli, partial.clone()).await);
        }
        tokio::select! {
            r = run(cli, partial.clone()) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    // A blocking thread stuck in a system call (a FIFO nobody opens) must not keep an
    // interrupted command from exiting.
    rt.shutdown_timeout(Duration::from_millis(500));
    match result {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            remove_partial(&partial);
            if errors::output_closed(&e) {
                // `cairn get CID -o - | head -c 100`: the reader has what it wanted.
                return ExitCode::SUCCESS;
            }
            eprintln!("cairn: error: {}", errors::render(&e));
            ExitCode::FAILURE
        }
        None => {
            remove_partial(&partial);
            eprintln!("cairn: interrupted");
            ExitCode::from(130)
        }
    }
}
