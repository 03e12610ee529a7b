"""S3 Object Lock, seen by an independent client (boto3) for tests/object_lock.rs.

Run with the moto venv's python (scripts/moto.sh python), which has boto3:

    s3_lock.py ENDPOINT BUCKET create-bucket [--lock]
    s3_lock.py ENDPOINT BUCKET retention KEY...   (from HeadObject)
        -> {"KEY": {"mode": ..., "retain_until": RFC 3339 UTC, "version_id": ...}, ...}
    s3_lock.py ENDPOINT BUCKET delete-version KEY
        -> {"deleted": bool, "error_code": ..., "still_readable": bool}

Output is one JSON document on stdout.
"""

import datetime
import json
import sys

import boto3
from botocore.exceptions import ClientError


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="cradle-test",
        aws_secret_access_key="cradle-test-secret",
    )


def utc(t):
    return t.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def main():
    endpoint, bucket, cmd, *args = sys.argv[1:]
    s3 = client(endpoint)
    if cmd == "create-bucket":
        s3.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket="--lock" in args)
        out = {"created": bucket}
    elif cmd == "retention":
        out = {}
        # HeadObject reports the version's retention (x-amz-object-lock-mode and
        # -retain-until-date), as GetObjectRetention would; moto implements only the former.
        for key in args:
            head = s3.head_object(Bucket=bucket, Key=key)
            until = head.get("ObjectLockRetainUntilDate")
            out[key] = {
                "mode": head.get("ObjectLockMode"),
                "retain_until": utc(until) if until else None,
                "version_id": head.get("VersionId"),
            }
    elif cmd == "delete-version":
        (key,) = args
        version = s3.head_object(Bucket=bucket, Key=key)["VersionId"]
        out = {"version_id": version}
        try:
            s3.delete_object(Bucket=bucket, Key=key, VersionId=version)
            out.update(deleted=True, error_code=None)
        except ClientError as e:
            out.update(deleted=False, error_code=e.response["Error"]["Code"])
        try:
            s3.get_object(Bucket=bucket, Key=key, VersionId=version)["Body"].read()
            out["still_readable"] = True
        except ClientError:
            out["still_readable"] = False
    else:
        sys.exit(f"unknown command {cmd}")
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
