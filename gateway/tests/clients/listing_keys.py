#!/usr/bin/env python3
"""Keys with characters URLs give a meaning to ('+', '%', ' ') listed through boto3, which always
asks for encoding-type=url and decodes what the response says is encoded. Run by
gateway/tests/python_clients.rs against a fresh devnet; exits non-zero on the first difference.

Environment: CAIRN_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY.
"""

import os

import boto3
import botocore.exceptions
from botocore.config import Config
from script_helpers import check, log

ENDPOINT = os.environ["CAIRN_S3_ENDPOINT"]
BUCKET = "names"
KEYS = sorted(["a+b.txt", "c%2Fd", "e f", "plain/x", "x%41", "t\tb", "\u00e9/(1).txt"])


def main():
    s3 = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    s3.create_bucket(Bucket=BUCKET)
    for key in KEYS:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"x")
    log(f"put {KEYS}")

    v2 = s3.list_objects_v2(Bucket=BUCKET)
    got = [o["Key"] for o in v2["Contents"]]
    check(got == KEYS, f"list_objects_v2: {got}")
    v1 = s3.list_objects(Bucket=BUCKET)
    got = [o["Key"] for o in v1["Contents"]]
    check(got == KEYS, f"list_objects: {got}")

    # Pages of one and two: continuation tokens (V2) and markers (V1, keys themselves).
    for max_keys in (1, 2):
        for op in ("list_objects_v2", "list_objects"):
            pages = s3.get_paginator(op).paginate(
                Bucket=BUCKET, PaginationConfig={"PageSize": max_keys}
            )
            got = [o["Key"] for page in pages for o in page.get("Contents", [])]
            check(got == KEYS, f"{op} in pages of {max_keys}: {got}")

    # Prefix, delimiter and start-after, as boto3 reads them back.
    v2 = s3.list_objects_v2(Bucket=BUCKET, Delimiter="/", StartAfter="a+b.txt")
    got = [o["Key"] for o in v2["Contents"]]
    check(got == ["c%2Fd", "e f", "t\tb", "x%41"], f"delimited: {got}")
    prefixes = [p["Prefix"] for p in v2["CommonPrefixes"]]
    check(prefixes == ["plain/", "\u00e9/"], f"common prefixes: {prefixes}")
    check(v2["StartAfter"] == "a+b.txt", f"StartAfter {v2['StartAfter']!r}")
    v2 = s3.list_objects_v2(Bucket=BUCKET, Prefix="e f")
    check(v2["Prefix"] == "e f", f"Prefix {v2['Prefix']!r}")
    check([o["Key"] for o in v2["Contents"]] == ["e f"], f"by prefix: {v2['Contents']}")
    v1 = s3.list_objects(Bucket=BUCKET, Marker="c%2Fd", MaxKeys=1)
    check(v1["Marker"] == "c%2Fd", f"Marker {v1['Marker']!r}")
    check([o["Key"] for o in v1["Contents"]] == ["e f"], f"after marker: {v1['Contents']}")
    check(v1.get("NextMarker", "e f") == "e f", f"NextMarker {v1.get('NextMarker')!r}")
    log("listed back exactly")

    # Every key reads back by the name it was listed under.
    for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]:
        body = s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        check(body == b"x", f"{o['Key']!r} read back {body!r}")

    # A key XML cannot carry is refused, so no listing is left unreadable.
    try:
        s3.put_object(Bucket=BUCKET, Key="bell\x07", Body=b"x")
        check(False, "a key with a control character was accepted")
    except botocore.exceptions.ClientError as e:
        code = e.response["Error"]["Code"]
        check(code == "InvalidArgument", f"control character: {code}")
    got = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    check(got == KEYS, f"after the refused key: {got}")

    # A key with CR, in answers that do not percent-encode keys: a CR written raw is read back
    # by XML parsers (expat, as botocore's) as LF, so the client would name another key.
    cr = "line\rbreak"
    started = s3.create_multipart_upload(Bucket=BUCKET, Key=cr)
    check(started["Key"] == cr, f"InitiateMultipartUpload's Key {started['Key']!r}")
    s3.abort_multipart_upload(Bucket=BUCKET, Key=cr, UploadId=started["UploadId"])
    s3.put_object(Bucket=BUCKET, Key=cr, Body=b"cr")
    deleted = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": cr}]})
    got = [d["Key"] for d in deleted.get("Deleted", [])]
    check(got == [cr], f"DeleteObjects named {got!r}")
    log("a key with CR is named exactly in every answer")
    print("ALL OK")


if __name__ == "__main__":
    main()
