//! Buffer recycling: stripe and parity buffers return to their encoder's pool when the last
//! [`Bytes`] pointing into them is dropped, and finished encoders leave theirs to the next.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Recycles stripe and parity buffers so steady-state encoding allocates (and page-faults)
/// nothing: a buffer returns here when the last [`Bytes`] pointing into it is dropped.
pub(super) struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Pool {
    pub(super) fn new(keep: usize) -> Arc<Self> {
        Arc::new(Self {
            free: Mutex::new(Vec::new()),
            keep,
        })
    }

    /// A buffer of exactly `len` bytes (contents unspecified): one of this pool's, else one a
    /// finished encoder left behind, else a new one.
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
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

    pub(super) fn freeze(self: &Arc<Self>, buf: Vec<u8>, len: usize) -> Bytes {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{EncodeParams, Encoder};
    use std::io;

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
}
