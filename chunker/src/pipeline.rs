//! The encode pipeline (reader -> shards + manifest) and the matching decode.
//!
//! ```text
//!             ┌──────────────┐  stripes   ┌──────────┐  encoded   ┌────────────────────┐
//!  Read ────► │ reader thread│ ─────────► │ worker × │ ─────────► │ Encoder (iterator) │ ─► caller
//!             │ chunk, b3sum │  bounded   │ RS + CIDs│  bounded   │ reorders, manifest │
//!             └──────────────┘            └──────────┘            └────────────────────┘
//! ```
//!
//! The reader thread cuts the input into stripes (fixed or content-defined) and hashes the whole
//! object; each worker owns an erasure coder, computes a stripe's parity and every shard's
//! BLAKE3 root and outboard. Queues between them are bounded, and the reader takes a credit for
//! each stripe that comes back only when the iterator hands that stripe out in order, so a
//! preempted worker cannot let the others fill the reorder buffer without end: memory is bounded
//! by `3 * threads + 5` stripes, never by the object's size. Hashing and coding of different
//! stripes overlap on all cores.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use bytes::Bytes;

use crate::chunking::{CdcChunker, ChunkError, Chunking, read_full};
use crate::cids::{self, Cid, Codec};
use crate::erasure::{self, ErasureCode, ErasureCoder, ErasureError};
use crate::manifest::{self, ErasureParams, ManifestError, ObjectManifest, ShardRef, Stripe};
use crate::verified;
use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// Parameters of an encode.
#[derive(Debug, Clone)]
pub struct EncodeParams {
    /// Code, `k`, `m` and shard size.
    pub erasure: ErasureParams,
    /// How to cut data shards.
    pub chunking: Chunking,
    /// Objects of at most this many bytes are stored inline in their manifest (at most
    /// [`manifest::MAX_INLINE`]).
    pub inline_limit: u64,
    /// Worker threads for coding and hashing (default: available cores).
    pub threads: usize,
}

impl Default for EncodeParams {
    /// 10+4 with 1 MiB shards, fixed chunking, inline up to 4 KiB, all cores.
    fn default() -> Self {
        Self {
            erasure: ErasureParams {
                code: ErasureCode::DEFAULT,
                k: 10,
                m: 4,
                shard_size: 1 << 20,
            },
            chunking: Chunking::Fixed,
            inline_limit: 4096,
            threads: thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

impl EncodeParams {
    /// Default parameters with `k` data and `m` parity shards.
    pub fn with_shape(k: u16, m: u16) -> Self {
        let mut p = Self::default();
        p.erasure.k = k;
        p.erasure.m = m;
        p
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), EncodeError> {
        self.erasure.validate()?;
        self.chunking.validate(self.erasure.shard_size)?;
        if self.inline_limit > manifest::MAX_INLINE {
            return Err(EncodeError::Params(format!(
                "inline limit {} is above the maximum {}",
                self.inline_limit,
                manifest::MAX_INLINE
            )));
        }
        Ok(())
    }
}

/// Why an encode failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Io(#[from] io::Error),
    /// Bad chunking parameters.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// Bad erasure parameters or an engine failure.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    /// Parameters a manifest cannot hold.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Other bad parameters.
    #[error("bad encode parameters: {0}")]
    Params(String),
    /// A pipeline thread died.
    #[error("encode pipeline thread failed: {0}")]
    Pipeline(&'static str),
}

/// One stored shard produced by the encoder.
#[derive(Debug, Clone)]
pub struct EncodedShard {
    /// Index in the stripe: `0..k` data, `k..k+m` parity.
    pub index: usize,
    /// CID of `data`.
    pub cid: Cid,
    /// The shard's bytes.
    pub data: Bytes,
    /// Its pre-order BLAKE3 outboard ([`verified`]).
    pub outboard: Bytes,
}

/// One encoded stripe: what the manifest will say of it, and the shards to store.
#[derive(Debug, Clone)]
pub struct EncodedStripe {
    /// Stripe index within the object.
    pub index: u64,
    /// Object offset of the stripe's first byte.
    pub offset: u64,
    /// The manifest entry.
    pub stripe: Stripe,
    /// Every shard with bytes (zero-length data shards are implicit and not listed).
    pub shards: Vec<EncodedShard>,
}

/// Size of the object-hash blocks workers hash in parallel when shards are not a power of two
/// but stripes are whole multiples of it: a power of two, so every aligned block is a subtree
/// of the object's BLAKE3 tree.
const HASH_BLOCK: usize = 1 << 20;

/// Who computes the whole-object BLAKE3, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectHashing {
    /// The reader thread, sequentially (content-defined chunking, odd sizes).
    Reader,
    /// Workers hash aligned blocks of this size in a separate pass over their stripe.
    Blocks(usize),
    /// Workers hash each data shard (a power-of-two size) as an object subtree in the same pass
    /// as its outboard; only a short last stripe takes the `Blocks` path.
    Fused(usize),
}

impl ObjectHashing {
    fn choose(p: &EncodeParams) -> Self {
        let shard = p.erasure.shard_size as usize;
        match p.chunking {
            Chunking::Fixed if shard.is_power_of_two() && shard >= verified::GROUP_BYTES => {
                ObjectHashing::Fused(shard)
            }
            Chunking::Fixed if (shard * usize::from(p.erasure.k)).is_multiple_of(HASH_BLOCK) => {
                ObjectHashing::Blocks(HASH_BLOCK)
            }
            _ => ObjectHashing::Reader,
        }
    }
}

/// Recycles stripe and parity buffers so steady-state encoding allocates (and page-faults)
/// nothing: a buffer returns here when the last [`Bytes`] pointing into it is dropped.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Pool {
    fn new(keep: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::new()),
            keep,
        })
    }

    /// A buffer of exactly `len` bytes (contents unspecified): one of this pool's, else one a
    /// finished encoder left behind, else a new one.
    fn take(&self, len: usize) -> Vec<u8> {
        let reused = self
            .free
            .lock()
            .ok()
            .and_then(|mut free| take_fitting(&mut free, len))
            .or_else(|| {
                SPARE
                    .lock()
                    .ok()
                    .and_then(|mut spare| take_fitting(&mut spare, len))
            });
        match reused {
            Some(mut buf) => {
                // Within capacity: no reallocation, and only newly exposed bytes are zeroed.
                buf.resize(len, 0);
                buf.truncate(len);
                buf
            }
            None => vec![0u8; len],
        }
    }

    fn freeze(self: &Arc<Self>, buf: Vec<u8>, len: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            len,
            pool: self.clone(),
        })
    }
}

struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Buffers that finished encoders left behind, for the next encoder in this process (the
/// files of a dataset, a gateway's uploads), so it reuses memory already mapped instead of
/// page-faulting fresh stripe buffers (tens of MiB per encoder) in.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// Most bytes [`SPARE`] keeps: about one 10+4 encoder's worth of 1 MiB-shard buffers.
const SPARE_BYTES: usize = 192 << 20;

/// Removes and returns the smallest buffer of `free` that holds `len` bytes without wasting
/// more than half of itself.
fn take_fitting(free: &mut Vec<Vec<u8>>, len: usize) -> Option<Vec<u8>> {
    let i = free
        .iter()
        .enumerate()
        .filter(|(_, b)| b.capacity() >= len && b.capacity() / 2 <= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i)?;
    Some(free.swap_remove(i))
}

impl Drop for Pool {
    fn drop(&mut self) {
        let (Ok(free), Ok(mut spare)) = (self.free.get_mut(), SPARE.lock()) else {
            return;
        };
        let mut kept: usize = spare.iter().map(Vec::capacity).sum();
        for buf in free.drain(..) {
            if kept + buf.capacity() > SPARE_BYTES {
                break;
            }
            kept += buf.capacity();
            spare.push(buf);
        }
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Ok(mut free) = self.pool.free.lock()
            && free.len() < self.pool.keep
        {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

/// Merges chaining values of consecutive [`HASH_BLOCK`]s into the object's BLAKE3 hash, exactly
/// as BLAKE3's own hasher merges chunks (lazily, so the last block is never merged early).
#[derive(Debug, Default)]
struct CvStack {
    stack: Vec<ChainingValue>,
    count: u64,
    first_root: Option<blake3::Hash>,
}

impl CvStack {
    fn push(&mut self, cv: ChainingValue) {
        while self.stack.len() > self.count.count_ones() as usize {
            let (Some(r), Some(l)) = (self.stack.pop(), self.stack.pop()) else {
                break;
            };
            self.stack.push(merge_subtrees_non_root(&l, &r, Mode::Hash));
        }
        self.stack.push(cv);
        self.count += 1;
    }

    /// The object hash: the root hash of block 0 when it is the only block, else the merge.
    fn finalize(mut self) -> Option<blake3::Hash> {
        if self.count <= 1 {
            return self.first_root;
        }
        let mut right = self.stack.pop()?;
        while let Some(left) = self.stack.pop() {
            if self.stack.is_empty() {
                return Some(merge_subtrees_root(&left, &right, Mode::Hash));
            }
            right = merge_subtrees_non_root(&left, &right, Mode::Hash);
        }
        None
    }
}

/// The object-hash work a worker did for its stripe.
#[derive(Debug, Clone, Default)]
struct BlockHashes {
    /// Chaining values of the stripe's hash blocks, in order.
    cvs: Vec<ChainingValue>,
    /// The root hash of block 0, when block 0 may be the whole object.
    first_root: Option<blake3::Hash>,
}

struct Job {
    index: u64,
    offset: u64,
    data: Vec<Bytes>,
    /// The stripe's bytes, contiguous, when workers hash the object.
    blocks: Option<Bytes>,
    /// How the worker takes part in hashing the object.
    hashing: ObjectHashing,
    /// The input ended in this stripe.
    last: bool,
}

enum Msg {
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

/// What the pipeline reads from.
enum Source {
    Reader(Box<dyn Read + Send>),
    Bytes(Bytes),
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

/// Fills `buf` from the source; returns the bytes placed (fewer only at the end of input).
fn fill(
    source: &mut Source,
    buf: &mut Vec<u8>,
    want: usize,
    pool: &Pool,
) -> io::Result<Option<Bytes>> {
    match source {
        Source::Reader(r) => {
            *buf = pool.take(want);
            let n = read_full(r, buf)?;
            buf.truncate(n);
            Ok(None)
        }
        Source::Bytes(b) => {
            let n = want.min(b.len());
            Ok(Some(b.split_to(n)))
        }
    }
}

/// The reader thread: cuts stripes, decides on inline, and hashes the object itself unless the
/// workers can hash aligned blocks of it in parallel.
fn read_stripes(
    mut source: Source,
    p: &EncodeParams,
    jobs: &SyncSender<Job>,
    credits: Option<&Receiver<()>>,
    pool: &Arc<Pool>,
) -> Result<Msg, EncodeError> {
    let k = usize::from(p.erasure.k);
    let mut hasher = blake3::Hasher::new();
    let mut size: u64 = 0;
    let mut index: u64 = 0;
    let send = |job: Job| {
        if let Some(credits) = credits {
            credits
                .recv()
                .map_err(|_| EncodeError::Pipeline("the encoder was dropped"))?;
        }
        jobs.send(job)
            .map_err(|_| EncodeError::Pipeline("encode workers stopped"))
    };
    let inline = |bytes: &[u8], hasher: &mut blake3::Hasher| {
        hasher.update(bytes);
        Msg::Done {
            stripes: 0,
            size: bytes.len() as u64,
            hash: Some(hasher.finalize()),
            inline: Some(bytes.to_vec()),
        }
    };
    let hashing = ObjectHashing::choose(p);
    let workers_hash = hashing != ObjectHashing::Reader;
    match p.chunking {
        Chunking::Fixed => {
            let shard = p.erasure.shard_size as usize;
            let stripe_bytes = shard * k;
            loop {
                let mut vec = Vec::new();
                let stripe = match fill(&mut source, &mut vec, stripe_bytes, pool)? {
                    Some(bytes) => bytes,
                    None => {
                        let n = vec.len();
                        pool.freeze(vec, n)
                    }
                };
                let n = stripe.len();
                if index == 0 && n < stripe_bytes && n as u64 <= p.inline_limit {
                    return Ok(inline(&stripe, &mut hasher));
                }
                if n == 0 {
                    break;
                }
                if !workers_hash {
                    hasher.update(&stripe);
                }
                // Full stripes use full shards; a short last stripe is split evenly.
                let per = if n == stripe_bytes {
                    shard
                } else {
                    n.div_ceil(k)
                };
                let data = (0..k)
                    .map(|i| stripe.slice((i * per).min(n)..((i + 1) * per).min(n)))
                    .collect();
                let last = n < stripe_bytes;
                send(Job {
                    index,
                    offset: size,
                    data,
                    blocks: workers_hash.then_some(stripe),
                    hashing,
                    last,
                })?;
                size += n as u64;
                index += 1;
                if last {
                    break;
                }
            }
        }
        Chunking::ContentDefined { min, avg, max } => {
            let reader: Box<dyn Read + Send> = match source {
                Source::Reader(r) => r,
                Source::Bytes(b) => Box::new(io::Cursor::new(b)),
            };
            let mut chunks = CdcChunker::new(reader, min, avg, max)?.peekable();
            let mut data: Vec<Bytes> = Vec::with_capacity(k);
            let mut stripe_len = 0u64;
            while let Some(chunk) = chunks.next() {
                let chunk = chunk?;
                hasher.update(&chunk);
                stripe_len += chunk.len() as u64;
                data.push(chunk);
                let last = chunks.peek().is_none();
                if index == 0 && last && data.len() < k && stripe_len <= p.inline_limit {
                    let bytes = data.concat();
                    return Ok(Msg::Done {
                        stripes: 0,
                        size: bytes.len() as u64,
                        hash: Some(hasher.finalize()),
                        inline: Some(bytes),
                    });
                }
                if data.len() == k || last {
                    data.resize(k, Bytes::new());
                    send(Job {
                        index,
                        offset: size,
                        data: std::mem::replace(&mut data, Vec::with_capacity(k)),
                        blocks: None,
                        hashing,
                        last,
                    })?;
                    size += stripe_len;
                    stripe_len = 0;
                    index += 1;
                }
            }
        }
    }
    if index == 0 {
        // Empty input: an empty inline object.
        return Ok(inline(&[], &mut hasher));
    }
    Ok(Msg::Done {
        stripes: index,
        size,
        hash: (!workers_hash).then(|| hasher.finalize()),
        inline: None,
    })
}

fn worker(
    mut coder: Box<dyn ErasureCoder>,
    jobs: Arc<Mutex<Receiver<Job>>>,
    out: SyncSender<Msg>,
    pool: Arc<Pool>,
) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        // Full stripes of power-of-two shards hash the object inside the shard pass; other
        // stripes hash their aligned blocks separately.
        let (fused, mut hashes) = match (job.hashing, &job.blocks) {
            (ObjectHashing::Fused(_), Some(_)) if !job.last => {
                (Some(job.offset), BlockHashes::default())
            }
            (ObjectHashing::Fused(block) | ObjectHashing::Blocks(block), Some(b)) => {
                (None, hash_blocks(b, job.offset, job.last, block))
            }
            _ => (None, BlockHashes::default()),
        };
        let msg = match encode_stripe_with(coder.as_mut(), &job.data, Some(&pool), fused) {
            Ok((stripe, shards, object_cvs)) => {
                if fused.is_some() {
                    // Block 0 is data shard 0: its own root is the object hash if it is all.
                    if job.index == 0 {
                        hashes.first_root = stripe_first_root(&shards);
                    }
                    hashes.cvs = object_cvs;
                }
                let encoded = EncodedStripe {
                    index: job.index,
                    offset: job.offset,
                    stripe,
                    shards,
                };
                Msg::Stripe(encoded, hashes)
            }
            Err(e) => Msg::Failed(e),
        };
        if out.send(msg).is_err() {
            return;
        }
    }
}

/// The BLAKE3 root of data shard 0 of a stripe (from its CID).
fn stripe_first_root(shards: &[EncodedShard]) -> Option<blake3::Hash> {
    let first = shards.iter().find(|s| s.index == 0)?;
    cids::digest(&first.cid, Codec::Raw).ok()
}

/// Chaining values of the `block`-sized pieces of a stripe that starts at `offset` (a multiple of
/// the block size), plus the root hash of block 0 when it may be the whole object.
fn hash_blocks(stripe: &[u8], offset: u64, last: bool, block_size: usize) -> BlockHashes {
    let mut out = BlockHashes::default();
    for (i, block) in stripe.chunks(block_size).enumerate() {
        let at = offset + (i * block_size) as u64;
        let only_block = at == 0 && stripe.len() <= block_size;
        if only_block {
            out.first_root = Some(blake3::hash(block));
            if last {
                // Nothing follows: block 0 is the object and its CV is never needed.
                continue;
            }
        }
        let mut h = blake3::Hasher::new();
        h.set_input_offset(at);
        h.update(block);
        out.cvs.push(h.finalize_non_root());
    }
    out
}

fn shard_of(index: usize, data: Bytes) -> EncodedShard {
    let (root, outboard) = verified::outboard(&data);
    EncodedShard {
        index,
        cid: cids::from_hash(Codec::Raw, &root),
        data,
        outboard: Bytes::from(outboard),
    }
}

/// Encodes one stripe: parity, CIDs and outboards. `data` holds `k` data shards of any lengths
/// up to the shard size (zero-length ones are implicit zeros).
pub fn encode_stripe_shards(
    coder: &mut dyn ErasureCoder,
    data: &[Bytes],
) -> Result<(Stripe, Vec<EncodedShard>), EncodeError> {
    encode_stripe_with(coder, data, None, None).map(|(stripe, shards, _)| (stripe, shards))
}

/// Encodes a stripe. With `object_offset` (the stripe's offset in the object, all data shards
/// the same power-of-two length), also returns each data shard's chaining value as a subtree
/// of the object, computed in the same pass as its outboard.
fn encode_stripe_with(
    coder: &mut dyn ErasureCoder,
    data: &[Bytes],
    pool: Option<&Arc<Pool>>,
    object_offset: Option<u64>,
) -> Result<(Stripe, Vec<EncodedShard>, Vec<ChainingValue>), EncodeError> {
    let longest = data.iter().map(Bytes::len).max().unwrap_or(0);
    if longest == 0 || data.len() != coder.data_shards() {
        return Err(EncodeError::Params(
            "a stripe needs k data shards with at least one byte".into(),
        ));
    }
    let plen = erasure::parity_len(longest);
    let padded: Vec<Vec<u8>> = data
        .iter()
        .filter(|d| d.len() != plen)
        .map(|d| {
            let mut v = Vec::with_capacity(plen);
            v.extend_from_slice(d);
            v.resize(plen, 0);
            v
        })
        .collect();
    let mut padded_iter = padded.iter();
    let refs: Vec<&[u8]> = data
        .iter()
        .map(|d| {
            if d.len() == plen {
                &d[..]
            } else {
                padded_iter.next().map_or(&[][..], Vec::as_slice)
            }
        })
        .collect();
    let mut parity: Vec<Vec<u8>> = (0..coder.parity_shards())
        .map(|_| pool.map_or_else(Vec::new, |p| p.take(plen)))
        .collect();
    coder.encode(&refs, &mut parity)?;
    drop(refs);
    drop(padded);

    let k = data.len();
    let mut shards = Vec::with_capacity(k + parity.len());
    let mut refs = Vec::with_capacity(k);
    let mut object_cvs = Vec::with_capacity(if object_offset.is_some() { k } else { 0 });
    for (i, d) in data.iter().enumerate() {
        if d.is_empty() {
            refs.push(ShardRef {
                cid: cids::raw(b""),
                len: 0,
            });
        } else {
            let s = match object_offset {
                Some(offset) => {
                    let (root, outboard, cv) =
                        verified::outboard_with_object_cv(d, offset + (i * d.len()) as u64);
                    object_cvs.push(cv);
                    EncodedShard {
                        index: i,
                        cid: cids::from_hash(Codec::Raw, &root),
                        data: d.clone(),
                        outboard: Bytes::from(outboard),
                    }
                }
                None => shard_of(i, d.clone()),
            };
            refs.push(ShardRef {
                cid: s.cid,
                len: d.len() as u32,
            });
            shards.push(s);
        }
    }
    let mut parity_cids = Vec::with_capacity(parity.len());
    for (j, p) in parity.into_iter().enumerate() {
        let bytes = match pool {
            Some(pool) => pool.freeze(p, plen),
            None => Bytes::from(p),
        };
        let s = shard_of(k + j, bytes);
        parity_cids.push(s.cid);
        shards.push(s);
    }
    let stripe = Stripe {
        data: refs,
        parity: parity_cids,
        parity_len: plen as u32,
    };
    Ok((stripe, shards, object_cvs))
}

/// Why a decode failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The manifest is unusable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Not enough good shards for a stripe.
    #[error(
        "stripe {stripe}: only {present} good shards of the {need} needed (missing: {missing:?}, corrupt: {corrupt:?})"
    )]
    NotEnoughShards {
        /// Stripe index.
        stripe: usize,
        /// Good shards available.
        present: usize,
        /// Shards needed (`k`).
        need: usize,
        /// Indices of shards that were not available.
        missing: Vec<usize>,
        /// Indices of shards whose bytes did not match their CID.
        corrupt: Vec<usize>,
    },
    /// A rebuilt data shard does not match its CID: the stored parity is wrong.
    #[error(
        "stripe {stripe}: rebuilt data shard {index} does not match {cid}: the stripe's parity is inconsistent"
    )]
    Inconsistent {
        /// Stripe index.
        stripe: usize,
        /// Shard index.
        index: usize,
        /// Expected CID.
        cid: Box<Cid>,
    },
    /// The reassembled object's BLAKE3 differs from the manifest's.
    #[error("object BLAKE3 is {actual}, the manifest says {expected}")]
    ObjectHash {
        /// From the manifest.
        expected: blake3::Hash,
        /// Of the bytes produced.
        actual: blake3::Hash,
    },
    /// The erasure engine failed.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    /// Writing the output failed.
    #[error("writing output: {0}")]
    Io(#[from] io::Error),
}

/// The result of decoding one stripe.
#[derive(Debug, Clone)]
pub struct DecodedStripe {
    /// The data shards, at their true lengths; concatenated they are the stripe's bytes.
    pub data: Vec<Bytes>,
    /// Indices of shards that were given but did not match their CID (they were ignored).
    pub corrupt: Vec<usize>,
    /// Whether parity had to be used.
    pub reconstructed: bool,
}

/// Rebuilds stripes from any `k` of their shards.
pub struct StripeDecoder {
    coder: Box<dyn ErasureCoder>,
}

impl std::fmt::Debug for StripeDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeDecoder")
            .field("code", &self.coder.code())
            .finish()
    }
}

impl StripeDecoder {
    /// A decoder for stripes with these parameters.
    pub fn new(params: &ErasureParams) -> Result<Self, DecodeError> {
        params.validate()?;
        Ok(Self {
            coder: params.code.coder(params.k.into(), params.m.into())?,
        })
    }

    /// Decodes stripe number `index` from `shards` (`k + m` entries, `None` where unavailable).
    ///
    /// With `verify`, every given shard is hashed and ignored if it does not match its CID (its
    /// index is reported in [`DecodedStripe::corrupt`]); pass `false` only for shards already
    /// verified on arrival (e.g. through a [`verified::RangeDecoder`]). Rebuilt data shards are
    /// always checked against their CIDs.
    pub fn decode(
        &mut self,
        index: usize,
        stripe: &Stripe,
        mut shards: Vec<Option<Bytes>>,
        verify: bool,
    ) -> Result<DecodedStripe, DecodeError> {
        let k = stripe.data.len();
        let total = k + stripe.parity.len();
        shards.resize(total, None);
        let mut corrupt = Vec::new();
        for (i, slot) in shards.iter_mut().enumerate() {
            let Some(shard) = stripe.shard(i) else {
                continue;
            };
            if shard.len == 0 {
                *slot = Some(Bytes::new());
                continue;
            }
            if let Some(bytes) = slot
                && (bytes.len() != shard.len as usize || (verify && cids::raw(bytes) != shard.cid))
            {
                corrupt.push(i);
                *slot = None;
            }
        }
        if shards[..k].iter().all(Option::is_some) {
            let data = shards
                .into_iter()
                .take(k)
                .map(|s| s.unwrap_or_default())
                .collect();
            return Ok(DecodedStripe {
                data,
                corrupt,
                reconstructed: false,
            });
        }
        let present = shards.iter().filter(|s| s.is_some()).count();
        if present < k {
            let missing = (0..total)
                .filter(|i| shards[*i].is_none() && !corrupt.contains(i))
                .collect();
            return Err(DecodeError::NotEnoughShards {
                stripe: index,
                present,
                need: k,
                missing,
                corrupt,
            });
        }
        let plen = stripe.parity_len as usize;
        let mut work: Vec<Option<Vec<u8>>> = shards
            .iter()
            .map(|s| {
                s.as_ref().map(|b| {
                    let mut v = Vec::with_capacity(plen);
                    v.extend_from_slice(b);
                    v.resize(plen, 0);
                    v
                })
            })
            .collect();
        self.coder.reconstruct_data(&mut work)?;
        let mut data = Vec::with_capacity(k);
        for (i, (orig, rebuilt)) in shards.into_iter().zip(work).take(k).enumerate() {
            match orig {
                Some(b) => data.push(b),
                None => {
                    let shard = stripe.data[i];
                    let mut v = rebuilt.unwrap_or_default();
                    v.truncate(shard.len as usize);
                    if v.len() != shard.len as usize || cids::raw(&v) != shard.cid {
                        return Err(DecodeError::Inconsistent {
                            stripe: index,
                            index: i,
                            cid: Box::new(shard.cid),
                        });
                    }
                    data.push(Bytes::from(v));
                }
            }
        }
        Ok(DecodedStripe {
            data,
            corrupt,
            reconstructed: true,
        })
    }
}

/// Decodes a whole object to `out`: for every stripe, `fetch(stripe, shard_index, shard)` returns
/// the shard's bytes if available. Shards are verified; missing or corrupt ones are rebuilt from
/// parity; the object's BLAKE3 is checked at the end. Returns the number of bytes written.
///
/// On error, `out` may hold a prefix of the object (or, for [`DecodeError::ObjectHash`], all of
/// it): callers writing to a file should write to a temporary name and rename on success.
pub fn decode_object(
    manifest: &ObjectManifest,
    mut fetch: impl FnMut(usize, usize, ShardRef) -> Option<Bytes>,
    out: &mut impl Write,
) -> Result<u64, DecodeError> {
    manifest.validate()?;
    let mut hasher = blake3::Hasher::new();
    if let Some(inline) = &manifest.inline {
        hasher.update(inline);
        check_hash(manifest, &hasher)?;
        out.write_all(inline)?;
        return Ok(inline.len() as u64);
    }
    let mut decoder = StripeDecoder::new(&manifest.erasure)?;
    let k = usize::from(manifest.erasure.k);
    let mut written = 0;
    for (si, stripe) in manifest.stripes.iter().enumerate() {
        // Data shards first; parity only when something is missing or corrupt.
        let mut shards: Vec<Option<Bytes>> = (0..k)
            .map(|i| {
                let s = stripe.data[i];
                if s.len == 0 { None } else { fetch(si, i, s) }
            })
            .collect();
        let healthy = (0..k).all(|i| {
            let s = stripe.data[i];
            s.len == 0 || shards[i].as_ref().is_some_and(|b| cids::raw(b) == s.cid)
        });
        let decoded = if healthy {
            decoder.decode(si, stripe, shards, false)?
        } else {
            for j in 0..stripe.parity.len() {
                let s = stripe
                    .shard(k + j)
                    .unwrap_or_else(|| unreachable!("parity index in range"));
                shards.push(fetch(si, k + j, s));
            }
            decoder.decode(si, stripe, shards, true)?
        };
        for d in &decoded.data {
            hasher.update(d);
            out.write_all(d)?;
            written += d.len() as u64;
        }
    }
    check_hash(manifest, &hasher)?;
    Ok(written)
}

fn check_hash(manifest: &ObjectManifest, hasher: &blake3::Hasher) -> Result<(), DecodeError> {
    let actual = hasher.finalize();
    if actual != manifest.blake3 {
        return Err(DecodeError::ObjectHash {
            expected: manifest.blake3,
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_buffers_fit_what_is_asked() {
        let mut free = vec![
            Vec::with_capacity(10 << 20),
            Vec::with_capacity(1 << 20),
            Vec::with_capacity(3 << 20),
        ];
        // The smallest that holds it, never one twice as large or more.
        assert_eq!(
            take_fitting(&mut free, 1 << 20).unwrap().capacity(),
            1 << 20
        );
        assert!(take_fitting(&mut free, 1 << 20).is_none());
        assert_eq!(
            take_fitting(&mut free, 2 << 20).unwrap().capacity(),
            3 << 20
        );
        assert!(take_fitting(&mut free, 11 << 20).is_none());
        assert_eq!(
            take_fitting(&mut free, 10 << 20).unwrap().capacity(),
            10 << 20
        );
        assert!(free.is_empty());
    }

    #[test]
    fn an_encoder_leaves_its_buffers_to_the_next_within_a_bound() {
        let params = EncodeParams::with_shape(4, 2);
        let stripe = 4 * params.erasure.shard_size as usize;
        let input: Vec<u8> = (0..3 * stripe + 5).map(|i| (i % 253) as u8).collect();
        let encode = || {
            let mut enc = Encoder::new(io::Cursor::new(input.clone()), params.clone()).unwrap();
            let stripes = enc.by_ref().inspect(|s| assert!(s.is_ok())).count();
            enc.finish().unwrap();
            stripes
        };
        assert_eq!(encode(), 4);
        let spare = |len: usize| {
            let spare = SPARE.lock().unwrap();
            let total: usize = spare.iter().map(Vec::capacity).sum();
            (total, spare.iter().filter(|b| b.capacity() >= len).count())
        };
        let (total, stripes) = spare(stripe);
        assert!(total <= SPARE_BYTES, "{total} bytes kept");
        assert!(
            stripes >= 1,
            "no stripe buffer was left for the next encoder"
        );
        assert_eq!(encode(), 4);
        assert!(spare(stripe).0 <= SPARE_BYTES);
    }

    #[test]
    fn block_hashes_merge_to_blake3() {
        // Around the one-block edge and several blocks, in stripes of one or two blocks.
        let data: Vec<u8> = (0..(5 * HASH_BLOCK + 3)).map(|i| (i % 251) as u8).collect();
        for len in [
            1,
            1000,
            HASH_BLOCK - 1,
            HASH_BLOCK,
            HASH_BLOCK + 1,
            2 * HASH_BLOCK,
            3 * HASH_BLOCK + 7,
            5 * HASH_BLOCK + 3,
        ] {
            for stripe in [HASH_BLOCK, 2 * HASH_BLOCK] {
                let input = &data[..len];
                let mut cvs = CvStack::default();
                let pieces: Vec<&[u8]> = input.chunks(stripe).collect();
                for (i, piece) in pieces.iter().enumerate() {
                    let last = i + 1 == pieces.len() && piece.len() < stripe;
                    let h = hash_blocks(piece, (i * stripe) as u64, last, HASH_BLOCK);
                    if i == 0 {
                        cvs.first_root = h.first_root;
                    }
                    for cv in h.cvs {
                        cvs.push(cv);
                    }
                }
                assert_eq!(
                    cvs.finalize(),
                    Some(blake3::hash(input)),
                    "len {len} stripe {stripe}"
                );
            }
        }
    }
}
