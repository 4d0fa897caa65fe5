#!/usr/bin/env python3
"""What a data pipeline does with Cairn's S3 gateway through pyarrow's own S3 filesystem (the AWS
C++ SDK, a client apart from boto3's): write Parquet files, read them back whole, by column and
with a filter pushed down, seek in a large object, copy, list and delete. Run by
gateway/tests/python_clients.rs against a fresh devnet; exits non-zero on the first difference.

Environment: CAIRN_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
"""

import os
import random
import sys

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from script_helpers import check, log

ENDPOINT = os.environ["CAIRN_S3_ENDPOINT"]
BUCKET = "arrow-data"
rng = random.Random(4321)


def main():
    scheme, rest = ENDPOINT.split("://", 1)
    s3 = pafs.S3FileSystem(
        access_key=os.environ["AWS_ACCESS_KEY_ID"],
        secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=rest,
        scheme=scheme,
        region="us-east-1",
        allow_bucket_creation=True,
        allow_bucket_deletion=True,
        # The SDK's own retries would hide a failed request; the test wants to see it.
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
    )
    s3.create_dir(BUCKET)

    # A table of 600,000 rows in row groups of 100,000: a ~10 MB Parquet file, written as a
    # multipart upload by the SDK, and a small one.
    n = 600_000
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "x": pa.array([rng.random() for _ in range(n)], pa.float64()),
            "label": pa.array([f"class-{i % 97}" for i in range(n)]),
        }
    )
    pq.write_table(table, f"{BUCKET}/train/part-0.parquet", filesystem=s3, row_group_size=100_000)
    pq.write_table(table.slice(0, 1000), f"{BUCKET}/train/part-1.parquet", filesystem=s3)
    infos = s3.get_file_info(pafs.FileSelector(f"{BUCKET}/train", recursive=True))
    names = sorted(i.path for i in infos if i.type == pafs.FileType.File)
    check(
        names == [f"{BUCKET}/train/part-0.parquet", f"{BUCKET}/train/part-1.parquet"],
        f"listing: {names}",
    )
    log(f"wrote {names}")

    # Whole, by column, and with a filter the dataset reader pushes down to row groups (range
    # GETs of the footer and of the chosen column chunks).
    back = pq.read_table(f"{BUCKET}/train/part-0.parquet", filesystem=s3)
    check(back.equals(table), "the table read back differs")
    xs = pq.read_table(f"{BUCKET}/train/part-0.parquet", filesystem=s3, columns=["x"])
    check(xs.column("x").equals(table.column("x")), "column x differs")
    dataset = ds.dataset(f"{BUCKET}/train", filesystem=s3, format="parquet")
    check(dataset.count_rows() == n + 1000, f"count_rows {dataset.count_rows()}")
    picked = dataset.to_table(columns=["id", "x"], filter=ds.field("id") >= n - 5)
    check(
        sorted(picked.column("id").to_pylist()) == list(range(n - 5, n)),
        f"filtered ids {picked.column('id').to_pylist()}",
    )
    log("read back whole, by column and filtered")

    # A raw object: streamed out, then read at random offsets.
    blob = rng.randbytes(24 << 20)
    with s3.open_output_stream(f"{BUCKET}/raw/blob.bin") as f:
        for at in range(0, len(blob), 3 << 20):
            f.write(blob[at : at + (3 << 20)])
    with s3.open_input_file(f"{BUCKET}/raw/blob.bin") as f:
        check(f.size() == len(blob), f"size {f.size()}")
        for _ in range(20):
            at = rng.randrange(len(blob))
            length = rng.randrange(1, 2 << 20)
            f.seek(at)
            check(f.read(length) == blob[at : at + length], f"read of {length} at {at}")
        f.seek(0)
        check(f.read() == blob, "the whole blob differs")
    log("random reads of a 24 MiB object agree")

    # Copy, delete, and what is left.
    s3.copy_file(f"{BUCKET}/raw/blob.bin", f"{BUCKET}/raw/copy.bin")
    with s3.open_input_stream(f"{BUCKET}/raw/copy.bin") as f:
        check(f.read() == blob, "the copy differs")
    s3.delete_file(f"{BUCKET}/raw/blob.bin")
    s3.delete_dir_contents(f"{BUCKET}/train")
    left = sorted(
        i.path
        for i in s3.get_file_info(pafs.FileSelector(BUCKET, recursive=True))
        if i.type == pafs.FileType.File
    )
    check(left == [f"{BUCKET}/raw/copy.bin"], f"left after deletes: {left}")
    log("copy, delete and listing agree")
    s3.delete_dir(f"{BUCKET}/raw")
    s3.delete_dir(BUCKET)
    buckets = [i.path for i in s3.get_file_info(pafs.FileSelector("/"))]
    check(BUCKET not in buckets, f"buckets after delete: {buckets}")
    print("ALL OK")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure is the test's failure
        print(f"FAILED: {e!r}", file=sys.stderr)
        sys.exit(1)
