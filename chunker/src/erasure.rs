//! Systematic Reed-Solomon erasure coding behind one trait, with two engines.
//!
//! A stripe has `k` data shards and `m` parity shards; any `k` of the `k + m` rebuild the data.
//! The code is *systematic*: data shards are the object's own bytes, so a healthy read never
//! decodes anything.
//!
//! The two engines compute **different codes** (different fields and matrices), so the engine
//! that wrote a stripe must be the one that repairs it. [`ErasureCode`] names the code and is
//! recorded in every manifest:
//!
//! | [`ErasureCode`] | engine | field | limits |
//! |---|---|---|---|
//! | [`ReedSolomonGf8`](ErasureCode::ReedSolomonGf8) | `reed-solomon-erasure` (Backblaze-style Vandermonde matrix) | GF(2^8) | k + m <= 256 |
//! | [`LeopardGf16`](ErasureCode::LeopardGf16) | `reed-solomon-simd` (Leopard FFT) | GF(2^16) | k, m <= 32768 |
//!
//! Which one new objects use is [`ErasureCode::DEFAULT`], chosen by the benchmark recorded in
//! `docs/BENCHMARKS.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest supported number of data shards per stripe.
pub const MAX_DATA_SHARDS: usize = 128;
/// Largest supported number of parity shards per stripe.
pub const MAX_PARITY_SHARDS: usize = 128;
/// Parity shards are as long as the longest data shard of their stripe, rounded up to this.
pub const SHARD_ALIGN: usize = 64;

/// Which Reed-Solomon code a stripe was written with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErasureCode {
    /// Reed-Solomon over GF(2^8) with a systematic Vandermonde matrix (`reed-solomon-erasure`).
    #[serde(rename = "rs-gf8")]
    ReedSolomonGf8,
    /// Leopard Reed-Solomon over GF(2^16) with FFTs (`reed-solomon-simd`).
    #[serde(rename = "leopard-gf16")]
    LeopardGf16,
}

impl ErasureCode {
    /// The code new objects are written with (see `docs/BENCHMARKS.md` for why).
    pub const DEFAULT: ErasureCode = ErasureCode::ReedSolomonGf8;

    /// Both codes, for tests and benchmarks.
    pub const ALL: [ErasureCode; 2] = [ErasureCode::ReedSolomonGf8, ErasureCode::LeopardGf16];

    /// The name used in manifests and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ErasureCode::ReedSolomonGf8 => "rs-gf8",
            ErasureCode::LeopardGf16 => "leopard-gf16",
        }
    }

    /// Parses [`ErasureCode::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Checks that this code supports `k` data and `m` parity shards.
    pub fn check(self, k: usize, m: usize) -> Result<(), ErasureError> {
        let fits = match self {
            ErasureCode::ReedSolomonGf8 => k + m <= 256,
            ErasureCode::LeopardGf16 => reed_solomon_simd::ReedSolomonEncoder::supports(k, m),
        };
        if k == 0 || m == 0 || k > MAX_DATA_SHARDS || m > MAX_PARITY_SHARDS || !fits {
            return Err(ErasureError::Unsupported { code: self, k, m });
        }
        Ok(())
    }

    /// A coder for `k` data and `m` parity shards.
    pub fn coder(self, k: usize, m: usize) -> Result<Box<dyn ErasureCoder>, ErasureError> {
        self.check(k, m)?;
        Ok(match self {
            ErasureCode::ReedSolomonGf8 => Box::new(Gf8Coder::new(k, m)?),
            ErasureCode::LeopardGf16 => Box::new(Gf16Coder::new(k, m)),
        })
    }
}

impl fmt::Display for ErasureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors from erasure coding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    /// The code does not support this shape.
    #[error(
        "{code} does not support {k}+{m}: need 1 <= k <= {MAX_DATA_SHARDS}, 1 <= m <= {MAX_PARITY_SHARDS} (and k + m <= 256 for rs-gf8)"
    )]
    Unsupported {
        /// Code asked for.
        code: ErasureCode,
        /// Data shards asked for.
        k: usize,
        /// Parity shards asked for.
        m: usize,
    },
    /// Shards passed in do not have the expected count or length.
    #[error("shard layout mismatch: {0}")]
    Layout(&'static str),
    /// Fewer than `k` shards are present: the stripe cannot be rebuilt.
    #[error("only {present} of the {need} shards needed to rebuild the stripe are present")]
    TooFewShards {
        /// Shards present.
        present: usize,
        /// Shards needed (`k`).
        need: usize,
    },
    /// The engine failed in a way the checks above did not foresee.
    #[error("erasure engine error: {0}")]
    Engine(String),
}

/// Rounds a data length up to the parity length of a stripe whose longest data shard is `len`.
pub fn parity_len(len: usize) -> usize {
    len.div_ceil(SHARD_ALIGN) * SHARD_ALIGN
}

/// One erasure code with fixed `k` and `m`. Not shared between threads: each worker owns one.
pub trait ErasureCoder: Send {
    /// The code this coder computes.
    fn code(&self) -> ErasureCode;
    /// Number of data shards.
    fn data_shards(&self) -> usize;
    /// Number of parity shards.
    fn parity_shards(&self) -> usize;
    /// Computes the parity of `k` data shards that all have the same length, a multiple of
    /// [`SHARD_ALIGN`]. `parity` must hold `m` buffers; each is resized to that length.
    fn encode(&mut self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<(), ErasureError>;
    /// Rebuilds missing data shards in place. `shards` holds all `k + m` shards in order, `None`
    /// where missing; the present ones all have the same length. On success, every data entry
    /// (`0..k`) is `Some`; missing parity entries may stay `None`.
    fn reconstruct_data(&mut self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError>;
}

/// Checks a reconstruct request and returns the shard length, or `None` if no data is missing.
fn check_reconstruct(
    shards: &[Option<Vec<u8>>],
    k: usize,
    m: usize,
) -> Result<Option<usize>, ErasureError> {
    if shards.len() != k + m {
        return Err(ErasureError::Layout(
            "reconstruct needs exactly k + m entries",
        ));
    }
    let present = shards.iter().filter(|s| s.is_some()).count();
    if present < k {
        return Err(ErasureError::TooFewShards { present, need: k });
    }
    let mut lens = shards.iter().flatten().map(Vec::len);
    let len = lens.next().unwrap_or(0);
    if len == 0 || lens.any(|l| l != len) {
        return Err(ErasureError::Layout(
            "present shards must be non-empty and of equal length",
        ));
    }
    if shards[..k].iter().all(Option::is_some) {
        return Ok(None);
    }
    Ok(Some(len))
}

fn check_encode(
    data: &[&[u8]],
    parity: &[Vec<u8>],
    k: usize,
    m: usize,
) -> Result<usize, ErasureError> {
    if data.len() != k || parity.len() != m {
        return Err(ErasureError::Layout(
            "encode needs k data and m parity buffers",
        ));
    }
    let len = data[0].len();
    if len == 0 || !len.is_multiple_of(SHARD_ALIGN) || data.iter().any(|d| d.len() != len) {
        return Err(ErasureError::Layout(
            "data shards must be equally long, non-empty, multiples of SHARD_ALIGN",
        ));
    }
    Ok(len)
}

/// The `reed-solomon-erasure` engine (GF(2^8)).
struct Gf8Coder {
    rs: reed_solomon_erasure::galois_8::ReedSolomon,
}

impl Gf8Coder {
    fn new(k: usize, m: usize) -> Result<Self, ErasureError> {
        let rs = reed_solomon_erasure::galois_8::ReedSolomon::new(k, m).map_err(|_| {
            ErasureError::Unsupported {
                code: ErasureCode::ReedSolomonGf8,
                k,
                m,
            }
        })?;
        Ok(Self { rs })
    }
}

impl ErasureCoder for Gf8Coder {
    fn code(&self) -> ErasureCode {
        ErasureCode::ReedSolomonGf8
    }
    fn data_shards(&self) -> usize {
        self.rs.data_shard_count()
    }
    fn parity_shards(&self) -> usize {
        self.rs.parity_shard_count()
    }

    fn encode(&mut self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<(), ErasureError> {
        let len = check_encode(data, parity, self.data_shards(), self.parity_shards())?;
        for p in parity.iter_mut() {
            p.resize(len, 0);
        }
        self.rs
            .encode_sep(data, parity)
            .map_err(|e| ErasureError::Engine(format!("{e:?}")))
    }

    fn reconstruct_data(&mut self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError> {
        if check_reconstruct(shards, self.data_shards(), self.parity_shards())?.is_none() {
            return Ok(());
        }
        self.rs
            .reconstruct_data(shards)
            .map_err(|e| ErasureError::Engine(format!("{e:?}")))
    }
}

/// The `reed-solomon-simd` engine (Leopard, GF(2^16)).
struct Gf16Coder {
    k: usize,
    m: usize,
    encoder: Option<reed_solomon_simd::ReedSolomonEncoder>,
    decoder: Option<reed_solomon_simd::ReedSolomonDecoder>,
}

impl Gf16Coder {
    fn new(k: usize, m: usize) -> Self {
        Self {
            k,
            m,
            encoder: None,
            decoder: None,
        }
    }
}

fn simd_err(e: reed_solomon_simd::Error) -> ErasureError {
    ErasureError::Engine(e.to_string())
}

impl ErasureCoder for Gf16Coder {
    fn code(&self) -> ErasureCode {
        ErasureCode::LeopardGf16
    }
    fn data_shards(&self) -> usize {
        self.k
    }
    fn parity_shards(&self) -> usize {
        self.m
    }

    fn encode(&mut self, data: &[&[u8]], parity: &mut [Vec<u8>]) -> Result<(), ErasureError> {
        let len = check_encode(data, parity, self.k, self.m)?;
        let encoder = match &mut self.encoder {
            Some(e) => {
                e.reset(self.k, self.m, len).map_err(simd_err)?;
                e
            }
            slot @ None => slot.insert(
                reed_solomon_simd::ReedSolomonEncoder::new(self.k, self.m, len)
                    .map_err(simd_err)?,
            ),
        };
        for d in data {
            encoder.add_original_shard(d).map_err(simd_err)?;
        }
        let result = encoder.encode().map_err(simd_err)?;
        for (p, r) in parity.iter_mut().zip(result.recovery_iter()) {
            p.clear();
            p.extend_from_slice(r);
        }
        Ok(())
    }

    fn reconstruct_data(&mut self, shards: &mut [Option<Vec<u8>>]) -> Result<(), ErasureError> {
        let Some(len) = check_reconstruct(shards, self.k, self.m)? else {
            return Ok(());
        };
        if len % 2 != 0 {
            return Err(ErasureError::Layout(
                "leopard-gf16 shards must have an even length",
            ));
        }
        let decoder = match &mut self.decoder {
            Some(d) => {
                d.reset(self.k, self.m, len).map_err(simd_err)?;
                d
            }
            slot @ None => slot.insert(
                reed_solomon_simd::ReedSolomonDecoder::new(self.k, self.m, len)
                    .map_err(simd_err)?,
            ),
        };
        for (i, s) in shards.iter().enumerate() {
            if let Some(s) = s {
                if i < self.k {
                    decoder.add_original_shard(i, s).map_err(simd_err)?;
                } else {
                    decoder
                        .add_recovery_shard(i - self.k, s)
                        .map_err(simd_err)?;
                }
            }
        }
        let result = decoder.decode().map_err(simd_err)?;
        for (i, slot) in shards[..self.k].iter_mut().enumerate() {
            if slot.is_none() {
                let restored = result
                    .restored_original(i)
                    .ok_or(ErasureError::Engine(format!(
                        "data shard {i} was not restored"
                    )))?;
                *slot = Some(restored.to_vec());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn stripe(k: usize, len: usize, seed: u8) -> Vec<Vec<u8>> {
        (0..k)
            .map(|i| {
                (0..len)
                    .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8 ^ seed))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn codes_are_distinct_and_named() {
        let data = stripe(4, 128, 9);
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut a = vec![Vec::new(); 2];
        let mut b = vec![Vec::new(); 2];
        ErasureCode::ReedSolomonGf8
            .coder(4, 2)
            .unwrap()
            .encode(&refs, &mut a)
            .unwrap();
        ErasureCode::LeopardGf16
            .coder(4, 2)
            .unwrap()
            .encode(&refs, &mut b)
            .unwrap();
        assert_ne!(
            a, b,
            "the two engines compute different codes; manifests must say which"
        );
        for c in ErasureCode::ALL {
            assert_eq!(ErasureCode::from_name(c.name()), Some(c));
        }
    }

    #[test]
    fn shapes_are_checked() {
        for code in ErasureCode::ALL {
            assert!(code.coder(0, 2).is_err());
            assert!(code.coder(4, 0).is_err());
            assert!(code.coder(129, 1).is_err());
            assert!(code.coder(32, 32).is_ok());
            let mut c = code.coder(2, 1).unwrap();
            let d = stripe(2, 100, 0); // not a multiple of SHARD_ALIGN
            let refs: Vec<&[u8]> = d.iter().map(Vec::as_slice).collect();
            assert!(matches!(
                c.encode(&refs, &mut [Vec::new()]),
                Err(ErasureError::Layout(_))
            ));
            let mut too_few = vec![Some(vec![0u8; 64]), None, None];
            assert!(matches!(
                c.reconstruct_data(&mut too_few),
                Err(ErasureError::TooFewShards {
                    present: 1,
                    need: 2
                })
            ));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn any_m_losses_reconstruct(
            k in 1usize..=32,
            m in 1usize..=32,
            blocks in 1usize..8,
            losses in proptest::collection::vec(any::<prop::sample::Index>(), 0..32),
            code in prop::sample::select(ErasureCode::ALL.to_vec()),
        ) {
            let len = blocks * SHARD_ALIGN;
            let data = stripe(k, len, k as u8 ^ m as u8);
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let mut coder = code.coder(k, m).unwrap();
            let mut parity = vec![Vec::new(); m];
            coder.encode(&refs, &mut parity).unwrap();
            let mut shards: Vec<Option<Vec<u8>>> = data.iter().cloned().chain(parity).map(Some).collect();
            for idx in losses.iter().take(m) {
                shards[idx.index(k + m)] = None;
            }
            coder.reconstruct_data(&mut shards).unwrap();
            for i in 0..k {
                prop_assert_eq!(shards[i].as_ref().unwrap(), &data[i]);
            }
        }
    }
}
