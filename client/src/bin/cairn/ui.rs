//! What the commands print: lines on stdout, progress bars and warnings on stderr.

use std::io::IsTerminal;
use std::sync::Arc;

use cairn_client::put::Progress;
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::PeerId;
use serde_json::json;

use crate::cli::Global;

/// Writes a line to stdout; a closed pipe (`cairn ls | head`) ends the program quietly.
pub(crate) fn emit(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("cairn: writing output: {e}");
        std::process::exit(1);
    }
}

/// `println!` through [`emit`].
macro_rules! out {
    ($($t:tt)*) => { $crate::ui::emit(format_args!($($t)*)) };
}
pub(crate) use out;

/// A progress bar of `len` bytes on stderr (hidden with `--json` or when stderr is not a
/// terminal), and the [`Progress`] callback that moves it.
pub(crate) fn progress_bar(g: &Global, len: u64, what: &str) -> (ProgressBar, Progress) {
    let bar = if g.json || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(len);
        b.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(what.to_string());
        b
    };
    let b = bar.clone();
    (bar, Arc::new(move |n| b.inc(n)))
}

/// Nodes that failed along the way, as `--json` lists them.
pub(crate) fn failed_nodes(incidents: &[(PeerId, String)]) -> serde_json::Value {
    incidents
        .iter()
        .map(|(p, w)| json!({"node": p.to_string(), "problem": w}))
        .collect()
}
