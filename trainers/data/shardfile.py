"""WebDataset tar shards, one file at a time: writing them, indexing them, reading one sample.

The format is the one img2dataset, OpenCLIP and DataComp use: a POSIX tar file whose members
are named ``{key}.{field}``; consecutive members with the same key form one sample
(``{key}.png``, ``{key}.jpg`` or ``{key}.npy`` (raw uint8 pixels), ``{key}.cls`` holding the class as decimal text, an optional
``{key}.json``, an optional ``{key}.txt`` caption). Shards are named ``shards-%05d.tar``.

The reader is ours rather than the ``webdataset`` package's: resuming a run mid-epoch needs
random access to a sample by its index in a shard (a seek to its offset), which webdataset's
sequential pipeline does not give. ``tests/test_shards.py`` checks that both read the same
samples from the same files. :func:`index_shard` reads only the tar headers (512 bytes per
member) to find every sample's members; :func:`read_members` then reads a sample's members in
one read. Images are decoded in ``trainers.data.images``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from activescale.errors import DataError

__all__ = [
    "IMAGE_FIELDS",
    "IndexedShard",
    "ShardSample",
    "ShardWriter",
    "WrittenShard",
    "file_sha256",
    "index_shard",
    "read_member",
    "read_members",
    "sample_label",
]

IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp", "npy")  # a sample's image, the first present
SHARD_NAME = "shards-{:05d}.tar"


@dataclass(frozen=True, slots=True)
class Member:
    """Where one member's bytes lie in its shard."""

    offset: int
    size: int


@dataclass(frozen=True, slots=True)
class ShardSample:
    """One sample of a shard: its key and its fields (extension -> member)."""

    key: str
    fields: dict[str, Member]


class IndexedShard:
    """A shard's samples in file order, compactly: a key per sample, and per member its field,
    offset and size (about 0.14 KB a sample; ``samples[i]`` builds sample i's
    :class:`ShardSample` when it is read). ``truncated``: the file ends inside a member, so the
    samples from that one on are missing (named in the error, or skipped with skip_bad)."""

    def __init__(
        self,
        path: Path,
        keys: list[str],
        starts: list[int],
        fields: list[str],
        offsets: list[int],
        sizes: list[int],
        truncated: bool = False,
    ) -> None:
        self.path, self.truncated = path, truncated
        self.keys = keys  # per sample
        self.starts = array("q", starts)  # sample i's members: starts[i]..starts[i + 1] - 1
        self.fields = fields  # per member, interned ("png" is one string for all samples)
        self.offsets, self.sizes = array("q", offsets), array("q", sizes)

    @property
    def samples(self) -> _Samples:
        return _Samples(self)

    def sample(self, index: int) -> ShardSample:
        if not 0 <= index < len(self.keys):
            raise IndexError(f"sample {index} of a shard of {len(self.keys)}")
        members = range(self.starts[index], self.starts[index + 1])
        return ShardSample(
            self.keys[index],
            {self.fields[j]: Member(self.offsets[j], self.sizes[j]) for j in members},
        )


class _Samples(Sequence[ShardSample]):
    """An indexed shard's samples as a sequence, each built when it is asked for."""

    def __init__(self, shard: IndexedShard) -> None:
        self._shard = shard

    def __len__(self) -> int:
        return len(self._shard.keys)

    @overload
    def __getitem__(self, index: int) -> ShardSample: ...
    @overload
    def __getitem__(self, index: slice) -> list[ShardSample]: ...
    def __getitem__(self, index: int | slice) -> ShardSample | list[ShardSample]:
        if isinstance(index, slice):
            return [self._shard.sample(i) for i in range(*index.indices(len(self)))]
        return self._shard.sample(index + len(self) if index < 0 else index)


def split_name(name: str) -> tuple[str, str]:
    """A member name's (key, field): WebDataset's rule, the field starts at the first dot of
    the file name (a folder in the name belongs to the key)."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, ext.lower() if dot else ""


def index_shard(path: Path) -> IndexedShard:
    """The samples of the shard at `path`, from its headers only. A missing file or one that
    is not a tar is a DataError naming the shard."""
    try:
        with open(path, "rb") as file:
            members = _ustar_members(file.fileno(), os.fstat(file.fileno()).st_size)
    except FileNotFoundError:
        raise DataError(
            f"shard {str(path)!r} does not exist; the manifest lists it: re-pack the dataset "
            "or restore the file"
        ) from None
    except _NotPlainUstar:  # long names, pax headers...: the standard library's full parser
        members = _tarfile_members(path)
    except OSError as err:  # a folder, no permission, an I/O error
        raise DataError(f"shard {str(path)!r} cannot be read ({err})") from err
    keys: list[str] = []
    starts: list[int] = []
    fields: list[str] = []
    intern = sys.intern
    for j, name in enumerate(members.names):
        key, ext = split_name(name)
        if not keys or keys[-1] != key:
            keys.append(key)
            starts.append(j)
        fields.append(intern(ext))
    count = len(fields)
    # A sample cut by the end of the file is missing; the one before the cut is whole.
    if keys and members.truncated:
        cut_key = None if members.cut is None else split_name(members.cut)[0]
        if cut_key in (None, keys[-1]):
            keys.pop()
            count = starts.pop()
    starts.append(count)
    return IndexedShard(
        path,
        keys,
        starts,
        fields[:count],
        members.offsets[:count],
        members.sizes[:count],
        members.truncated,
    )


@dataclass
class _Members:
    """Regular-file members in file order: their names, data offsets and sizes."""

    names: list[str] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    truncated: bool = False  # the file ends inside a header or a member
    cut: str | None = None  # the name of the member cut short (None: unknown)

    def add(self, name: str, offset: int, size: int) -> None:
        self.names.append(name)
        self.offsets.append(offset)
        self.sizes.append(size)


class _NotPlainUstar(Exception):
    """A header this fast path does not read (pax, GNU long name, ...)."""


_BLOCK = 512


_CHUNK = 1 << 20  # bytes read at a time while indexing


def _ustar_members(fd: int, size: int) -> _Members:
    """Regular-file members of a tar made of plain ustar headers (what tarfile and webdataset
    write for short names). The file is read in 1 MiB chunks and the header checksums are
    checked together at the end (a bad one anywhere sends the file to tarfile, as a
    non-ustar header does): about 6x faster than one pread and check per header, 60x faster
    than tarfile (benchmarks/bench_shards.py)."""
    found = _Members()
    headers: list[bytes] = []
    chunk, start = b"", 0  # chunk holds the file's bytes from `start` on
    offset = 0
    while offset + _BLOCK <= size:
        at = offset - start
        if at < 0 or at + _BLOCK > len(chunk):
            chunk, start, at = os.pread(fd, _CHUNK, offset), offset, 0
        header = chunk[at : at + _BLOCK]
        if header == _ZERO_BLOCK:  # end-of-archive marker
            return _checked(headers, found)
        headers.append(header)
        try:
            length = int(header[124:136].rstrip(b" \0") or b"0", 8)
        except ValueError:
            raise _NotPlainUstar from None
        kind = header[156:157]
        if kind not in (b"0", b"\0", b"5"):
            raise _NotPlainUstar
        data = offset + _BLOCK
        name = header[:100].split(b"\0", 1)[0]
        if header[257:262] == b"ustar" and header[345] != 0:
            name = header[345:500].split(b"\0", 1)[0] + b"/" + name
        text = name.decode("utf-8", "replace")
        if data + length > size:
            found.truncated, found.cut = True, text
            return _checked(headers, found)
        if kind != b"5":  # not a folder
            found.add(text, data, length)
        offset = data + (length + _BLOCK - 1) // _BLOCK * _BLOCK
    found.truncated = offset < size
    return _checked(headers, found)


_ZERO_BLOCK = bytes(_BLOCK)
_CHECKSUM = slice(148, 156)


def _checked(headers: list[bytes], members: _Members) -> _Members:
    """`members` if every header's checksum (the unsigned byte sum, its own field counted as
    spaces) matches the octal number it stores; else _NotPlainUstar (a corrupt or
    non-ustar header: tarfile decides which, and says so)."""
    if not headers:
        return members
    blocks = np.frombuffer(b"".join(headers), dtype=np.uint8).reshape(len(headers), _BLOCK)
    sums = blocks.sum(axis=1, dtype=np.int64) - blocks[:, _CHECKSUM].sum(axis=1) + 8 * 32
    try:
        stored = [int(h[_CHECKSUM].rstrip(b" \0") or b"0", 8) for h in headers]
    except ValueError:
        raise _NotPlainUstar from None
    if not np.array_equal(sums, stored):
        raise _NotPlainUstar
    return members


def _tarfile_members(path: Path) -> _Members:
    size = path.stat().st_size
    try:
        archive = tarfile.open(path, mode="r:")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError) as err:
        raise DataError(f"shard {str(path)!r} is not a readable tar file ({err})") from err
    found = _Members()
    with archive:
        while True:
            try:
                info = archive.next()
            except tarfile.TarError:  # a header cut short or corrupt: the rest is unreadable
                found.truncated = True
                return found
            if info is None:
                return found
            if info.offset_data + info.size > size:
                found.truncated, found.cut = True, info.name
                return found
            if info.isfile():
                found.add(info.name, info.offset_data, info.size)


def read_member(fd: int, member: Member) -> bytes:
    """The bytes of one member, from the file descriptor of its open shard."""
    return os.pread(fd, member.size, member.offset)


SPAN_BYTES = 1 << 20  # members closer than this are read in one pread


def read_members(fd: int, members: dict[str, Member]) -> dict[str, bytes]:
    """Several members of one sample: they lie next to each other in the tar, so one read
    spans them (one system call, not one a member) unless that would read a long gap."""
    first, last, total = 1 << 62, 0, 0
    for member in members.values():
        first, last = min(first, member.offset), max(last, member.offset + member.size)
        total += member.size
    if last - first > SPAN_BYTES + total:
        return {ext: read_member(fd, m) for ext, m in members.items()}
    span = os.pread(fd, last - first, first) if members else b""
    return {ext: span[m.offset - first : m.offset - first + m.size] for ext, m in members.items()}


def sample_label(
    sample: ShardSample, data: dict[str, bytes], shard: str, num_classes: int
) -> tuple[int, dict[str, Any]]:
    """A sample's class label (``.cls``, else a ``label`` in its ``.json``) and its json
    fields ({} without a json). A missing or out-of-range label is a DataError naming the
    shard and the key."""
    meta: dict[str, Any] = {}
    if "json" in data:
        try:
            meta = json.loads(data["json"])
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(
                f"shard {shard}, sample {sample.key!r}: .json is not JSON ({err})"
            ) from err
        if not isinstance(meta, dict):
            raise DataError(f"shard {shard}, sample {sample.key!r}: .json is not an object")
    if "cls" in data:
        text = data["cls"].decode("ascii", errors="replace").strip()
        try:
            label = int(text)
        except ValueError:
            raise DataError(
                f"shard {shard}, sample {sample.key!r}: .cls holds {text[:20]!r}, not a "
                "class index (decimal integer)"
            ) from None
    elif isinstance(meta.get("label"), int):
        label = meta["label"]
    else:
        raise DataError(
            f"shard {shard}, sample {sample.key!r} has no label: it needs a {sample.key}.cls "
            f"member (or a 'label' in its .json); it has {sorted(sample.fields)}"
        )
    if not 0 <= label < num_classes:
        raise DataError(
            f"shard {shard}, sample {sample.key!r}: label {label} is out of range; the manifest "
            f"has {num_classes} classes (0..{num_classes - 1})"
        )
    return label, meta


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class WrittenShard:
    """A shard as written: its name (relative to the dataset folder), samples, bytes, sha256."""

    name: str
    count: int
    bytes: int
    sha256: str


@dataclass
class ShardWriter:
    """Writes samples into ``folder/shards-00000.tar``, ``shards-00001.tar``, ... of
    ``shard_size`` samples each. Members carry no timestamps or owners, so the same samples
    always give the same bytes (and checksums)."""

    folder: Path
    shard_size: int
    relative_to: Path
    written: list[WrittenShard] = field(default_factory=list)
    _archive: tarfile.TarFile | None = None
    _path: Path | None = None
    _count: int = 0

    def add(self, key: str, fields: dict[str, bytes]) -> None:
        if self._archive is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._path = self.folder / SHARD_NAME.format(len(self.written))
            self._archive = tarfile.open(self._path, mode="w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        for ext, data in fields.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            self._archive.addfile(info, io.BytesIO(data))
        self._count += 1
        if self._count == self.shard_size:
            self._finish()

    def close(self) -> list[WrittenShard]:
        if self._archive is not None:
            self._finish()
        return self.written

    def _finish(self) -> None:
        assert self._archive is not None and self._path is not None
        path = self._path
        self._archive.close()
        self.written.append(
            WrittenShard(
                name=path.relative_to(self.relative_to).as_posix(),
                count=self._count,
                bytes=path.stat().st_size,
                sha256=file_sha256(path),
            )
        )
        self._archive, self._count = None, 0
