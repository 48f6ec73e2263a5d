"""Content-addressed blob storage: WebDataset tar shards keyed by sha256, on any fsspec URL.

Why: a challenge seed set is 400k small images and a team keeps dozens of
variants of it. Stored one file per image, every variant is 400k files to copy,
hash and push (DVC over S3 crawls with many small files). Here each image is
stored once, whatever number of variants name it: a blob is a member
``<sha256>.<ext>`` of a tar shard, a shard is never changed once written, and
a blob the store holds is never written again.
Beside each shard an index (``<shard>.index.parquet``: sha256, offset, size)
says where its blobs lie, so a writer learns what the store holds without
opening a tar, and a reader seeks straight to a blob.

The URL is a local folder or anything fsspec opens (``s3://bucket/store``
through the ``s3`` extra; ``endpoint_url`` points at MinIO or moto).

Example::

    store = ShardStore("s3://team/store", endpoint_url="http://127.0.0.1:9000")
    with store.writer() as put:
        ref = put(jpeg_bytes, "jpg")     # hashed; written only if the store lacks it
    store.read(ref) == jpeg_bytes
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

SHARD_BYTES = 64 * 1024 * 1024  # a shard is closed once it holds this many bytes
SHARDS_DIR = "shards"
INDEX_SUFFIX = ".index.parquet"
TAR_HEADER = 512  # a ustar member header; our member names (64 hex + extension) never need a longer one
INDEX_SCHEMA = pa.schema([("sha256", pa.string()), ("offset", pa.int64()), ("size", pa.int64())])


@dataclass(frozen=True)
class BlobRef:
    """Where one blob lies: its content hash, the shard holding it, and its byte range in that tar."""

    sha256: str
    shard: str  # shard name, e.g. "3f2a...c1.tar", under <store>/shards/
    offset: int  # first byte of the blob inside the tar
    size: int


def open_fs(url: str, endpoint_url: str | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of ``url``; ``endpoint_url`` is the S3-compatible server for ``s3://``."""
    options: dict[str, Any] = {}
    if url.startswith("s3://") and endpoint_url:
        options["endpoint_url"] = endpoint_url
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path.rstrip("/")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ShardStore:
    """Blobs in tar shards under ``url``; ``known()`` is the union of the shard indexes."""

    def __init__(self, url: str, endpoint_url: str | None = None, shard_bytes: int = SHARD_BYTES) -> None:
        self.url, self.endpoint_url, self.shard_bytes = str(url), endpoint_url, shard_bytes
        self.fs, self.root = open_fs(self.url, endpoint_url)
        self._known: dict[str, BlobRef] | None = None

    def shard_path(self, shard: str) -> str:
        return f"{self.root}/{SHARDS_DIR}/{shard}"

    def shards(self) -> list[str]:
        """Names of the shards the store holds (those with an index)."""
        folder = f"{self.root}/{SHARDS_DIR}"
        if not self.fs.exists(folder):
            return []
        return sorted(os.path.basename(p)[: -len(INDEX_SUFFIX)] for p in self.fs.ls(folder, detail=False)
                      if p.endswith(INDEX_SUFFIX))

    def known(self) -> dict[str, BlobRef]:
        """sha256 -> where the store holds it (read once per store object, then kept current by writers)."""
        if self._known is None:
            self._known = {}
            for shard in self.shards():
                for ref in self.read_index(shard):
                    self._known.setdefault(ref.sha256, ref)
        return self._known

    def read_index(self, shard: str) -> list[BlobRef]:
        with self.fs.open(self.shard_path(shard) + INDEX_SUFFIX, "rb") as handle:
            table = pq.read_table(handle)
        return [BlobRef(s, shard, o, n) for s, o, n in zip(*(table[c].to_pylist() for c in ("sha256", "offset", "size")), strict=True)]

    def writer(self) -> ShardWriter:
        return ShardWriter(self)

    def read(self, ref: BlobRef) -> bytes:
        """One blob's bytes, checked against its hash (a damaged shard names itself)."""
        with self.fs.open(self.shard_path(ref.shard), "rb") as handle:
            handle.seek(ref.offset)
            data = handle.read(ref.size)
        return _checked(ref, data)

    def read_many(self, refs: Iterable[BlobRef]) -> Iterator[tuple[BlobRef, bytes]]:
        """Blobs in the order given, each shard opened once per run of consecutive refs into it."""
        shard, handle = None, None
        try:
            for ref in refs:
                if ref.shard != shard:
                    if handle is not None:
                        handle.close()
                    shard, handle = ref.shard, self.fs.open(self.shard_path(ref.shard), "rb", block_size=1 << 22)
                handle.seek(ref.offset)
                yield ref, _checked(ref, handle.read(ref.size))
        finally:
            if handle is not None:
                handle.close()


def _checked(ref: BlobRef, data: bytes) -> bytes:
    if len(data) != ref.size or sha256_hex(data) != ref.sha256:
        raise ValueError(f"shard {ref.shard}: blob at offset {ref.offset} does not hash to {ref.sha256} (damaged shard)")
    return data


@dataclass
class ShardWriter:
    """Adds blobs the store lacks, in new shards; ``new_shards`` lists the shard names it wrote.

    A shard is assembled in a local temporary file under a fresh random name,
    then uploaded with its index; until ``close`` (the end of the ``with``) the
    last shard is not in the store, and a failed ``with`` uploads nothing more.
    """

    store: ShardStore
    new_shards: list[str] = field(default_factory=list)
    added: int = 0  # blobs written
    reused: int = 0  # blobs the store (or this writer) already held

    def __post_init__(self) -> None:
        self._tmp: Any = None
        self._tar: tarfile.TarFile | None = None
        self._pending: list[tuple[str, int, int]] = []

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self._discard()

    def __call__(self, data: bytes, ext: str = "bin") -> BlobRef:
        return self.put(data, ext)

    def put(self, data: bytes, ext: str = "bin", sha256: str | None = None) -> BlobRef:
        """The blob's reference; its bytes are hashed, and written only when the store lacks them."""
        digest = sha256 or sha256_hex(data)
        known = self.store.known()
        if digest in known:
            self.reused += 1
            return known[digest]
        if self._tar is None:
            self._open()
        assert self._tar is not None
        offset = self._tar.offset + TAR_HEADER
        self._writer.write({"__key__": digest, _extension(ext): data})
        self._pending.append((digest, offset, len(data)))
        known[digest] = BlobRef(digest, self._shard, offset, len(data))
        self.added += 1
        if self._tar.offset >= self.store.shard_bytes:
            self._flush()
        return known[digest]

    def close(self) -> None:
        if self._tar is not None:
            self._flush()

    def _open(self) -> None:
        from webdataset import TarWriter

        self._shard = uuid.uuid4().hex + ".tar"
        self._tmp = tempfile.NamedTemporaryFile(prefix="shard-", suffix=".tar", delete=False)
        self._writer = TarWriter(self._tmp, encoder=False, mtime=0)
        self._tar = self._writer.tarstream

    def _flush(self) -> None:
        assert self._tar is not None
        self._writer.close()
        self._tmp.close()
        local, shard = self._tmp.name, self._shard
        target = self.store.shard_path(shard)
        index = pa.table({"sha256": [p[0] for p in self._pending], "offset": [p[1] for p in self._pending],
                          "size": [p[2] for p in self._pending]}, schema=INDEX_SCHEMA)
        self.store.fs.makedirs(os.path.dirname(target), exist_ok=True)
        self.store.fs.put_file(local, target)
        buffer = io.BytesIO()
        pq.write_table(index, buffer)
        self.store.fs.pipe_file(target + INDEX_SUFFIX, buffer.getvalue())  # the index last: it marks the shard complete
        os.unlink(local)
        self.new_shards.append(shard)
        self._tar, self._tmp, self._pending = None, None, []

    def _discard(self) -> None:
        if self._tar is not None:
            known = self.store.known()
            for sha, _, _ in self._pending:
                known.pop(sha, None)
            self._writer.close()
            self._tmp.close()
            os.unlink(self._tmp.name)
            self._tar, self._tmp, self._pending = None, None, []


def _extension(ext: str) -> str:
    ext = ext.lower().lstrip(".")
    return ext if ext and ext.isalnum() else "bin"
