//! Debian's `rclone` (1.60) against a real devnet and gateway, doing what an ML engineer does
//! with it: make a bucket, push a dataset tree (one file large enough for multipart), list it,
//! check it, pull it back, read a byte range, stream a tarball in, delete, sync and purge.
//! rclone is configured only through `RCLONE_CONFIG_CAIRN_*` variables and an empty config file,
//! so no user configuration is read. `./scripts/setup --s3-clients` installs rclone.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Net, bytes};
use tokio::io::AsyncWriteExt;

const MIB: usize = 1 << 20;
/// rclone's multipart cutoff and part size for these runs (its minimum part size is 5 MiB).
const PART: usize = 5 * MIB;
/// The upload that goes multipart: three parts, the last one short.
const BIG: usize = 2 * PART + 123_457;

/// Drives `rclone` with the remote `cairn:` pointed at the devnet's gateway.
struct Rclone {
    env: Vec<(String, String)>,
    gateway_log: PathBuf,
}

impl Rclone {
    fn new(net: &Net, home: &Path) -> Rclone {
        let gw = net.gateway();
        let config = home.join("rclone.conf");
        std::fs::write(&config, "").unwrap();
        let env = [
            ("RCLONE_CONFIG", config.display().to_string()),
            ("RCLONE_CACHE_DIR", home.join("cache").display().to_string()),
            ("RCLONE_CONFIG_CAIRN_TYPE", "s3".into()),
            ("RCLONE_CONFIG_CAIRN_PROVIDER", "Other".into()),
            ("RCLONE_CONFIG_CAIRN_ENV_AUTH", "false".into()),
            ("RCLONE_CONFIG_CAIRN_ENDPOINT", gw.endpoint.clone()),
            ("RCLONE_CONFIG_CAIRN_ACCESS_KEY_ID", gw.access_key.clone()),
            (
                "RCLONE_CONFIG_CAIRN_SECRET_ACCESS_KEY",
                gw.secret_key.clone(),
            ),
            ("RCLONE_CONFIG_CAIRN_REGION", "us-east-1".into()),
            ("RCLONE_CONFIG_CAIRN_FORCE_PATH_STYLE", "true".into()),
        ];
        Rclone {
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            gateway_log: gw.log.clone(),
        }
    }

    /// Runs `rclone ARGS` (no retries, so a single failed request fails the command), feeding
    /// `stdin` if given.
    async fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = tokio::process::Command::new("rclone");
        cmd.args(args)
            .args(["--retries", "1", "--low-level-retries", "1", "--stats", "0"]);
        // Only this configuration: no inherited rclone settings, and no AWS_* variables (the
        // AWS SDK inside rclone would honour e.g. AWS_CA_BUNDLE or AWS_PROFILE).
        for (key, _) in std::env::vars_os() {
            let key_s = key.to_string_lossy();
            if key_s.starts_with("AWS_") || key_s.starts_with("RCLONE_") {
                cmd.env_remove(&key);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap();
        if let Some(data) = stdin {
            // Fed from a task, so rclone's stdout and stderr are drained meanwhile.
            let (mut pipe, data) = (child.stdin.take().unwrap(), data.to_vec());
            tokio::spawn(async move {
                pipe.write_all(&data).await.unwrap();
                pipe.shutdown().await.unwrap();
            });
        }
        tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("rclone {args:?} did not finish within 300 s"))
            .unwrap()
    }

    /// Runs `rclone ARGS`, which must succeed; returns its stdout.
    async fn ok(&self, args: &[&str]) -> Vec<u8> {
        self.ok_with(args, None).await
    }

    async fn ok_with(&self, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
        let out = self.run(args, stdin).await;
        assert!(
            out.status.success(),
            "rclone {args:?} failed ({}):\n{}",
            out.status,
            self.explain(&out)
        );
        out.stdout
    }

    /// Runs `rclone ARGS`, which must fail; returns its stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args, None).await;
        assert!(
            !out.status.success(),
            "rclone {args:?} succeeded but should have failed:\n{}",
            self.explain(&out)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn explain(&self, out: &Output) -> String {
        let log = std::fs::read_to_string(&self.gateway_log).unwrap_or_default();
        let tail: Vec<_> = log.lines().rev().take(30).collect();
        format!(
            "stdout:\n{}\nstderr:\n{}\ngateway log (newest first):\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail.join("\n")
        )
    }

    /// `rclone lsjson -R --files-only REMOTE` as path → size.
    async fn listing(&self, remote: &str) -> BTreeMap<String, u64> {
        let out = self.ok(&["lsjson", "-R", "--files-only", remote]).await;
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("lsjson output is not JSON ({e}): {out:?}"));
        entries
            .iter()
            .map(|e| {
                assert_eq!(e["IsDir"], false, "{e}");
                (
                    e["Path"].as_str().unwrap().to_string(),
                    e["Size"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// The bucket names `rclone lsd cairn:` shows.
    async fn buckets(&self) -> Vec<String> {
        let out = self.ok(&["lsd", "cairn:"]).await;
        String::from_utf8(out)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_whitespace().last().map(str::to_string))
            .collect()
    }
}

fn require_rclone() {
    let probe = std::process::Command::new("rclone").arg("version").output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "rclone is not installed (or does not run): run ./scripts/setup --s3-clients (it installs Debian's rclone)"
    );
}

/// Every file under `root`, as relative path (with `/`) → bytes.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_str().unwrap();
                out.insert(rel.replace('\\', "/"), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn write_tree(root: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (rel, data) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
}

fn sizes(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, u64> {
    files
        .iter()
        .map(|(k, v)| (k.clone(), v.len() as u64))
        .collect()
}

/// The ETag a plain HEAD (aws-sdk-s3) sees for `key` in bucket `ml-data`.
async fn etag(net: &Net, key: &str) -> String {
    let head = net
        .s3()
        .head_object()
        .bucket("ml-data")
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("HEAD ml-data/{key}: {e:?}"));
    head.e_tag().unwrap_or_default().to_string()
}

/// A small dataset: shards, labels (one with a space in its name), a README and a checkpoint
/// above the multipart cutoff.
fn dataset() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for (i, name) in ["train/shard-000000.tar", "train/shard-000001.tar"]
        .iter()
        .enumerate()
    {
        files.insert(name.to_string(), bytes(40_000 + i * 777, i as u64 + 1));
    }
    files.insert("val/shard-000000.tar".into(), bytes(12_345, 11));
    files.insert(
        "val/labels 2024.json".into(),
        br#"{"0": "cat", "1": "dog"}"#.to_vec(),
    );
    files.insert(
        "README.md".into(),
        b"# toy dataset\nshards of random bytes\n".to_vec(),
    );
    files.insert("checkpoints/model.safetensors".into(), bytes(BIG, 42));
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_moves_a_dataset_in_and_out_of_a_bucket() {
    require_rclone();
    let net = Net::start(6).await;
    let tmp = tempfile::tempdir().unwrap();
    let rc = Rclone::new(&net, tmp.path());
    let part = format!("{}M", PART / MIB);
    let multipart = [
        "--s3-upload-cutoff",
        part.as_str(),
        "--s3-chunk-size",
        part.as_str(),
    ];

    // A bucket.
    rc.ok(&["mkdir", "cairn:ml-data"]).await;
    assert!(
        rc.buckets().await.contains(&"ml-data".to_string()),
        "lsd does not show the new bucket"
    );

    // Push the dataset tree; the checkpoint goes up in three parts.
    let files = dataset();
    let local = tmp.path().join("local");
    write_tree(&local, &files);
    let local_s = local.to_str().unwrap();
    let mut args = vec!["copy", local_s, "cairn:ml-data/v1"];
    args.extend(multipart);
    rc.ok(&args).await;

    // The checkpoint really went up in parts (its ETag is the multipart kind, "…-3").
    let tag = etag(&net, "v1/checkpoints/model.safetensors").await;
    assert!(tag.ends_with("-3\""), "checkpoint ETag {tag}");

    // Names and sizes, by lsjson and by ls.
    assert_eq!(rc.listing("cairn:ml-data/v1").await, sizes(&files));
    let ls = String::from_utf8(rc.ok(&["ls", "cairn:ml-data"]).await).unwrap();
    let mut listed = BTreeMap::new();
    for line in ls.lines() {
        let (size, name) = line.trim_start().split_once(' ').unwrap();
        listed.insert(name.to_string(), size.parse::<u64>().unwrap());
    }
    let expected: BTreeMap<_, _> = sizes(&files)
        .into_iter()
        .map(|(k, v)| (format!("v1/{k}"), v))
        .collect();
    assert_eq!(listed, expected, "rclone ls:\n{ls}");

    // check by hash (MD5: ETag for single-part objects, rclone's own metadata for multipart)
    // and by downloading.
    let out = rc.run(&["check", local_s, "cairn:ml-data/v1"], None).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && err.contains(": 0 differences found")
            && err.contains(&format!(": {} matching files", files.len()))
            && !err.contains("could not be checked"),
        "check by hash:\n{}",
        rc.explain(&out)
    );
    rc.ok(&["check", "--download", local_s, "cairn:ml-data/v1"])
        .await;
    // A local copy that differs in one shard is noticed.
    let altered = tmp.path().join("altered");
    let mut changed = files.clone();
    changed.get_mut("train/shard-000001.tar").unwrap()[100] ^= 0xff;
    write_tree(&altered, &changed);
    let out = rc
        .run(
            &[
                "check",
                "--download",
                "-v",
                "--differ",
                "-",
                altered.to_str().unwrap(),
                "cairn:ml-data/v1",
            ],
            None,
        )
        .await;
    assert!(
        !out.status.success() && out.stdout == b"train/shard-000001.tar\n",
        "check --download did not name (only) the altered shard:\n{}",
        rc.explain(&out)
    );

    // Pull it back down, byte for byte.
    let down = tmp.path().join("down");
    let mut args = vec!["copy", "cairn:ml-data/v1", down.to_str().unwrap()];
    args.extend(multipart);
    rc.ok(&args).await;
    assert!(tree(&down) == files, "the downloaded tree differs");

    // Ranged reads of the checkpoint: inside the first part, across the first part boundary,
    // and the tail (negative offset: a suffix range).
    let big = &files["checkpoints/model.safetensors"];
    let remote_big = "cairn:ml-data/v1/checkpoints/model.safetensors";
    for (offset, count) in [(1000, 4096), (PART - 100, 300), (2 * PART + 5, 77)] {
        let got = rc
            .ok(&[
                "cat",
                "--offset",
                &offset.to_string(),
                "--count",
                &count.to_string(),
                remote_big,
            ])
            .await;
        assert!(
            got == big[offset..offset + count],
            "cat --offset {offset} --count {count}: {} bytes, wrong content",
            got.len()
        );
    }
    let tail = rc.ok(&["cat", "--offset", "-1000", remote_big]).await;
    assert!(
        tail == big[big.len() - 1000..],
        "cat --offset -1000: {} bytes, wrong content",
        tail.len()
    );
    let readme = rc.ok(&["cat", "cairn:ml-data/v1/README.md"]).await;
    assert_eq!(readme, files["README.md"]);

    // Stream a tarball of unknown size in (multipart from stdin) and read it back.
    let stream = bytes(PART + 654_321, 7);
    let mut args = vec!["rcat", "cairn:ml-data/streamed/batch.tar"];
    args.extend(["--streaming-upload-cutoff", "100k"]);
    args.extend(multipart);
    rc.ok_with(&args, Some(&stream)).await;
    let tag = etag(&net, "streamed/batch.tar").await;
    assert!(tag.ends_with("-2\""), "streamed upload ETag {tag}");
    let back = rc.ok(&["cat", "cairn:ml-data/streamed/batch.tar"]).await;
    assert!(
        back == stream,
        "rcat then cat: {} bytes back of {}",
        back.len(),
        stream.len()
    );

    // Delete one file, then a whole prefix.
    rc.ok(&["deletefile", "cairn:ml-data/v1/train/shard-000001.tar"])
        .await;
    // (rclone treats a missing S3 key as an empty directory, so `cat` prints nothing and
    // succeeds; a plain HEAD must say 404.)
    let gone = rc
        .ok(&["cat", "cairn:ml-data/v1/train/shard-000001.tar"])
        .await;
    assert!(
        gone.is_empty(),
        "cat of a deleted file printed {} bytes",
        gone.len()
    );
    let head = net
        .s3()
        .head_object()
        .bucket("ml-data")
        .key("v1/train/shard-000001.tar")
        .send()
        .await;
    assert_eq!(
        head.map_err(|e| e.raw_response().map(|r| r.status().as_u16()))
            .err(),
        Some(Some(404)),
        "HEAD of a deleted file"
    );
    rc.ok(&["delete", "cairn:ml-data/v1/val"]).await;
    let mut expected = sizes(&files);
    expected.remove("train/shard-000001.tar");
    expected.retain(|k, _| !k.starts_with("val/"));
    assert_eq!(rc.listing("cairn:ml-data/v1").await, expected);

    // sync makes the bucket match a changed local tree: restores what was deleted, uploads a
    // new file, removes what the local side no longer has.
    let mut next = files.clone();
    next.remove("README.md");
    next.insert("train/shard-000002.tar".into(), bytes(33_333, 3));
    let synced = tmp.path().join("next");
    write_tree(&synced, &next);
    let mut args = vec!["sync", synced.to_str().unwrap(), "cairn:ml-data/v1"];
    args.extend(multipart);
    rc.ok(&args).await;
    assert_eq!(rc.listing("cairn:ml-data/v1").await, sizes(&next));
    rc.ok(&[
        "check",
        "--download",
        synced.to_str().unwrap(),
        "cairn:ml-data/v1",
    ])
    .await;

    // An empty bucket goes with rmdir, a full one with purge.
    rc.ok(&["mkdir", "cairn:scratch"]).await;
    assert!(rc.buckets().await.contains(&"scratch".to_string()));
    rc.ok(&["rmdir", "cairn:scratch"]).await;
    rc.ok(&["purge", "cairn:ml-data"]).await;
    let left = rc.buckets().await;
    assert!(
        !left.iter().any(|b| b == "scratch" || b == "ml-data"),
        "buckets left after rmdir and purge: {left:?}"
    );
    rc.fails(&["lsjson", "-R", "cairn:ml-data"]).await;

    net.stop().await;
}
