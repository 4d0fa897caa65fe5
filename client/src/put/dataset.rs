//! Datasets: a directory tree walked on a blocking thread (small files packed), its files and
//! packs uploaded a few at once, then the signed dataset manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use cairn_chunker::manifest::{DatasetEntry, DatasetManifest, Location, check_path};
use cairn_chunker::{Cid, cids};
use cairn_wire::protocol::ManifestKind;
use ed25519_dalek::SigningKey;
use futures::StreamExt;
use libp2p::PeerId;
use md5::{Digest, Md5};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::pack::{Job, Member, Pack, walk_one};
use super::store::publish_manifest;
use super::{
    Input, ObjectReport, PACKS_IN_FLIGHT, Progress, PutOptions, UPLOADS_IN_FLIGHT, put_object,
};
use crate::error::{ClientError, reading, task};
use crate::get::Incidents;
use crate::network::Network;

/// What a dataset upload did.
#[derive(Debug, Clone)]
pub struct DatasetReport {
    /// The dataset manifest's CID.
    pub cid: Cid,
    /// The manifest.
    pub manifest: DatasetManifest,
    /// Files.
    pub files: usize,
    /// Bytes of all files.
    pub bytes: u64,
    /// Pack objects written.
    pub packs: usize,
    /// Files stored as objects of their own.
    pub objects: usize,
    /// Shards stored in all.
    pub shards: usize,
    /// Storage receipts collected in all (see [`ObjectReport::receipts`]), each kept beside
    /// the manifest of the file or pack whose shard it names.
    pub receipts: usize,
    /// Nodes holding the dataset manifest.
    pub manifest_copies: usize,
    /// Each file's MD5 by path, when [`PutOptions::md5`] asked for them.
    pub md5: BTreeMap<String, [u8; 16]>,
    /// Nodes that failed or went silent while shards were stored on them (see
    /// [`ObjectReport::incidents`]).
    pub incidents: Vec<(PeerId, String)>,
}

/// An upload of [`put_dir`] that has finished.
enum Uploaded {
    /// An empty file.
    Empty { rel: String },
    /// A pack and the files in it.
    Pack {
        report: ObjectReport,
        members: Vec<Member>,
    },
    /// A file stored as an object of its own.
    Object { rel: String, report: ObjectReport },
}

/// Stores a pack as an object; its files count as progress once it is stored.
async fn upload_pack(
    net: Option<&Network>,
    key: &SigningKey,
    opts: &PutOptions,
    progress: Progress,
    pack: Pack,
) -> Result<Uploaded, ClientError> {
    let quiet: Progress = Arc::new(|_| {});
    let report = put_object(net, key, Input::Bytes(Bytes::from(pack.bytes)), opts, quiet).await?;
    for m in &pack.members {
        progress(m.size);
    }
    Ok(Uploaded::Pack {
        report,
        members: pack.members,
    })
}

/// Stores a file as an object of its own.
async fn upload_file(
    net: Option<&Network>,
    key: &SigningKey,
    opts: &PutOptions,
    progress: Progress,
    (rel, path, size): (String, PathBuf, u64),
) -> Result<Uploaded, ClientError> {
    let file = std::fs::File::open(&path).map_err(reading(&path))?;
    let report = put_object(net, key, Input::Reader(Box::new(file)), opts, progress)
        .await
        .map_err(|e| e.reading_from(&path))?;
    if report.manifest.size != size {
        return Err(ClientError::InputChanged(path));
    }
    Ok(Uploaded::Object { rel, report })
}

/// Records a finished upload in the dataset manifest and the report.
fn record(done: Uploaded, md5: bool, manifest: &mut DatasetManifest, report: &mut DatasetReport) {
    match done {
        Uploaded::Empty { rel } => {
            if md5 {
                report.md5.insert(rel.clone(), Md5::digest(b"").into());
            }
            manifest.entries.insert(
                rel,
                DatasetEntry {
                    size: 0,
                    blake3: blake3::hash(b""),
                    location: Location::Inline(Vec::new()),
                    meta: BTreeMap::new(),
                },
            );
        }
        Uploaded::Pack { report: r, members } => {
            report.packs += 1;
            report.shards += r.shards;
            report.receipts += r.receipts;
            report.incidents.extend(r.incidents);
            for m in members {
                if let Some(md5) = m.md5 {
                    report.md5.insert(m.path.clone(), md5);
                }
                manifest.entries.insert(
                    m.path,
                    DatasetEntry {
                        size: m.size,
                        blake3: m.blake3,
                        location: Location::Packed {
                            pack: r.cid,
                            offset: m.offset,
                        },
                        meta: BTreeMap::new(),
                    },
                );
            }
        }
        Uploaded::Object { rel, report: r } => {
            report.objects += 1;
            report.shards += r.shards;
            report.receipts += r.receipts;
            report.incidents.extend(r.incidents);
            if let Some(md5) = r.md5 {
                report.md5.insert(rel.clone(), md5);
            }
            manifest.entries.insert(
                rel,
                DatasetEntry {
                    size: r.manifest.size,
                    blake3: r.manifest.blake3,
                    location: Location::Object(r.cid),
                    meta: BTreeMap::new(),
                },
            );
        }
    }
}

/// The files of a directory tree, sorted by their `/`-separated relative path.
pub fn walk(root: &Path) -> Result<Vec<(String, PathBuf, u64)>, ClientError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(reading(&dir))?;
        for entry in entries {
            let entry = entry.map_err(reading(&dir))?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).map_err(reading(&path))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let rel = path
                    .strip_prefix(root)
                    .map_err(|_| ClientError::OutsideRoot {
                        path: path.clone(),
                        root: root.to_path_buf(),
                    })?;
                let rel = rel
                    .to_str()
                    .ok_or_else(|| ClientError::NotUtf8(path.clone()))?
                    .to_string();
                check_path(&rel)?;
                out.push((rel, path, meta.len()));
            }
            // Symlinks and special files are not data: skipped.
        }
    }
    out.sort();
    Ok(out)
}

/// Uploads a directory tree as a dataset: small files packed into pack objects, large files
/// as objects of their own, then the signed dataset manifest.
pub async fn put_dir(
    net: Option<&Network>,
    key: &SigningKey,
    root: &Path,
    opts: &PutOptions,
    progress: Progress,
) -> Result<DatasetReport, ClientError> {
    let files = walk(root)?;
    let mut manifest = DatasetManifest::new();
    let mut report = DatasetReport {
        cid: cids::dag_cbor(b""),
        manifest: DatasetManifest::new(),
        files: files.len(),
        bytes: files.iter().map(|f| f.2).sum(),
        packs: 0,
        objects: 0,
        shards: 0,
        receipts: 0,
        manifest_copies: 0,
        md5: BTreeMap::new(),
        incidents: Vec::new(),
    };
    let mut object_opts = opts.clone();
    object_opts.content_type = None;
    object_opts.metadata.clear();
    // The uploads in flight share the byte budget one upload would have.
    object_opts.inflight_bytes = (opts.inflight_bytes / UPLOADS_IN_FLIGHT).max(1 << 20);
    let object_opts = &object_opts;
    // A blocking thread walks the files, reads the small ones and packs them; this task uploads
    // what it hands over, UPLOADS_IN_FLIGHT at once. A pack holds a permit from the time it is
    // started until it is stored, so at most PACKS_IN_FLIGHT packs are in memory. The manifest
    // is a sorted map: the order uploads finish in does not matter.
    let (tx, rx) = mpsc::channel::<Result<Job, ClientError>>(1);
    let packs = Arc::new(Semaphore::new(PACKS_IN_FLIGHT));
    let (md5, pack_target) = (opts.md5, opts.pack_target.max(1));
    let walker = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Handle::current();
        let mut pack: Option<(Pack, OwnedSemaphorePermit)> = None;
        let mut files = files.into_iter().peekable();
        while let Some((rel, path, _)) = files.next() {
            if tx.is_closed() {
                return; // the upload failed or was dropped: read no more
            }
            let job = match walk_one(rel, path, md5, &mut pack, &packs, &runtime) {
                Ok(Some(job)) => Ok(job),
                Ok(None) => {
                    let full = pack.as_ref().is_some_and(|(p, _)| {
                        p.bytes.len() >= pack_target || files.peek().is_none()
                    });
                    match pack.take_if(|_| full) {
                        Some((p, permit)) => Ok(Job::Pack(p, permit)),
                        None => continue,
                    }
                }
                Err(e) => Err(e),
            };
            let failed = job.is_err();
            if tx.blocking_send(job).is_err() || failed {
                return;
            }
        }
        // The last file was not a small one: the pack being filled goes last.
        if let Some((p, permit)) = pack.take() {
            let _ = tx.blocking_send(Ok(Job::Pack(p, permit)));
        }
    });
    let jobs = futures::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|job| (job, rx)) },
    );
    let mut uploads = std::pin::pin!(
        jobs.map(|job| {
            let progress = progress.clone();
            async move {
                match job? {
                    Job::Empty { rel } => Ok(Uploaded::Empty { rel }),
                    Job::File { rel, path, size } => {
                        upload_file(net, key, object_opts, progress, (rel, path, size)).await
                    }
                    Job::Pack(pack, permit) => {
                        let done = upload_pack(net, key, object_opts, progress, pack).await;
                        drop(permit);
                        done
                    }
                }
            }
        })
        .buffer_unordered(UPLOADS_IN_FLIGHT)
    );
    while let Some(done) = uploads.next().await {
        record(done?, md5, &mut manifest, &mut report);
    }
    walker.await.map_err(task("the dataset walk"))?;
    manifest.validate()?;
    let bytes = manifest.to_bytes();
    let cid = cids::dag_cbor(&bytes);
    if let Some(net) = net {
        let notes = Incidents::default();
        report.manifest_copies = publish_manifest(
            net,
            key,
            &cid,
            ManifestKind::Dataset,
            &bytes,
            opts,
            Some(&notes),
        )
        .await?;
        report.incidents.extend(notes.list());
    }
    report.cid = cid;
    report.manifest = manifest;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::put::PACK_THRESHOLD;

    /// Offline (`cid --object DIR`): many packs and files of their own, with the walker filling
    /// packs faster than they are "stored". Packs hold consecutive files in walk order, each
    /// closed at the target, and the dataset is the same on every run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn datasets_pack_files_in_walk_order_whatever_finishes_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut sizes = BTreeMap::new();
        for i in 0..120usize {
            // Every seventh file is over the pack threshold.
            let size = if i % 7 == 3 {
                300_000 + i
            } else {
                40_000 + i * 101
            };
            let rel = format!("d{}/f{i:03}.bin", i % 3);
            let path = dir.path().join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![(i % 251) as u8; size]).unwrap();
            sizes.insert(rel, size as u64);
        }
        let key = SigningKey::from_bytes(&[7; 32]);
        let opts = PutOptions {
            pack_target: 1 << 20,
            ..PutOptions::default()
        };
        let quiet: Progress = Arc::new(|_| {});
        let a = put_dir(None, &key, dir.path(), &opts, quiet.clone())
            .await
            .unwrap();
        let b = put_dir(None, &key, dir.path(), &opts, quiet).await.unwrap();
        assert_eq!(a.cid, b.cid);
        assert_eq!(a.files, 120);
        assert_eq!(a.objects, (0..120).filter(|i| i % 7 == 3).count());
        assert_eq!(a.bytes, sizes.values().sum::<u64>());
        // Walk order (sorted paths): each pack's files are consecutive small files, at
        // consecutive offsets, and a pack is closed as soon as it reaches the target.
        let mut packs: Vec<(Cid, u64)> = Vec::new();
        for (path, entry) in &a.manifest.entries {
            assert_eq!(entry.size, sizes[path], "{path}");
            match &entry.location {
                Location::Packed { pack, offset } => match packs.last_mut() {
                    Some((cid, end)) if cid == pack => {
                        assert_eq!(*offset, *end, "{path} is not next in its pack");
                        *end += entry.size;
                    }
                    _ => {
                        assert_eq!(*offset, 0, "{path} does not start its pack");
                        if let Some((_, end)) = packs.last() {
                            assert!(*end >= 1 << 20, "a pack was closed early at {end}");
                        }
                        assert!(
                            !packs.iter().any(|(c, _)| c == pack),
                            "{path} goes back to an earlier pack"
                        );
                        packs.push((*pack, entry.size));
                    }
                },
                Location::Object(_) => assert!(entry.size >= PACK_THRESHOLD, "{path}"),
                Location::Inline(_) => panic!("{path} is not empty"),
            }
        }
        assert_eq!(a.packs, packs.len());
        assert!(packs.len() >= 4, "only {} packs", packs.len());
    }
}
