//! The Python S3 clients a training job or a data pipeline uses (boto3, awscli, s3fs, pyarrow),
//! each driven by a script in `tests/clients/` against a real devnet and gateway. The tools come
//! from `./scripts/setup --s3-clients`, which installs them in a virtualenv and exports its path
//! as `CAIRN_PYTHON` in `./scripts/test`.

mod common;

use std::path::PathBuf;

use common::Net;

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CAIRN_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let venv = home.join(".cache/cairn/venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs `tests/clients/{script}` with `python` against a fresh devnet and gateway; it must print
/// `ALL OK`.
async fn run_script(script: &str, modules: &str) {
    let py = python();
    let probe = std::process::Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{} lacks {modules}: run ./scripts/setup --s3-clients (it installs them in ~/.cache/cairn/venv)",
        py.display()
    );
    let net = Net::start(6).await;
    let gw = net.gateway().clone();
    let script = PathBuf::from(manifest_dir())
        .join("tests/clients")
        .join(script);
    let out = tokio::process::Command::new(&py)
        .arg(&script)
        .env("CAIRN_S3_ENDPOINT", &gw.endpoint)
        .env("AWS_ACCESS_KEY_ID", &gw.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &gw.secret_key)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("CAIRN_DEVNET_JSON", net.devnet_dir().join("devnet.json"))
        .env_remove("AWS_PROFILE")
        // No __pycache__ left in the checkout.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "script failed ({}):\n{stdout}\n{stderr}\ngateway log: {}",
        out.status,
        std::fs::read_to_string(&gw.log)
            .unwrap_or_default()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_awscli_and_s3fs_read_a_webdataset_through_node_failures() {
    run_script("training_reader.py", "boto3, s3fs, awscli").await;
}

/// pyarrow's S3 filesystem (the AWS C++ SDK): Parquet written, read whole, by column and
/// filtered; seeks in a large object; copy, list, delete, and buckets made and removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_writes_reads_and_filters_parquet() {
    run_script("arrow_reader.py", "pyarrow").await;
}

/// boto3 asks every listing for `encoding-type=url` and decodes the keys, prefixes and markers
/// of one that says it is encoded: keys with '+', '%' or ' ' list as they were put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_lists_keys_with_url_characters_as_they_are() {
    run_script("listing_keys.py", "boto3").await;
}

/// This package's directory, as cargo says when it runs the test (a build shared between
/// checkouts in different places must not point into another one).
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}
