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
            write_whole(&dir.join(&path), slice)?;
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
    // Directories (never through a symbolic link), then the inline files, from one blocking
    // thread.
    let paths: Vec<String> = dataset.entries.keys().cloned().collect();
    let root = dir.to_path_buf();
    let inline_progress = progress.clone();
    total += tokio::task::spawn_blocking(move || {
        prepare(&root, &paths)?;
        let mut total = 0;
        for (target, bytes) in inline {
            write_whole(&target, &bytes)?;
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

/// Writes `bytes` as the file `target`: into a new temporary file beside it, then renamed
/// over it, so a symbolic link already at `target` is replaced, never followed, and a failure
/// (a full disk) leaves no truncated file under the real name.
fn write_whole(target: &Path, bytes: &[u8]) -> Result<(), ClientError> {
    use std::io::Write;
    let to = Output::File(target.to_path_buf());
    let tmp = crate::output::partial_path(target);
    let mut file = crate::output::create_partial(&tmp).map_err(writing(to.clone()))?;
    let mut partial = Partial(Some(tmp.clone()));
    file.write_all(bytes).map_err(writing(to.clone()))?;
    std::fs::rename(&tmp, target).map_err(writing(to))?;
    partial.0 = None;
    Ok(())
}

/// Makes the directories the dataset's `paths` need under `root`, one component at a time,
/// refusing to go through a symbolic link or past a file already there (`root` itself is the
/// caller's choice and may be a link); and refuses paths that differ only in case when
/// `root`'s filesystem ignores case.
fn prepare(root: &Path, paths: &[String]) -> Result<(), ClientError> {
    std::fs::create_dir_all(root).map_err(writing(Output::Dir(root.to_path_buf())))?;
    if let Some((a, b)) = case_collision(paths)
        && ignores_case(root)
    {
        return Err(ClientError::Entry {
            path: b,
            problem: EntryProblem::CaseCollision(a),
        });
    }
    let mut made = std::collections::BTreeSet::new();
    for path in paths {
        let problem = |p: EntryProblem| ClientError::Entry {
            path: path.clone(),
            problem: p,
        };
        let mut at = root.to_path_buf();
        let parts: Vec<&str> = path.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let last = i + 1 == parts.len();
            if !last && made.contains(&at) {
                continue;
            }
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() && !last => {
                    return Err(problem(EntryProblem::ThroughSymlink(at)));
                }
                // The file itself: a link there is replaced by the rename, not followed.
                Ok(_) if last => {}
                Ok(m) if m.is_dir() => {
                    made.insert(at.clone());
                }
                Ok(_) => return Err(problem(EntryProblem::NotADirectory(at))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !last => {
                    std::fs::create_dir(&at).map_err(writing(Output::Dir(at.clone())))?;
                    made.insert(at.clone());
                }
                Err(_) if last => {}
                Err(e) => return Err(writing(Output::Dir(at.clone()))(e)),
            }
        }
    }
    Ok(())
}

/// Two of `paths` that differ only in case, or whose directories do (`a` and `A/b`), if any.
/// Case is folded with `to_lowercase`, which covers what macOS and Windows fold for most
/// scripts (not every special case, nor Unicode normalization).
fn case_collision(paths: &[String]) -> Option<(String, String)> {
    let mut seen: HashMap<String, &str> = HashMap::new();
    for p in paths {
        // The path itself and each of its directories.
        let ends = p.match_indices('/').map(|(i, _)| i).chain([p.len()]);
        for end in ends {
            let part = &p[..end];
            if let Some(other) = seen.insert(part.to_lowercase(), part)
                && other != part
            {
                return Some((other.to_string(), p.clone()));
            }
        }
    }
    None
}

/// Whether the filesystem of `dir` ignores case (as macOS's does by default): a probe file's
/// name in another case finds it. (Only `dir` is probed; a directory below it that folds case
/// on its own, ext4's `+F`, is not.)
fn ignores_case(dir: &Path) -> bool {
    let probe = crate::output::partial_path(&dir.join("case-probe"));
    let Ok(_file) = crate::output::create_partial(&probe) else {
        return false;
    };
    let name = probe
        .file_name()
        .map(|n| n.to_string_lossy().to_uppercase())
        .unwrap_or_default();
    let found = std::fs::symlink_metadata(dir.join(name)).is_ok();
    let _ = std::fs::remove_file(&probe);
    found
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_never_made_through_a_symbolic_link() {
        let tmp = tempfile::tempdir().unwrap();
        let (root, outside) = (tmp.path().join("out"), tmp.path().join("outside"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("sub")).unwrap();
        let err = prepare(&root, &["sub/deeper/file.txt".into()]).unwrap_err();
        assert!(
            matches!(
                &err,
                ClientError::Entry {
                    problem: EntryProblem::ThroughSymlink(p),
                    ..
                } if p == &root.join("sub")
            ),
            "{err}"
        );
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // A file where a directory is needed is refused too; fresh paths are made.
        std::fs::write(root.join("plain"), b"x").unwrap();
        assert!(prepare(&root, &["plain/a".into()]).is_err());
        prepare(&root, &["a/b/c.txt".into(), "a/d.txt".into(), "top".into()]).unwrap();
        assert!(root.join("a/b").is_dir());
    }

    #[test]
    fn a_file_write_replaces_a_symbolic_link_and_never_follows_it() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep me").unwrap();
        let target = tmp.path().join("entry.txt");
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        write_whole(&target, b"dataset bytes").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
        assert!(!std::fs::symlink_metadata(&target).unwrap().is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"dataset bytes");
        // Nothing is left beside it.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    }

    #[test]
    fn names_that_differ_only_in_case_are_found() {
        let paths = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            case_collision(&paths(&["a/README", "b", "a/readme"])),
            Some(("a/README".into(), "a/readme".into()))
        );
        assert_eq!(case_collision(&paths(&["x/a", "y/a", "x/b"])), None);
        // A directory and a file, or two directories, that differ in case collide too.
        assert_eq!(
            case_collision(&paths(&["a", "b", "A/b"])),
            Some(("a".into(), "A/b".into()))
        );
        assert!(case_collision(&paths(&["Data/1", "data/2"])).is_some());
        // This test's directory (ext4, tmpfs) tells case apart: such datasets are written.
        let tmp = tempfile::tempdir().unwrap();
        assert!(!ignores_case(tmp.path()));
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "the probe is gone"
        );
        prepare(tmp.path(), &paths(&["x/A", "x/a"])).unwrap();
    }
}
