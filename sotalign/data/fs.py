"""One filesystem layer for the store and the raw data: a local path or an object-store URI.

Everything that reads or writes the embedding store, WebDataset shards or a COCO JSON goes
through these functions, so a store can live on a local disk or on ``s3://bucket/prefix``
(every node of a cluster that shares no disk reads the same bytes). It is ``pyarrow.fs``:
already a dependency (the store is Parquet through pyarrow), the layer Ray Train and Tune use
for ``storage_path: s3://...``, and its S3 client reads the usual environment: credentials
from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or a profile), the region from
``AWS_DEFAULT_REGION``, and an S3-compatible endpoint (MinIO, moto, Ceph) from
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``).

Locations are strings: a local path (relative or absolute) or ``SCHEME://...``. Writes are
atomic on both: locally a temporary file renamed over the target; on object storage a single
PUT, which readers see whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import tempfile
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import pyarrow.fs as pafs

from sotalign.checks import InputError

REMOTE_SCHEMES = ("s3://", "gs://", "gcs://", "abfs://", "hdfs://")  # what pyarrow.fs opens besides local paths


def is_remote(location: str | os.PathLike) -> bool:
    """True for an object-store URI (``s3://...``), False for a local path."""
    return str(location).startswith(REMOTE_SCHEMES)


def join(location: str | os.PathLike, *parts: str) -> str:
    """``location / parts`` for either kind (``/`` separators on object storage)."""
    location = str(location)
    if is_remote(location):
        return posixpath.join(location.rstrip("/"), *parts)
    return str(Path(location, *parts))


def parent(location: str | os.PathLike) -> str:
    location = str(location)
    return posixpath.dirname(location.rstrip("/")) if is_remote(location) else str(Path(location).parent)


def name(location: str | os.PathLike) -> str:
    return posixpath.basename(str(location).rstrip("/"))


def absolute(location: str | os.PathLike) -> str:
    """A local path made absolute (Ray actors run in other working directories); a URI unchanged."""
    return str(location) if is_remote(location) else str(Path(location).resolve())


@lru_cache(maxsize=16)
def _remote(scheme_and_bucket: str) -> pafs.FileSystem:
    """One client per bucket and process, configured from the environment."""
    kwargs = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if scheme_and_bucket.startswith("s3://"):
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
        kwargs["region"] = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
        return pafs.S3FileSystem(**kwargs)
    return pafs.FileSystem.from_uri(scheme_and_bucket)[0]


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) of a location."""
    location = str(location)
    if not is_remote(location):
        return pafs.LocalFileSystem(), str(Path(location).absolute())
    scheme, _, rest = location.partition("://")
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise InputError(f"{location!r} names no bucket (expected {scheme}://BUCKET/PATH)")
    check_no_credentials(location)
    return _remote(f"{scheme}://{bucket}"), rest.rstrip("/")


def check_no_credentials(location: str | os.PathLike, what: str = "location") -> None:
    """Refuse an object-store URI with credentials in it (``s3://KEY:SECRET@bucket/...``), named without them:
    a location travels into configs, MLflow params and saved models, where a secret must never be."""
    scheme, found, rest = str(location).partition("://")
    # a bucket's name holds no ":" or "@"; a secret key may hold "/" (so look before the first "/", and name
    # the location from its last "@")
    head = rest.split("/", 1)[0]
    if found and is_remote(location) and ("@" in head or ":" in head):
        raise InputError(
            f"{what} {scheme}://***@{rest.rsplit('@', 1)[-1]}: a location with credentials in it is refused; "
            "give them in the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a profile)"
        )


def check_reachable(location: str | os.PathLike) -> None:
    """Raise ``InputError`` naming ``location`` when its object store does not answer (bad endpoint,
    bad credentials) or has no such bucket: a pre-flight check, before any work starts. A local path
    passes (it is created when written)."""
    if not is_remote(location):
        return
    fs, path = resolve(location)
    bucket = path.split("/", 1)[0]
    try:
        found = fs.get_file_info(bucket).type != pafs.FileType.NotFound
    except OSError as error:
        raise InputError(f"cannot reach {location}: {short_error(error)}") from None
    if not found:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        at = f" at {endpoint}" if endpoint and str(location).startswith("s3://") else ""
        raise InputError(f"no bucket {bucket!r}{at} for {location}: create it, or fix the location")


def _info(location: str | os.PathLike) -> pafs.FileInfo:
    fs, path = resolve(location)
    try:
        return fs.get_file_info(path)
    except OSError as error:  # unreachable endpoint, bad credentials, no such bucket
        raise InputError(f"cannot reach {location}: {short_error(error)}") from None


def short_error(error: BaseException) -> str:
    """An OS or S3 error as one line (the AWS SDK's messages span lines and carry request ids)."""
    return " ".join(str(error).split())[:300]


def is_file(location: str | os.PathLike) -> bool:
    return _info(location).type == pafs.FileType.File


def is_dir(location: str | os.PathLike) -> bool:
    """A local folder, or a prefix on object storage under which some object lies."""
    info = _info(location)
    return info.type == pafs.FileType.Directory


def exists(location: str | os.PathLike) -> bool:
    return _info(location).type != pafs.FileType.NotFound


def list_files(location: str | os.PathLike, recursive: bool = False) -> list[str]:
    """The files under a folder (or prefix), as locations of the same kind, sorted."""
    fs, path = resolve(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive, allow_not_found=True))
    except OSError as error:
        raise InputError(f"cannot list {location}: {short_error(error)}") from None
    base = str(location).rstrip("/").rstrip(os.sep)
    return sorted(
        join(base, *posixpath.relpath(info.path, path).split("/")) for info in infos if info.type == pafs.FileType.File
    )


def open_input(location: str | os.PathLike):
    """A seekable binary file (``pyarrow.NativeFile``; use as a context manager)."""
    fs, path = resolve(location)
    try:
        return fs.open_input_file(path)
    except FileNotFoundError:
        raise InputError(f"no file at {location}") from None
    except OSError as error:
        raise InputError(f"cannot read {location}: {short_error(error)}") from None


def open_stream(location: str | os.PathLike, buffer_size: int = 1 << 22):
    """A buffered, forward-only binary stream: one pass over a large file (a tar shard) in few
    requests on object storage (4 MiB reads by default: pyarrow's S3 guidance is MiBs per GET)."""
    fs, path = resolve(location)
    try:
        return fs.open_input_stream(path, buffer_size=buffer_size)
    except FileNotFoundError:
        raise InputError(f"no file at {location}") from None
    except OSError as error:
        raise InputError(f"cannot read {location}: {short_error(error)}") from None


def read_bytes(location: str | os.PathLike) -> bytes:
    with open_input(location) as f:
        return f.read()


def read_text(location: str | os.PathLike) -> str:
    return read_bytes(location).decode()


@contextlib.contextmanager
def atomic_local_path(location: str | os.PathLike) -> Iterator[Path]:
    """Yield a local temporary path to write; on success it becomes ``location`` whole (renamed over a
    local target, uploaded in one PUT to an object store); on failure nothing is left."""
    if not is_remote(location):
        from sotalign.io import atomic_path

        with atomic_path(location) as tmp:
            yield tmp
        return
    fd, tmp = tempfile.mkstemp(prefix=".sotalign-", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        fs, path = resolve(location)
        try:
            _upload(fs, tmp, path)
        except OSError as error:
            raise InputError(f"cannot write {location}: {short_error(error)}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _upload(fs: pafs.FileSystem, local: str, path: str) -> None:
    with open(local, "rb") as source, fs.open_output_stream(path) as target:
        while chunk := source.read(1 << 24):
            target.write(chunk)


def write_bytes(location: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically (see ``atomic_local_path``)."""
    with atomic_local_path(location) as tmp:
        tmp.write_bytes(data)


def delete_dir(location: str | os.PathLike) -> None:
    fs, path = resolve(location)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(path)
