//! Splitting a byte stream into chunks: fixed-size, or content-defined with FastCDC.
//!
//! Both chunkers read from any [`std::io::Read`] and hold at most one maximum-size chunk plus
//! one read buffer in memory, whatever the length of the input. Chunks come out as
//! [`bytes::Bytes`] cut from the read buffer without a copy.
//!
//! Content-defined chunking (FastCDC 2020, normalisation level 1) puts chunk boundaries where the
//! content says, so inserting bytes near the start of a file moves only the chunks around the
//! edit: the rest keep their CIDs. Cairn uses it when a dataset is re-uploaded with small
//! changes; fixed-size chunking is the default for throughput.

use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::{FastCDC, Normalization};
use serde::{Deserialize, Serialize};

/// Smallest content-defined minimum chunk size FastCDC accepts.
pub const CDC_MIN_LOWER: u32 = fastcdc::v2020::MINIMUM_MIN as u32;
/// Largest content-defined maximum chunk size FastCDC accepts (16 MiB).
pub const CDC_MAX_UPPER: u32 = fastcdc::v2020::MAXIMUM_MAX as u32;

/// How a stream is cut into data shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Chunking {
    /// Every data shard is exactly `shard_size` bytes, except in the last stripe, which is split
    /// evenly over its `k` data shards.
    Fixed,
    /// FastCDC 2020 boundaries: every data shard is between `min` and `max` bytes (the last one
    /// may be shorter), `avg` on average; `max` must not exceed the shard size.
    ContentDefined {
        /// Minimum chunk size in bytes.
        min: u32,
        /// Target average chunk size in bytes.
        avg: u32,
        /// Maximum chunk size in bytes.
        max: u32,
    },
}

/// Why chunking parameters or input are not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// Content-defined sizes outside what FastCDC supports, or not ordered min <= avg <= max.
    #[error(
        "content-defined chunk sizes min={min} avg={avg} max={max} are invalid: need {lo} <= min <= avg <= max <= {hi}, all even"
    )]
    BadCdcSizes {
        /// Minimum given.
        min: u32,
        /// Average given.
        avg: u32,
        /// Maximum given.
        max: u32,
        /// Lowest allowed minimum.
        lo: u32,
        /// Highest allowed maximum.
        hi: u32,
    },
    /// A fixed chunk size of zero.
    #[error("fixed chunk size must be at least 1 byte")]
    ZeroSize,
    /// Reading the input failed.
    #[error("reading input: {0}")]
    Io(#[from] io::Error),
}

impl Chunking {
    /// Content-defined chunking with FastCDC's usual ratios around `avg`: min = avg/4, max = avg*4.
    pub fn content_defined(avg: u32) -> Self {
        Chunking::ContentDefined {
            min: (avg / 4) & !1,
            avg: avg & !1,
            max: avg.saturating_mul(4) & !1,
        }
    }

    /// Checks the parameters, and that no chunk can exceed `shard_size`.
    pub fn validate(&self, shard_size: u32) -> Result<(), ChunkError> {
        match *self {
            Chunking::Fixed => {
                if shard_size == 0 {
                    return Err(ChunkError::ZeroSize);
                }
            }
            Chunking::ContentDefined { min, avg, max } => {
                let hi = CDC_MAX_UPPER.min(shard_size);
                let ok = min >= CDC_MIN_LOWER
                    && min as usize <= fastcdc::v2020::MINIMUM_MAX
                    && avg as usize >= fastcdc::v2020::AVERAGE_MIN
                    && avg as usize <= fastcdc::v2020::AVERAGE_MAX
                    && max as usize >= fastcdc::v2020::MAXIMUM_MIN
                    && min <= avg
                    && avg <= max
                    && max <= hi
                    && min % 2 == 0
                    && avg % 2 == 0
                    && max % 2 == 0;
                if !ok {
                    return Err(ChunkError::BadCdcSizes {
                        min,
                        avg,
                        max,
                        lo: CDC_MIN_LOWER,
                        hi,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Fixed-size chunks of a stream: every chunk is `size` bytes except possibly the last.
#[derive(Debug)]
pub struct FixedChunker<R> {
    reader: R,
    size: usize,
    done: bool,
}

impl<R: Read> FixedChunker<R> {
    /// Chunks `reader` into pieces of `size` bytes.
    pub fn new(reader: R, size: usize) -> Result<Self, ChunkError> {
        if size == 0 {
            return Err(ChunkError::ZeroSize);
        }
        Ok(Self {
            reader,
            size,
            done: false,
        })
    }
}

impl<R: Read> Iterator for FixedChunker<R> {
    type Item = Result<Bytes, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = BytesMut::zeroed(self.size);
        match read_full(&mut self.reader, &mut buf) {
            Ok(n) => {
                if n < self.size {
                    self.done = true;
                }
                if n == 0 {
                    return None;
                }
                buf.truncate(n);
                Some(Ok(buf.freeze()))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
        }
    }
}

/// Content-defined (FastCDC 2020) chunks of a stream.
///
/// Holds one buffer of a few maximum-size chunks; boundaries are identical to running FastCDC
/// over the whole input at once.
#[derive(Debug)]
pub struct CdcChunker<R> {
    reader: R,
    buf: BytesMut,
    min: usize,
    avg: usize,
    max: usize,
    eof: bool,
    failed: bool,
}

impl<R: Read> CdcChunker<R> {
    /// Chunks `reader` with FastCDC; the sizes are checked as by [`Chunking::validate`].
    pub fn new(reader: R, min: u32, avg: u32, max: u32) -> Result<Self, ChunkError> {
        Chunking::ContentDefined { min, avg, max }.validate(CDC_MAX_UPPER)?;
        Ok(Self {
            reader,
            buf: BytesMut::new(),
            min: min as usize,
            avg: avg as usize,
            max: max as usize,
            eof: false,
            failed: false,
        })
    }

    /// Tops the buffer up so it holds at least one maximum-size chunk, unless the input ended.
    fn fill(&mut self) -> io::Result<()> {
        // Read in large blocks so small `read` calls do not dominate; keep it to a few chunks.
        let target = self.max * 2;
        while !self.eof && self.buf.len() < self.max {
            let start = self.buf.len();
            self.buf.resize(target.max(start + 1), 0);
            let n = read_full(&mut self.reader, &mut self.buf[start..])?;
            self.buf.truncate(start + n);
            if n == 0 || start + n < target {
                self.eof = true;
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for CdcChunker<R> {
    type Item = Result<Bytes, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if let Err(e) = self.fill() {
            self.failed = true;
            return Some(Err(e.into()));
        }
        if self.buf.is_empty() {
            return None;
        }
        let cdc = FastCDC::with_level(
            &self.buf,
            self.min,
            self.avg,
            self.max,
            Normalization::Level1,
        );
        let (_, cut) = cdc.cut(0, self.buf.len());
        // FastCDC returns the whole remainder when it is shorter than `min`; never zero here.
        let cut = cut.clamp(1, self.buf.len());
        Some(Ok(self.buf.split_to(cut).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use cairn_testkit::data::bytes as data;

    /// A reader that hands out at most `step` bytes per call, to exercise refills.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(buf.len()).min(self.1);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn fixed_chunks_cover_input() {
        for len in [0, 1, 99, 100, 101, 1000] {
            let d = data(len, 1);
            let chunks: Vec<Bytes> = FixedChunker::new(Trickle(&d, 7), 100)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(chunks.concat(), d);
            assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= 100));
            assert_eq!(chunks.len(), len.div_ceil(100));
        }
    }

    #[test]
    fn cdc_matches_whole_buffer_fastcdc_and_respects_bounds() {
        let d = data(3_000_000, 2);
        let streamed: Vec<Bytes> =
            CdcChunker::new(Trickle(&d, 65_537), 16 * 1024, 64 * 1024, 256 * 1024)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let whole: Vec<usize> = FastCDC::new(&d, 16 * 1024, 64 * 1024, 256 * 1024)
            .map(|c| c.length)
            .collect();
        assert_eq!(streamed.iter().map(Bytes::len).collect::<Vec<_>>(), whole);
        assert_eq!(streamed.concat(), d);
        let (last, rest) = streamed.split_last().unwrap();
        assert!(
            rest.iter()
                .all(|c| c.len() >= 16 * 1024 && c.len() <= 256 * 1024)
        );
        assert!(!last.is_empty() && last.len() <= 256 * 1024);
    }

    #[test]
    fn cdc_boundaries_survive_an_insertion() {
        let d = data(2_000_000, 3);
        let mut edited = d[..1000].to_vec();
        edited.extend_from_slice(b"inserted bytes");
        edited.extend_from_slice(&d[1000..]);
        let cids = |bytes: &[u8]| -> std::collections::HashSet<blake3::Hash> {
            CdcChunker::new(bytes, 8 * 1024, 32 * 1024, 128 * 1024)
                .unwrap()
                .map(|c| blake3::hash(&c.unwrap()))
                .collect()
        };
        let before = cids(&d);
        let after = cids(&edited);
        let shared = before.intersection(&after).count();
        assert!(
            shared + 3 >= before.len(),
            "only {shared} of {} chunks survived",
            before.len()
        );
    }

    #[test]
    fn bad_cdc_sizes_are_rejected() {
        assert!(CdcChunker::new(&b""[..], 8, 64, 1024).is_err());
        assert!(CdcChunker::new(&b""[..], 4096, 1024, 65536).is_err());
        assert!(
            Chunking::content_defined(1 << 20)
                .validate(1 << 20)
                .is_err()
        );
        assert!(Chunking::content_defined(1 << 18).validate(1 << 20).is_ok());
        assert!(FixedChunker::new(&b""[..], 0).is_err());
    }
}
