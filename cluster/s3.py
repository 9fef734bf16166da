"""Reaching S3-compatible object storage (Ceph's RADOS gateway, or any other) from pyarrow and
polars, with the cluster's settings: endpoint, keys, region, bucket.

pyarrow's AWS SDK adds request checksums by default that some gateways (Ceph RGW) refuse with
``411 Length Required``, and a large write then hangs: :func:`s3_filesystem` asks the SDK to send
them only when an operation requires one. It also lets a file be opened for writing without a
round trip, so that a small file is one PUT instead of a three-request multipart upload (against
a local RGW, 94 small files a second instead of 7; large writes 58 MB/s instead of 21): an error
such as a missing bucket then surfaces when the file is closed rather than when it is opened.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pyarrow.fs import S3FileSystem

# Read by the AWS SDK inside pyarrow when a filesystem is created.
CHECKSUM_ENV = {"AWS_REQUEST_CHECKSUM_CALCULATION": "WHEN_REQUIRED",
                "AWS_RESPONSE_CHECKSUM_VALIDATION": "WHEN_REQUIRED"}


def s3_filesystem(endpoint: str, access_key: str, secret_key: str,
                  region: str = "us-east-1") -> S3FileSystem:
    """A pyarrow filesystem on the S3 endpoint ``http(s)://host:port``; paths are ``bucket/key``."""
    from pyarrow.fs import S3FileSystem

    for name, value in CHECKSUM_ENV.items():
        os.environ.setdefault(name, value)
    url = urlsplit(endpoint)
    return S3FileSystem(access_key=access_key, secret_key=secret_key, region=region,
                        endpoint_override=url.netloc, scheme=url.scheme or "http",
                        allow_bucket_creation=True, allow_bucket_deletion=True,
                        allow_delayed_open=True)


def storage_options(endpoint: str, access_key: str, secret_key: str,
                    region: str = "us-east-1") -> dict[str, str]:
    """polars' ``storage_options`` for ``s3://bucket/key`` paths on this endpoint."""
    return {"aws_endpoint_url": endpoint, "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key, "aws_region": region,
            "aws_allow_http": "true" if endpoint.startswith("http://") else "false",
            "aws_virtual_hosted_style_request": "false"}


def ensure_bucket(endpoint: str, bucket: str, access_key: str, secret_key: str,
                  region: str = "us-east-1") -> bool:
    """Create ``bucket`` unless it exists; whether it was created."""
    from pyarrow.fs import FileType

    fs = s3_filesystem(endpoint, access_key, secret_key, region)
    if fs.get_file_info(bucket).type == FileType.Directory:
        return False
    fs.create_dir(bucket)
    return True
