"""Create the MLflow artifact bucket in the S3-compatible store if it is missing (one-shot job of compose.yaml)."""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError

DEADLINE_SECONDS = 120.0


def ensure_bucket(name: str) -> str:
    """Return "exists" or "created"; raise the last error if the store does not answer in time."""
    s3 = boto3.client("s3", endpoint_url=os.environ["MLFLOW_S3_ENDPOINT_URL"])
    deadline = time.monotonic() + DEADLINE_SECONDS
    while True:
        try:
            try:
                s3.head_bucket(Bucket=name)
                return "exists"
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            s3.create_bucket(Bucket=name)
            return "created"
        except (BotoCoreError, ClientError) as exc:
            # The store may still be starting; anything else repeats until the deadline and is then reported.
            if time.monotonic() > deadline:
                raise
            print(f"object store not ready ({type(exc).__name__}); retrying", file=sys.stderr)
            time.sleep(2)


def main() -> int:
    bucket = os.environ["S3_BUCKET"]
    print(f"bucket {bucket}: {ensure_bucket(bucket)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
