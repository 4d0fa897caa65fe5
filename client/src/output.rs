//! Writing verified bytes to a file or a pipe.
//!
//! A read hands on its bytes as each 16 KiB group is verified. Writing each group through an
//! async file (`tokio::fs::File`) costs a hop to a blocking thread and back per group: 65,536
//! thread wake-ups per GiB, which on a VM cost more CPU than the writes themselves. A
//! [`FileSink`] gathers groups into batches of [`BATCH`] bytes (without copying them) and hands
//! each batch to one writer thread, which writes it with a single vectored write where it can.

use std::io::{IoSlice, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{ClientError, Output, task, writing};
use crate::get::Sink;

/// Bytes gathered before a batch goes to the writer thread.
pub const BATCH: usize = 1 << 20;
/// Batches queued for the writer thread before the read waits for it (bounds memory to about
/// `BATCHES_QUEUED * BATCH` bytes when the disk is slower than the network).
pub const BATCHES_QUEUED: usize = 8;

/// Where a read of `target` is written until it is complete and verified: a hidden file beside
/// it, `.NAME.TAG.cairn-partial`, renamed over `target` at the end. The whole name is kept, so
/// `a.bin` and `a.txt` read at the same time do not share one, and `TAG` differs on every call
/// and cannot be guessed, so a dataset entry cannot be named like another entry's temporary
/// file (which would be truncated, or renamed over before it was verified). Create it with
/// [`create_partial`], which never opens an existing file.
pub fn partial_path(target: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut name = target
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    // Room for the dot, the tag and the suffix within a 255-byte file name.
    let mut end = name.len().min(200);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name.truncate(end);
    let mut tag = blake3::Hasher::new();
    tag.update(&std::process::id().to_le_bytes());
    tag.update(&CALLS.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    tag.update(&now.as_nanos().to_le_bytes());
    let tag = tag.finalize().to_hex();
    target.with_file_name(format!(".{name}.{}.cairn-partial", &tag[..16]))
}

/// Creates the temporary file `path` (from [`partial_path`]); fails if anything is there.
pub fn create_partial(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// A [`Sink`] writing to `W` (a file, or stdout) from a thread of its own.
#[derive(Debug)]
pub struct FileSink<W> {
    batch: Vec<Bytes>,
    batched: usize,
    tx: Option<mpsc::Sender<Vec<Bytes>>>,
    /// The writer thread, until it has been joined.
    thread: Option<JoinHandle<std::io::Result<W>>>,
    /// Where the bytes go, for errors.
    to: Output,
}

impl<W: Write + Send + 'static> FileSink<W> {
    /// Starts the writer thread. Call from within a tokio runtime. `to` is where `w` writes,
    /// for errors.
    pub fn new(mut w: W, to: Output) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<Bytes>>(BATCHES_QUEUED);
        let thread = tokio::task::spawn_blocking(move || {
            while let Some(batch) = rx.blocking_recv() {
                write_batch(&mut w, &batch)?;
            }
            w.flush()?;
            Ok(w)
        });
        FileSink {
            batch: Vec::new(),
            batched: 0,
            tx: Some(tx),
            thread: Some(thread),
            to,
        }
    }

    /// Joins the writer thread (once; later calls report that it stopped).
    async fn join(&mut self) -> Result<W, ClientError> {
        let to = self.to.clone();
        match self.thread.take() {
            Some(thread) => match thread.await {
                Ok(r) => r.map_err(writing(to)),
                Err(e) => Err(task("the output writer")(e)),
            },
            None => Err(writing(to)(std::io::Error::other("the writer has stopped"))),
        }
    }

    async fn send_batch(&mut self) -> Result<(), ClientError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        let sent = match &self.tx {
            Some(tx) => tx.send(batch).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The thread stopped: it failed, and says why when joined.
        self.tx = None;
        match self.join().await {
            Ok(_) => Err(writing(self.to.clone())(std::io::Error::other(
                "the writer stopped early",
            ))),
            Err(e) => Err(e),
        }
    }

    /// Writes what is left, flushes, and returns the writer (to `sync_all` a file, say).
    pub async fn finish(mut self) -> Result<W, ClientError> {
        self.send_batch().await?;
        self.tx = None;
        self.join().await
    }
}

impl<W: Write + Send + 'static> Sink for FileSink<W> {
    async fn put(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.batched += bytes.len();
        self.batch.push(bytes);
        if self.batched >= BATCH {
            self.send_batch().await?;
        }
        Ok(())
    }
}

/// Writes every buffer of `batch`, in order, with as few (vectored) writes as `w` allows.
fn write_batch(w: &mut impl Write, batch: &[Bytes]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match w.write_vectored(rest) {
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    "the output took no more bytes",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `max` bytes per call, to exercise partial vectored writes.
    #[derive(Debug)]
    struct Trickle {
        out: Vec<u8>,
        max: usize,
        fail_after: Option<usize>,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }
        /// Takes up to `max` bytes across several buffers, so writes end part-way through one.
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> std::io::Result<usize> {
            if self.fail_after.is_some_and(|f| self.out.len() >= f) {
                return Err(std::io::Error::other("disk on fire"));
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                if n == self.max {
                    break;
                }
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn pieces(total: usize) -> (Vec<u8>, Vec<Bytes>) {
        let data: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut out = Vec::new();
        let mut at = 0;
        let mut step = 1;
        while at < total {
            let end = (at + step).min(total);
            out.push(Bytes::copy_from_slice(&data[at..end]));
            at = end;
            step = step * 3 % 40_000 + 1;
        }
        (data, out)
    }

    #[tokio::test]
    async fn writes_every_byte_in_order_through_partial_writes() {
        let (data, chunks) = pieces(5 * BATCH + 12_345);
        let mut sink = FileSink::new(
            Trickle {
                out: Vec::new(),
                max: 100_007,
                fail_after: None,
            },
            Output::Stream("a test"),
        );
        for c in chunks {
            sink.put(c).await.unwrap();
        }
        let w = sink.finish().await.unwrap();
        assert_eq!(w.out.len(), data.len());
        assert!(w.out == data, "bytes differ");
    }

    #[tokio::test]
    async fn a_failing_writer_fails_the_read_with_its_error() {
        let (_, chunks) = pieces(40 * BATCH);
        let mut sink = FileSink::new(
            Trickle {
                out: Vec::new(),
                max: usize::MAX,
                fail_after: Some(3 * BATCH),
            },
            Output::Stream("a test"),
        );
        let mut failed = None;
        for c in chunks {
            if let Err(e) = sink.put(c).await {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => sink.finish().await.unwrap_err(),
        };
        match &e {
            ClientError::Write { to, source } => {
                assert_eq!(*to, Output::Stream("a test"));
                assert_eq!(source.to_string(), "disk on fire");
            }
            other => panic!("not a write error: {other:?}"),
        }
        assert_eq!(e.to_string(), "writing a test: disk on fire");
    }

    #[test]
    fn partial_files_keep_the_whole_name_and_never_repeat() {
        let p = partial_path(Path::new("d/a.bin"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(p.parent(), Some(Path::new("d")));
        assert!(
            name.starts_with(".a.bin.") && name.ends_with(".cairn-partial"),
            "{name}"
        );
        assert_ne!(p, partial_path(Path::new("d/a.bin")));
        let a = partial_path(Path::new("a"));
        assert!(a.to_str().unwrap().starts_with(".a."), "{a:?}");
        // A name near the 255-byte limit still leaves room for the tag (cut on a character).
        let long = "\u{e9}".repeat(127);
        let p = partial_path(Path::new(&long));
        assert!(p.as_os_str().len() <= 255, "{}", p.as_os_str().len());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(&long), b"x").unwrap();
        create_partial(&dir.path().join(partial_path(Path::new(&long)))).unwrap();
    }

    #[test]
    fn a_partial_file_never_opens_what_is_already_there() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"someone else's").unwrap();
        let e = create_partial(&p).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"someone else's");
    }
}
