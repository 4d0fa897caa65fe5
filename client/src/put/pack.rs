//! Small files packed: read on the walker's thread into the pack being filled, which holds a
//! permit (packs in memory are bounded) until it is stored.

use std::path::PathBuf;
use std::sync::Arc;

use md5::{Digest, Md5};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::PACK_THRESHOLD;
use crate::error::{ClientError, reading};

/// Small files gathered into one pack object.
#[derive(Default)]
pub(super) struct Pack {
    pub(super) bytes: Vec<u8>,
    /// Files in `bytes`.
    pub(super) members: Vec<Member>,
}

/// A file in a [`Pack`].
pub(super) struct Member {
    pub(super) path: String,
    pub(super) offset: u64,
    pub(super) size: u64,
    pub(super) blake3: blake3::Hash,
    pub(super) md5: Option<[u8; 16]>,
}

/// What [`put_dir`](super::put_dir)'s walker hands to its uploads.
pub(super) enum Job {
    /// An empty file (stored inline in the dataset manifest).
    Empty { rel: String },
    /// A file to store as an object of its own.
    File {
        rel: String,
        path: PathBuf,
        size: u64,
    },
    /// A pack to store, with the permit that bounds packs in memory.
    Pack(Pack, OwnedSemaphorePermit),
}

/// One file of [`put_dir`](super::put_dir)'s walk: a job for it, or `None` when it went into
/// the pack being filled (started, with a permit, if there was none).
pub(super) fn walk_one(
    rel: String,
    path: PathBuf,
    md5: bool,
    pack: &mut Option<(Pack, OwnedSemaphorePermit)>,
    packs: &Arc<Semaphore>,
    runtime: &tokio::runtime::Handle,
) -> Result<Option<Job>, ClientError> {
    let size = std::fs::metadata(&path).map_err(reading(&path))?.len();
    if size == 0 {
        return Ok(Some(Job::Empty { rel }));
    }
    if size >= PACK_THRESHOLD {
        return Ok(Some(Job::File { rel, path, size }));
    }
    let data = std::fs::read(&path).map_err(reading(&path))?;
    let (p, _) = match pack {
        Some(p) => p,
        None => {
            let permit = runtime
                .block_on(packs.clone().acquire_owned())
                .map_err(|_| {
                    ClientError::Encode(cairn_chunker::pipeline::EncodeError::Pipeline(
                        "dataset upload stopped",
                    ))
                })?;
            pack.insert((Pack::default(), permit))
        }
    };
    let offset = p.bytes.len() as u64;
    p.bytes.extend_from_slice(&data);
    p.members.push(Member {
        path: rel,
        offset,
        size: data.len() as u64,
        blake3: blake3::hash(&data),
        md5: md5.then(|| Md5::digest(&data).into()),
    });
    Ok(None)
}
