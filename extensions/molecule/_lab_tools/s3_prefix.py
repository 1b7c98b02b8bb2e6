"""The backups under one S3 key prefix of the lab's bucket, read or removed with boto3 (not with the collection).

    s3_prefix.py manifests PREFIX   print the manifests under PREFIX as a JSON list, newest first
    s3_prefix.py delete PREFIX      delete every object under PREFIX and abort its unfinished uploads

Bucket from $APEX_S3_BUCKET; endpoint and credentials from the AWS_* variables of the lab's env.
"""
import argparse
import json
import os

import boto3


def keys(s3, bucket, prefix):
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(item["Key"] for item in page.get("Contents", []))
    return found


def manifests(s3, bucket, prefix):
    documents = [json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
                 for key in keys(s3, bucket, prefix) if key.endswith(".manifest.json")]
    return sorted(documents, key=lambda m: (m.get("finished_at") or "", m.get("backup_id") or ""), reverse=True)


def delete(s3, bucket, prefix):
    for upload in s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    found = keys(s3, bucket, prefix)
    for start in range(0, len(found), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in found[start:start + 1000]]})
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["manifests", "delete"])
    parser.add_argument("prefix")
    args = parser.parse_args()
    # a prefix always ends at a path separator: "molecule-backup" must not match "molecule-backup-verify"
    prefix = args.prefix.rstrip("/") + "/"
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    bucket = os.environ["APEX_S3_BUCKET"]
    if args.action == "manifests":
        print(json.dumps(manifests(s3, bucket, prefix)))
    else:
        print(json.dumps({"deleted": len(delete(s3, bucket, prefix))}))


if __name__ == "__main__":
    main()
