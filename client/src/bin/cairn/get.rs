//! `cairn get`: an object to a file, a device, a pipe or stdout; a dataset to a directory.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_chunker::manifest::ObjectManifest;
use cairn_client::error::ClientError;
use cairn_client::error::Output;
use cairn_client::get::{Incidents, Manifest, Sink, fetch_manifest, read_dataset, read_object_to};
use cairn_client::network::Network;
use cairn_client::output::FileSink;
use cairn_client::put::Progress;
use serde_json::json;

use crate::Partial;
use crate::cli::{Global, parse_cid};
use crate::ui::{failed_nodes, out, progress_bar};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Object or dataset CID.
    cid: String,
    /// Output file or directory (default: ./<CID>); `-` writes an object to stdout.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Overwrite an existing output.
    #[arg(long)]
    force: bool,
    /// Only bytes START-END (inclusive, like HTTP ranges) of an object.
    #[arg(long)]
    range: Option<String>,
    /// Give up once the get has waited this long on the network in all, e.g. 90s, 30m, 2h
    /// (time an object's output takes to accept its bytes does not count). Default: 2 minutes
    /// for the manifest, then 2 minutes plus 1 second per MiB for the bytes.
    #[arg(long, value_parser = cairn_client::lease::parse_duration)]
    timeout: Option<Duration>,
}

/// The default budget of a read: this, plus a second per [`MIN_RATE`] bytes.
const BASE_BUDGET: Duration = Duration::from_secs(120);
/// The slowest a read may go, on average, within its default budget (bytes a second).
const MIN_RATE: u64 = 1 << 20;

/// How long a read of `len` bytes may wait on the network by default.
fn budget(len: u64) -> Duration {
    BASE_BUDGET + Duration::from_secs(len / MIN_RATE)
}

/// Runs `read` until it ends or has used its `budget`: the time since it started, less the
/// time `output` (nanoseconds) says was spent waiting on the output. Each fetch is bounded on
/// its own, but a node that trickles bytes just fast enough to stay out of every stall check
/// could otherwise hold a read for ever.
async fn within<T>(
    budget: Duration,
    output: &AtomicU64,
    whose: &str,
    read: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    tokio::pin!(read);
    loop {
        let used = started
            .elapsed()
            .saturating_sub(Duration::from_nanos(output.load(Ordering::Relaxed)));
        let Some(left) = budget.checked_sub(used).filter(|l| !l.is_zero()) else {
            bail!(
                "the get gave up after waiting {} on the network ({whose}): a node may be \
                 sending very slowly. Run it again (it asks other nodes first), or pass a longer \
                 --timeout",
                human_secs(budget)
            );
        };
        tokio::select! {
            done = &mut read => return done,
            _ = tokio::time::sleep(left) => {}
        }
    }
}

fn human_secs(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..120 => format!("{s} s"),
        120..7200 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// A sink that counts the time spent waiting on it.
struct Timed<'a, S> {
    inner: &'a mut S,
    waited: &'a AtomicU64,
}

impl<S: Sink> Sink for Timed<'_, S> {
    async fn put(&mut self, bytes: bytes::Bytes) -> Result<(), ClientError> {
        let t = Instant::now();
        let done = self.inner.put(bytes).await;
        self.waited
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        done
    }
}

pub(crate) async fn run(g: &Global, args: &Args, partial: &Partial) -> anyhow::Result<()> {
    let cid = parse_cid(&args.cid)?;
    let net = g.network().await?;
    // One deadline for the whole get when --timeout gives one; else the manifest has
    // BASE_BUDGET and the bytes a budget by their size.
    let started = Instant::now();
    let (whose, rest) = match args.timeout {
        Some(_) => ("its --timeout", "its --timeout"),
        None => (
            "the manifest's budget of 2 minutes",
            "its budget of 2 minutes plus a second per MiB",
        ),
    };
    let left = |len: u64| match args.timeout {
        Some(t) => t.saturating_sub(started.elapsed()),
        None => budget(len),
    };
    let fetching = async { Ok(fetch_manifest(&net, &cid).await?) };
    let fetched = within(left(0), &AtomicU64::new(0), whose, fetching).await?;
    let incidents = Incidents::default();
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(cid.to_string()));
    let written = match &fetched.manifest {
        Manifest::Object(m) => {
            let range = match &args.range {
                None => None,
                Some(r) => Some(parse_range(r, m.size)?),
            };
            let len = range.as_ref().map_or(m.size, |r| r.end - r.start);
            let (bar, progress) = progress_bar(g, len, "downloading");
            let read = Read {
                net: &net,
                manifest: m,
                range,
                progress,
                incidents: &incidents,
                budget: left(len),
                whose: rest,
                output: Arc::new(AtomicU64::new(0)),
            };
            let n = if out == Path::new("-") {
                read.into_stdout().await?
            } else if is_device_or_pipe(&out) {
                read.into_device(&out).await?
            } else {
                if out.exists() && !args.force {
                    bail!(exists(&out));
                }
                read.into_file(&out, partial).await?
            };
            bar.finish_and_clear();
            n
        }
        Manifest::Dataset(d) => {
            if args.range.is_some() {
                bail!("--range applies to objects; {cid} is a dataset");
            }
            if out.exists() && !args.force {
                bail!(exists(&out));
            }
            let total = d.entries.values().map(|e| e.size).sum();
            let (bar, progress) = progress_bar(g, total, "downloading");
            let reading = async { Ok(read_dataset(&net, d, &out, progress, &incidents).await?) };
            let n = within(left(total), &AtomicU64::new(0), rest, reading).await?;
            bar.finish_and_clear();
            n
        }
    };
    let incidents: Vec<_> = fetched
        .incidents
        .into_iter()
        .chain(incidents.list())
        .collect();
    for (peer, what) in &incidents {
        eprintln!("warning: node {peer} failed: {what}");
    }
    if g.json {
        out!(
            "{}",
            json!({"cid": cid.to_string(), "output": out, "bytes": written, "failed_nodes": failed_nodes(&incidents)})
        );
    } else if out != Path::new("-") {
        eprintln!("wrote {written} bytes to {} (verified)", out.display());
    }
    Ok(())
}

fn exists(out: &Path) -> String {
    format!("{} exists: pass --force to overwrite it", out.display())
}

/// An object read, before it is told where to go.
struct Read<'a> {
    net: &'a Network,
    manifest: &'a ObjectManifest,
    range: Option<std::ops::Range<u64>>,
    progress: Progress,
    incidents: &'a Incidents,
    /// How long it may wait on the network ([`within`]), and whose budget that is.
    budget: Duration,
    whose: &'a str,
    /// Nanoseconds spent waiting on the output.
    output: Arc<AtomicU64>,
}

impl Read<'_> {
    async fn into_sink<W: std::io::Write + Send + 'static>(
        self,
        sink: &mut FileSink<W>,
    ) -> anyhow::Result<u64> {
        let mut timed = Timed {
            inner: sink,
            waited: &self.output,
        };
        let reading = async {
            Ok(read_object_to(
                self.net,
                self.manifest,
                self.range,
                &mut timed,
                self.progress,
                self.incidents,
            )
            .await?)
        };
        within(self.budget, &self.output, self.whose, reading).await
    }

    /// `-o -`: raw writes to fd 1 (no line buffering), batched by the sink.
    async fn into_stdout(self) -> anyhow::Result<u64> {
        let stdout = std::io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .context("cannot write to stdout")?;
        let mut sink = FileSink::new(std::fs::File::from(stdout), Output::Stdout);
        let n = self.into_sink(&mut sink).await?;
        sink.finish().await?;
        Ok(n)
    }

    /// `-o /dev/null`, a FIFO: nothing to replace, so no --force and no temporary file.
    async fn into_device(self, out: &Path) -> anyhow::Result<u64> {
        // A FIFO's open waits for its reader: off the runtime's threads.
        let path = out.to_path_buf();
        let file =
            tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(path))
                .await?
                .with_context(|| format!("cannot open {}", out.display()))?;
        let mut sink = FileSink::new(file, Output::File(out.to_path_buf()));
        let n = self.into_sink(&mut sink).await?;
        sink.finish().await?;
        Ok(n)
    }

    /// A file: written beside `out` and renamed over it once complete and synced, so an
    /// interrupted or failed read leaves nothing (the temporary file is in `partial` until
    /// then, for Ctrl-C and errors to remove).
    async fn into_file(self, out: &Path, partial: &Partial) -> anyhow::Result<u64> {
        let tmp = cairn_client::output::partial_path(out);
        *partial.lock().unwrap_or_else(|p| p.into_inner()) = Some(tmp.clone());
        let file = cairn_client::output::create_partial(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut sink = FileSink::new(file, Output::File(out.to_path_buf()));
        let n = self.into_sink(&mut sink).await?;
        let file = sink.finish().await?;
        tokio::task::spawn_blocking(move || file.sync_all())
            .await?
            .with_context(|| format!("syncing {}", tmp.display()))?;
        tokio::fs::rename(&tmp, out)
            .await
            .with_context(|| format!("renaming {} to {}", tmp.display(), out.display()))?;
        partial.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(n)
    }
}

/// Whether `path` is a character device or a FIFO (`/dev/null`, a named pipe), which a get
/// writes into as it is rather than replacing.
fn is_device_or_pipe(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| {
        let t = m.file_type();
        t.is_char_device() || t.is_fifo()
    })
}

/// `START-END` (inclusive), `START-` or `-SUFFIX`, as HTTP ranges.
fn parse_range(text: &str, size: u64) -> anyhow::Result<std::ops::Range<u64>> {
    let bad = || {
        anyhow::anyhow!(
            "--range {text:?}: use START-END (inclusive), START- or -LAST_N within {size} bytes"
        )
    };
    let (a, b) = text.split_once('-').ok_or_else(bad)?;
    let range = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| bad())?;
            size.saturating_sub(n)..size
        }
        (a, "") => a.parse::<u64>().map_err(|_| bad())?..size,
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
            a..b.saturating_add(1).min(size)
        }
    };
    if range.start >= range.end {
        return Err(bad());
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_gives_up_at_its_budget_not_counting_time_on_the_output() {
        // A read that never ends: given up at its budget.
        let none = AtomicU64::new(0);
        let t = Instant::now();
        let e = within::<()>(
            Duration::from_millis(200),
            &none,
            "x",
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert!(e.to_string().contains("--timeout"), "{e}");
        // Time the output took is not the network's: with 3 s of it, a read of 2.1 s in all
        // stays within a budget of 1 s.
        let output = AtomicU64::new(0);
        let read = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            output.fetch_add(3_000_000_000, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(7)
        };
        assert_eq!(
            within(Duration::from_secs(1), &output, "x", read)
                .await
                .unwrap(),
            7
        );
        // The default: two minutes and a second per MiB.
        assert_eq!(budget(1 << 30), Duration::from_secs(120 + 1024));
    }

    #[test]
    fn ranges_read_as_http_ranges() {
        assert_eq!(parse_range("0-9", 100).unwrap(), 0..10);
        assert_eq!(parse_range("90-", 100).unwrap(), 90..100);
        assert_eq!(parse_range("-10", 100).unwrap(), 90..100);
        assert_eq!(parse_range("95-200", 100).unwrap(), 95..100);
        for bad in ["", "5", "a-b", "10-5", "100-", "-0"] {
            assert!(parse_range(bad, 100).is_err(), "{bad:?}");
        }
    }
}
