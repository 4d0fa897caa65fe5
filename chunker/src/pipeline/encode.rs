//! The [`Encoder`]: starts the reader and worker threads, hands out their stripes in object
//! order and builds the manifest.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use bytes::Bytes;

use super::hashing::{BlockHashes, CvStack};
use super::pool::Pool;
use super::reader::{Source, read_stripes};
use super::worker::{Job, worker};
use super::{EncodeError, EncodeParams, EncodedStripe};
use crate::chunking::Chunking;
use crate::manifest::{self, ObjectManifest, Stripe};

pub(super) enum Msg {
    Stripe(EncodedStripe, BlockHashes),
    Done {
        stripes: u64,
        size: u64,
        /// The object hash, when the reader computed it (else the workers' blocks give it).
        hash: Option<blake3::Hash>,
        inline: Option<Vec<u8>>,
    },
    Failed(EncodeError),
}

/// What the reader reported when the input ended.
struct Finished {
    stripes: u64,
    size: u64,
    hash: Option<blake3::Hash>,
    inline: Option<Vec<u8>>,
}

/// The encode pipeline: an iterator of [`EncodedStripe`]s in object order, then
/// [`Encoder::finish`] for the manifest.
///
/// Dropping the encoder stops its threads once their current step ends (a reader blocked in
/// `read` is left to return on its own).
pub struct Encoder {
    rx: Receiver<Msg>,
    pending: BTreeMap<u64, (EncodedStripe, BlockHashes)>,
    next: u64,
    done: Option<Finished>,
    cvs: CvStack,
    stripes: Vec<Stripe>,
    params: EncodeParams,
    failed: bool,
    threads: Vec<JoinHandle<()>>,
    /// Returns a credit to the reader for each stripe handed out in order; `None` when
    /// everything was encoded on the caller's thread.
    credits: Option<SyncSender<()>>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Starts encoding everything `reader` yields.
    pub fn new<R: Read + Send + 'static>(
        reader: R,
        params: EncodeParams,
    ) -> Result<Self, EncodeError> {
        Self::start(Source::Reader(Box::new(reader)), params)
    }

    /// Starts encoding bytes already in memory, without copying them: data shards are slices
    /// of `bytes`.
    pub fn from_bytes(bytes: Bytes, params: EncodeParams) -> Result<Self, EncodeError> {
        Self::start(Source::Bytes(bytes), params)
    }

    fn start(source: Source, params: EncodeParams) -> Result<Self, EncodeError> {
        params.validate()?;
        let stripe = u64::from(params.erasure.k) * u64::from(params.erasure.shard_size);
        if let Source::Bytes(b) = &source
            && b.len() as u64 <= stripe
            && params.chunking == Chunking::Fixed
        {
            return Self::start_here(source, params);
        }
        let workers = params.threads.clamp(1, 64);
        let (job_tx, job_rx) = sync_channel::<Job>(1);
        let (out_tx, out_rx) = sync_channel::<Msg>(workers);
        let job_rx = Arc::new(Mutex::new(job_rx));
        // Stripes in flight: one queued, one per worker, the output queue and the reorder
        // buffer. The reader takes a credit for every stripe it sends and gets it back only
        // when the stripe leaves the encoder in order, so a stalled worker cannot let the
        // others run ahead into an ever larger reorder buffer. Keep that many stripe buffers,
        // and their parity, for reuse (one more: the stripe read while waiting for a credit).
        let in_flight = 3 * workers + 4;
        let (credit_tx, credit_rx) = sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            credit_tx
                .try_send(())
                .map_err(|_| EncodeError::Pipeline("encoder credits"))?;
        }
        let stripe_pool = Pool::new(in_flight + 1);
        let parity_pool = Pool::new(in_flight * usize::from(params.erasure.m));
        let mut threads = Vec::with_capacity(workers + 1);
        for _ in 0..workers {
            let coder = params
                .erasure
                .code
                .coder(params.erasure.k.into(), params.erasure.m.into())?;
            let (rx, tx, pool) = (job_rx.clone(), out_tx.clone(), parity_pool.clone());
            threads.push(
                thread::Builder::new()
                    .name("cairn-encode".into())
                    .spawn(move || worker(coder, rx, tx, pool))?,
            );
        }
        let p = params.clone();
        threads.push(
            thread::Builder::new()
                .name("cairn-read".into())
                .spawn(move || {
                    let result = read_stripes(source, &p, &job_tx, Some(&credit_rx), &stripe_pool);
                    drop(job_tx);
                    let msg = match result {
                        Ok(done) => done,
                        Err(e) => Msg::Failed(e),
                    };
                    let _ = out_tx.send(msg);
                })?,
        );
        Ok(Self::collecting(out_rx, params, threads, Some(credit_tx)))
    }

    /// An encoder that collects what `rx` brings (from `threads`, if any).
    fn collecting(
        rx: Receiver<Msg>,
        params: EncodeParams,
        threads: Vec<JoinHandle<()>>,
        credits: Option<SyncSender<()>>,
    ) -> Self {
        Self {
            rx,
            pending: BTreeMap::new(),
            next: 0,
            done: None,
            cvs: CvStack::default(),
            stripes: Vec::new(),
            params,
            failed: false,
            threads,
            credits,
        }
    }

    /// An input of at most one stripe, already in memory, is encoded on the caller's thread:
    /// starting the reader and worker threads would cost more than the work (a small S3 PUT
    /// is a few microseconds of hashing). The same steps run, one after the other, and leave
    /// their results queued for the iterator.
    fn start_here(source: Source, params: EncodeParams) -> Result<Self, EncodeError> {
        let (k, m) = (params.erasure.k.into(), params.erasure.m.into());
        let coder = params.erasure.code.coder(k, m)?;
        let (job_tx, job_rx) = sync_channel::<Job>(8);
        let (out_tx, out_rx) = sync_channel::<Msg>(8);
        let done = match read_stripes(source, &params, &job_tx, None, &Pool::new(1)) {
            Ok(done) => done,
            Err(e) => Msg::Failed(e),
        };
        drop(job_tx);
        worker(
            coder,
            Arc::new(Mutex::new(job_rx)),
            out_tx.clone(),
            Pool::new(m),
        );
        out_tx
            .send(done)
            .map_err(|_| EncodeError::Pipeline("encoder output closed"))?;
        Ok(Self::collecting(out_rx, params, Vec::new(), None))
    }

    /// Encodes a byte slice completely and returns its manifest and stripes (for small inputs
    /// and tests; large inputs should stream).
    pub fn encode_all(
        data: &[u8],
        params: EncodeParams,
    ) -> Result<(ObjectManifest, Vec<EncodedStripe>), EncodeError> {
        let mut enc = Encoder::from_bytes(Bytes::copy_from_slice(data), params)?;
        let stripes = enc.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok((enc.finish()?, stripes))
    }

    fn next_stripe(&mut self) -> Result<Option<EncodedStripe>, EncodeError> {
        loop {
            if let Some((s, hashes)) = self.pending.remove(&self.next) {
                self.next += 1;
                if s.index == 0 {
                    self.cvs.first_root = hashes.first_root;
                }
                for cv in hashes.cvs {
                    self.cvs.push(cv);
                }
                self.stripes.push(s.stripe.clone());
                if let Some(credits) = &self.credits {
                    // Never full: the reader took this credit for the stripe just handed out.
                    let _ = credits.try_send(());
                }
                return Ok(Some(s));
            }
            if self.done.as_ref().is_some_and(|d| self.next >= d.stripes) {
                return Ok(None);
            }
            match self.rx.recv() {
                Ok(Msg::Stripe(s, hashes)) => {
                    self.pending.insert(s.index, (s, hashes));
                }
                Ok(Msg::Done {
                    stripes,
                    size,
                    hash,
                    inline,
                }) => {
                    self.done = Some(Finished {
                        stripes,
                        size,
                        hash,
                        inline,
                    })
                }
                Ok(Msg::Failed(e)) => return Err(e),
                Err(_) => {
                    return Err(EncodeError::Pipeline(
                        "a worker stopped before the encode finished",
                    ));
                }
            }
        }
    }

    /// Consumes any stripes not yet taken and returns the object's manifest (without content
    /// type or metadata: set those before storing it).
    pub fn finish(mut self) -> Result<ObjectManifest, EncodeError> {
        if self.failed {
            return Err(EncodeError::Pipeline("the encode already failed"));
        }
        while self.next_stripe()?.is_some() {}
        let Some(Finished {
            size, hash, inline, ..
        }) = self.done.take()
        else {
            return Err(EncodeError::Pipeline(
                "the reader stopped without finishing",
            ));
        };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let hash = match hash {
            Some(h) => h,
            None => std::mem::take(&mut self.cvs)
                .finalize()
                .ok_or(EncodeError::Pipeline("object hash blocks are missing"))?,
        };
        let m = ObjectManifest {
            version: manifest::VERSION,
            size,
            blake3: hash,
            erasure: self.params.erasure,
            chunking: self.params.chunking,
            stripes: std::mem::take(&mut self.stripes),
            inline,
            content_type: None,
            metadata: BTreeMap::new(),
        };
        m.validate()?;
        Ok(m)
    }
}

impl Iterator for Encoder {
    type Item = Result<EncodedStripe, EncodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.next_stripe() {
            Ok(s) => s.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
