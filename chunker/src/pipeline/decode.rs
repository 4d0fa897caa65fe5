//! Decoding: one stripe from any `k` of its shards, or a whole object to a writer.

use std::io::{self, Write};

use bytes::Bytes;

use crate::cids::{self, Cid};
use crate::erasure::{ErasureCoder, ErasureError};
use crate::manifest::{ErasureParams, ManifestError, ObjectManifest, ShardRef, Stripe};

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
    ///
    /// [`verified::RangeDecoder`]: crate::verified::RangeDecoder
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

impl StripeDecoder {
    /// Rebuilds every shard of stripe `index`, data and parity, from any `k` of them (`k + m`
    /// entries, `None` where unavailable; given shards are verified against their CIDs unless
    /// `verify` is false). Returns all `k + m` shards at their stored lengths (zero-length data
    /// shards empty); every rebuilt one is checked against its CID, so a repair never stores
    /// a shard that is not the one the manifest names.
    pub fn rebuild_all(
        &mut self,
        index: usize,
        stripe: &Stripe,
        shards: Vec<Option<Bytes>>,
        verify: bool,
    ) -> Result<Vec<Bytes>, DecodeError> {
        let k = stripe.data.len();
        let given = shards.clone();
        let data = self.decode(index, stripe, shards, verify)?.data;
        let plen = stripe.parity_len as usize;
        let mut out: Vec<Bytes> = data.clone();
        if stripe.parity.is_empty() {
            return Ok(out);
        }
        let missing_parity = (0..stripe.parity.len()).any(|j| {
            given
                .get(k + j)
                .and_then(Option::as_ref)
                .is_none_or(|b| b.len() != plen || (verify && cids::raw(b) != stripe.parity[j]))
        });
        let parity: Vec<Bytes> = if missing_parity {
            let padded: Vec<Vec<u8>> = data
                .iter()
                .map(|d| {
                    let mut v = Vec::with_capacity(plen);
                    v.extend_from_slice(d);
                    v.resize(plen, 0);
                    v
                })
                .collect();
            let refs: Vec<&[u8]> = padded.iter().map(Vec::as_slice).collect();
            let mut parity = vec![Vec::new(); stripe.parity.len()];
            self.coder.encode(&refs, &mut parity)?;
            parity.into_iter().map(Bytes::from).collect()
        } else {
            given[k..]
                .iter()
                .map(|b| b.clone().unwrap_or_default())
                .collect()
        };
        for (j, p) in parity.iter().enumerate() {
            if p.len() != plen || cids::raw(p) != stripe.parity[j] {
                return Err(DecodeError::Inconsistent {
                    stripe: index,
                    index: k + j,
                    cid: Box::new(stripe.parity[j]),
                });
            }
        }
        out.extend(parity);
        Ok(out)
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
