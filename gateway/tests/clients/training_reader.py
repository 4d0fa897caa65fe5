#!/usr/bin/env python3
"""What a training job does with Cairn's S3 gateway, with the tools it would use: boto3, awscli
and s3fs. Run by gateway/tests/python_clients.rs against a fresh devnet; exits non-zero on the
first difference.

Environment: CAIRN_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, CAIRN_DEVNET_JSON.
"""

import hashlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import tarfile
import tempfile

import boto3
import s3fs
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from script_helpers import check, log

ENDPOINT = os.environ["CAIRN_S3_ENDPOINT"]
BUCKET = "webdataset"
rng = random.Random(1234)


def make_shard(index, samples=24):
    """A WebDataset tar shard: per sample a .jpg-like blob, a .cls label and a .json."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for s in range(samples):
            key = f"sample{index:04d}{s:04d}"
            for ext, data in (
                ("jpg", rng.randbytes(rng.randint(20_000, 200_000))),
                ("cls", str(rng.randint(0, 999)).encode()),
                ("json", json.dumps({"shard": index, "i": s}).encode()),
            ):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def samples_of(fileobj):
    """Reads a tar stream the way a WebDataset loader does: sequentially, member by member."""
    out = {}
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for m in tar:
            f = tar.extractfile(m)
            out[m.name] = f.read() if f else b""
    return out


def main():
    s3 = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    s3.create_bucket(Bucket=BUCKET)

    # 1. WebDataset shards, uploaded with boto3.
    shards = {f"train/shard-{i:06d}.tar": make_shard(i) for i in range(8)}
    for key, data in shards.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=data, ContentType="application/x-tar")
    log(f"uploaded {len(shards)} tar shards ({sum(map(len, shards.values())) >> 20} MiB)")

    # 2. A 200 MiB object through boto3's multipart transfer manager.
    big = rng.randbytes(200 << 20)
    big_sha = hashlib.sha256(big).hexdigest()
    cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=16 << 20, max_concurrency=4)
    s3.upload_fileobj(io.BytesIO(big), BUCKET, "checkpoints/model.bin", Config=cfg)
    head = s3.head_object(Bucket=BUCKET, Key="checkpoints/model.bin")
    check(head["ContentLength"] == len(big), f"size {head['ContentLength']}")
    check(head["ETag"].strip('"').endswith("-13"), f"multipart ETag {head['ETag']}")
    check(head["Metadata"].get("cairn-cid", "").startswith("bafy"), f"cid in {head['Metadata']}")
    log(f"multipart upload ok: ETag {head['ETag']}")

    # 3. Listing with pagination.
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, PaginationConfig={"PageSize": 3}):
        keys += [o["Key"] for o in page.get("Contents", [])]
    check(keys == sorted(list(shards) + ["checkpoints/model.bin"]), f"listing {keys}")
    top = s3.list_objects_v2(Bucket=BUCKET, Delimiter="/")
    check([p["Prefix"] for p in top["CommonPrefixes"]] == ["checkpoints/", "train/"], f"prefixes {top}")

    # 4. awscli: ls, cp down, cp up, and a recursive sync.
    aws = [sys.executable, "-m", "awscli", "--endpoint-url", ENDPOINT, "--region", "us-east-1"]
    out = subprocess.run(aws + ["s3", "ls", f"s3://{BUCKET}/train/"], check=True, capture_output=True, text=True).stdout
    check(out.count(".tar") == len(shards), f"aws s3 ls: {out}")
    with tempfile.TemporaryDirectory() as tmp:
        dst = os.path.join(tmp, "s3.tar")
        subprocess.run(aws + ["s3", "cp", "--only-show-errors", f"s3://{BUCKET}/train/shard-000003.tar", dst], check=True)
        check(open(dst, "rb").read() == shards["train/shard-000003.tar"], "aws s3 cp download differs")
        os.makedirs(os.path.join(tmp, "up", "val"))
        local = {}
        for i in range(3):
            local[f"val/{i}.bin"] = rng.randbytes(rng.randint(1, 3 << 20))
            with open(os.path.join(tmp, "up", f"val/{i}.bin"), "wb") as f:
                f.write(local[f"val/{i}.bin"])
        subprocess.run(aws + ["s3", "sync", "--only-show-errors", os.path.join(tmp, "up"), f"s3://{BUCKET}/awscli/"], check=True)
        for rel, data in local.items():
            got = s3.get_object(Bucket=BUCKET, Key=f"awscli/{rel}")["Body"].read()
            check(got == data, f"aws s3 sync {rel} differs")
    log("awscli ok")

    # 5. s3fs: the file-like access PyTorch/fsspec readers use. Seek, read, and stream tars.
    fs = s3fs.S3FileSystem(
        key=os.environ["AWS_ACCESS_KEY_ID"],
        secret=os.environ["AWS_SECRET_ACCESS_KEY"],
        client_kwargs={"endpoint_url": ENDPOINT, "region_name": "us-east-1"},
        use_listings_cache=False,
    )
    listed = sorted(p.split("/", 1)[1] for p in fs.find(BUCKET))
    check(listed == sorted(keys + [f"awscli/{k}" for k in local]), f"s3fs find {listed}")
    order = list(shards)
    rng.shuffle(order)
    for key in order:
        with fs.open(f"{BUCKET}/{key}", "rb", block_size=1 << 20) as f:
            got = samples_of(f)
        want = samples_of(io.BytesIO(shards[key]))
        check(got == want, f"s3fs tar stream {key} differs")
    with fs.open(f"{BUCKET}/checkpoints/model.bin", "rb", block_size=4 << 20) as f:
        for _ in range(20):
            at = rng.randrange(0, len(big) - 100_000)
            f.seek(at)
            n = rng.randint(1, 100_000)
            check(f.read(n) == big[at : at + n], f"s3fs seek+read at {at}")
    log("s3fs ok")

    # 6. Random-order ranged GETs, as a shuffling data loader issues them.
    for _ in range(40):
        at = rng.randrange(0, len(big) - (1 << 20))
        n = rng.randint(1, 1 << 20)
        got = s3.get_object(Bucket=BUCKET, Key="checkpoints/model.bin", Range=f"bytes={at}-{at + n - 1}")["Body"].read()
        check(got == big[at : at + n], f"range {at}+{n}")
    log("ranged reads ok")

    # 7. Two of six nodes stop in the middle of a streaming read; reading goes on.
    devnet = json.load(open(os.environ["CAIRN_DEVNET_JSON"]))
    body = s3.get_object(Bucket=BUCKET, Key="checkpoints/model.bin")["Body"]
    h = hashlib.sha256()
    first = body.read(24 << 20)
    h.update(first)
    victims = [devnet["nodes"][2]["pid"], devnet["nodes"][5]["pid"]]
    for pid in victims:
        os.kill(pid, signal.SIGTERM)
    log(f"stopped nodes {victims} after {len(first) >> 20} MiB")
    while True:
        chunk = body.read(1 << 20)
        if not chunk:
            break
        h.update(chunk)
    check(h.hexdigest() == big_sha, "bytes read across the node failures differ")
    for key in order[:3]:
        with fs.open(f"{BUCKET}/{key}", "rb") as f:
            check(samples_of(f) == samples_of(io.BytesIO(shards[key])), f"{key} after failures")
    for _ in range(10):
        at = rng.randrange(0, len(big) - (1 << 20))
        got = s3.get_object(Bucket=BUCKET, Key="checkpoints/model.bin", Range=f"bytes={at}-{at + 65535}")["Body"].read()
        check(got == big[at : at + 65536], f"range after failures at {at}")
    log("reads survived two stopped nodes")
    print("ALL OK")


if __name__ == "__main__":
    main()
