//! Datasets: inline files, packs (read whole, cut into their files) and object files (written
//! beside their place and renamed into it), each checked against its BLAKE3.

use std::collections::HashMap;
use std::path::Path;

use cairn_chunker::Cid;
use cairn_chunker::manifest::{DatasetManifest, Location};
use futures::StreamExt;

use super::{Incidents, object_manifest, read_object_to, read_object_to_vec};
use crate::error::{ClientError, EntryProblem, Output, task, writing};
use crate::network::Network;
use crate::put::Progress;

/// Object files of a dataset read at once (each also reads up to
/// [`STRIPES_IN_FLIGHT`](super::STRIPES_IN_FLIGHT) stripes ahead), beside up to
/// [`PACKS_IN_FLIGHT`] packs (each held whole in memory while it is cut into its files).
pub const FILES_IN_FLIGHT: usize = 4;
/// Packs read at once by [`read_dataset`].
pub const PACKS_IN_FLIGHT: usize = 2;
/// The largest pack [`read_dataset`] holds in memory (ours are at most 64 MiB and one file
/// under 256 KiB).
pub const MAX_PACK: u64 = 256 << 20;

/// A temporary file removed when dropped, unless it was renamed into place.
struct Partial(Option<std::path::PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads one object of a dataset into `target`: written to its [`crate::output::partial_path`]
/// from a writer thread, synced, then renamed into place (a failed or cancelled read leaves
/// nothing).
async fn read_dataset_object(
    net: &Network,
    path: &str,
    cid: &Cid,
    entry: (u64, blake3::Hash),
    target: std::path::PathBuf,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let manifest = object_manifest(net, cid).await?;
    if manifest.size != entry.0 || manifest.blake3 != entry.1 {
        return Err(ClientError::Entry {
            path: path.to_string(),
            problem: EntryProblem::ObjectMismatch(Box::new(*cid)),
        });
    }
    let tmp = crate::output::partial_path(&target);
    let to = Output::File(target.clone());
    let file = crate::output::create_partial(&tmp).map_err(writing(to.clone()))?;
    let mut partial = Partial(Some(tmp.clone()));
    let mut sink = crate::output::FileSink::new(file, to.clone());
    let n = read_object_to(net, &manifest, None, &mut sink, progress, incidents).await?;
    let file = sink.finish().await?;
    tokio::task::spawn_blocking(move || {
        file.sync_all()?;
        std::fs::rename(&tmp, &target)
    })
    .await
    .map_err(task("writing a file"))?
    .map_err(writing(to))?;
    partial.0 = None;
    Ok(n)
}

/// Reads one pack of a dataset and cuts it into its files (each checked against its BLAKE3),
/// written from one blocking thread.
async fn read_dataset_pack(
    net: &Network,
    pack: &Cid,
    files: Vec<(String, u64, u64, blake3::Hash)>,
    dir: &Path,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let manifest = object_manifest(net, pack).await?;
    if manifest.size > MAX_PACK {
        return Err(ClientError::PackTooLarge {
            pack: Box::new(*pack),
            size: manifest.size,
            max: MAX_PACK,
        });
    }
    let bytes = read_object_to_vec(net, &manifest, incidents).await?;
    let (dir, pack) = (dir.to_path_buf(), *pack);
    tokio::task::spawn_blocking(move || {
        let mut total = 0;
        for (path, offset, size, hash) in files {
            let slice = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(offset.saturating_add(size)).ok())
                .and_then(|(start, end)| bytes.get(start..end))
                .ok_or_else(|| ClientError::Entry {
                    path: path.clone(),
                    problem: EntryProblem::OutsidePack(Box::new(pack)),
                })?;
            check_file(&path, slice, &hash)?;
            let target = dir.join(&path);
            if let Err(e) = std::fs::write(&target, slice) {
                // No truncated file under the real name (a full disk, say).
                let _ = std::fs::remove_file(&target);
                return Err(writing(Output::File(target))(e));
            }
            total += size;
            progress(size);
        }
        Ok(total)
    })
    .await
    .map_err(task("writing a pack's files"))?
}

/// Writes every file of a dataset under `dir`, each checked against its BLAKE3. Up to
/// [`FILES_IN_FLIGHT`] object files and [`PACKS_IN_FLIGHT`] packs are read at once; the first
/// failure stops the read. Files already written stay (whole and verified); none is left
/// half-written under its own name.
pub async fn read_dataset(
    net: &Network,
    dataset: &DatasetManifest,
    dir: &Path,
    progress: Progress,
    incidents: &Incidents,
) -> Result<u64, ClientError> {
    let mut total = 0u64;
    // Packs are fetched once each, then cut into their files.
    let mut packs: HashMap<Cid, Vec<(String, u64, u64, blake3::Hash)>> = HashMap::new();
    let mut objects = Vec::new();
    let mut inline = Vec::new();
    for (path, entry) in &dataset.entries {
        let target = dir.join(path);
        match &entry.location {
            Location::Inline(bytes) => {
                check_file(path, bytes, &entry.blake3)?;
                inline.push((target, bytes.clone()));
            }
            Location::Packed { pack, offset } => {
                packs.entry(*pack).or_default().push((
                    path.clone(),
                    *offset,
                    entry.size,
                    entry.blake3,
                ));
            }
            Location::Object(cid) => objects.push((path, cid, entry, target)),
        }
    }
    // Directories, then the inline files, from one blocking thread.
    let dirs: std::collections::BTreeSet<std::path::PathBuf> = dataset
        .entries
        .keys()
        .filter_map(|p| dir.join(p).parent().map(Path::to_path_buf))
        .collect();
    let inline_progress = progress.clone();
    total += tokio::task::spawn_blocking(move || {
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(writing(Output::Dir(d)))?;
        }
        let mut total = 0;
        for (target, bytes) in inline {
            std::fs::write(&target, &bytes).map_err(writing(Output::File(target)))?;
            total += bytes.len() as u64;
            inline_progress(bytes.len() as u64);
        }
        Ok::<u64, ClientError>(total)
    })
    .await
    .map_err(task("writing a dataset's directories"))??;

    // Packs and object files each have their own bound, so packs waiting for memory do not
    // hold back object files, and the other way round.
    let pack_reads = futures::stream::iter(packs.into_iter().map(|(pack, files)| {
        let progress = progress.clone();
        async move { read_dataset_pack(net, &pack, files, dir, progress, incidents).await }
    }))
    .buffer_unordered(PACKS_IN_FLIGHT);
    let object_reads =
        futures::stream::iter(objects.into_iter().map(|(path, cid, entry, target)| {
            let progress = progress.clone();
            read_dataset_object(
                net,
                path,
                cid,
                (entry.size, entry.blake3),
                target,
                progress,
                incidents,
            )
        }))
        .buffer_unordered(FILES_IN_FLIGHT);
    let mut reads = std::pin::pin!(futures::stream::select(pack_reads, object_reads));
    while let Some(n) = reads.next().await {
        total += n?;
    }
    Ok(total)
}

fn check_file(path: &str, bytes: &[u8], expected: &blake3::Hash) -> Result<(), ClientError> {
    if blake3::hash(bytes) != *expected {
        return Err(ClientError::Entry {
            path: path.to_string(),
            problem: EntryProblem::HashMismatch,
        });
    }
    Ok(())
}
