"""WebDataset tar shards, one file at a time: writing them, indexing them, reading one sample.

The format is the one img2dataset, OpenCLIP and DataComp use: a POSIX tar file whose members
are named ``{key}.{field}``; consecutive members with the same key form one sample
(``{key}.png``, ``{key}.jpg`` or ``{key}.npy`` (raw uint8 pixels), ``{key}.cls`` holding the class as decimal text, an optional
``{key}.json``, an optional ``{key}.txt`` caption). Shards are named ``shards-%05d.tar``.

The reader is ours rather than the ``webdataset`` package's: resuming a run mid-epoch needs
random access to a sample by its index in a shard (a seek to its offset), which webdataset's
sequential pipeline does not give. ``tests/test_shards.py`` checks that both read the same
samples from the same files. :func:`index_shard` reads only the tar headers (512 bytes per
member) to find every sample's members; :func:`read_member` then reads one member's bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from activescale.errors import DataError

__all__ = [
    "IMAGE_FIELDS",
    "IMAGE_FORMATS",
    "IndexedShard",
    "ShardSample",
    "ShardWriter",
    "WrittenShard",
    "decode_image",
    "decode_npy",
    "encode_image",
    "file_sha256",
    "index_shard",
    "read_member",
    "sample_label",
]

IMAGE_FIELDS = ("png", "jpg", "jpeg", "webp", "npy")  # a sample's image, the first present
IMAGE_FORMATS = ("png", "jpg", "npy")  # what `data pack --format` writes
NPY_MAGIC = b"\x93NUMPY"
MAX_NPY_HEADER = 4096
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


@dataclass(frozen=True)
class IndexedShard:
    """A shard's samples in file order. ``truncated``: the file ends inside a member, so the
    samples from that one on are missing (named in the error, or skipped with skip_bad)."""

    path: Path
    samples: list[ShardSample]
    truncated: bool = False


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
    samples: list[ShardSample] = []
    current: tuple[str, dict[str, Member]] | None = None
    for name, member in members.found:
        key, ext = split_name(name)
        if current is None or current[0] != key:
            if current is not None:
                samples.append(ShardSample(*current))
            current = (key, {})
        current[1][sys.intern(ext)] = member  # one "png" string for all samples
    # A sample cut by the end of the file is missing; the one before the cut is whole.
    if current is not None and members.truncated:
        cut_key = None if members.cut is None else split_name(members.cut)[0]
        if cut_key in (None, current[0]):
            current = None
    if current is not None:
        samples.append(ShardSample(*current))
    return IndexedShard(path, samples, members.truncated)


@dataclass
class _Members:
    found: list[tuple[str, Member]]  # regular files, in order
    truncated: bool  # the file ends inside a header or a member
    cut: str | None = None  # the name of the member cut short (None: unknown)


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
    found: list[tuple[str, Member]] = []
    headers: list[bytes] = []
    chunk, start = b"", 0  # chunk holds the file's bytes from `start` on
    offset = 0
    while offset + _BLOCK <= size:
        at = offset - start
        if at < 0 or at + _BLOCK > len(chunk):
            chunk, start, at = os.pread(fd, _CHUNK, offset), offset, 0
        header = chunk[at : at + _BLOCK]
        if header == _ZERO_BLOCK:  # end-of-archive marker
            return _checked(headers, _Members(found, truncated=False))
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
            return _checked(headers, _Members(found, truncated=True, cut=text))
        if kind != b"5":  # not a folder
            found.append((text, Member(data, length)))
        offset = data + (length + _BLOCK - 1) // _BLOCK * _BLOCK
    return _checked(headers, _Members(found, truncated=offset < size))


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
    found: list[tuple[str, Member]] = []
    with archive:
        while True:
            try:
                info = archive.next()
            except tarfile.TarError:  # a header cut short or corrupt: the rest is unreadable
                return _Members(found, truncated=True)
            if info is None:
                return _Members(found, truncated=False)
            if info.offset_data + info.size > size:
                return _Members(found, truncated=True, cut=info.name)
            if info.isfile():
                found.append((info.name, Member(info.offset_data, info.size)))


def read_member(fd: int, member: Member) -> bytes:
    """The bytes of one member, from the file descriptor of its open shard."""
    return os.pread(fd, member.size, member.offset)


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


def decode_image(
    data: bytes, channels: int, shard: str, key: str, size: tuple[int, int] | None = None
) -> np.ndarray:
    """Image bytes -> (H, W, C) uint8 with `channels` (1: grayscale, 3: RGB); resized to
    `size` (height, width) with Pillow's bilinear filter when given. PNG, JPEG and WebP go
    through Pillow; ``.npy`` pixels (:func:`decode_npy`) need no decoding. Undecodable bytes
    are a DataError naming the shard and the key."""
    from PIL import Image  # Pillow comes with matplotlib

    if data.startswith(NPY_MAGIC):
        array = decode_npy(data, channels, shard, key)
        if size is None or array.shape[:2] == size:
            return array
        return _pixels(Image.fromarray(array[:, :, 0] if channels == 1 else array), size)
    mode = "L" if channels == 1 else "RGB"
    try:
        plain = _plain_png(data, mode)
        if plain is not None:
            return _pixels(plain, size)
        with Image.open(io.BytesIO(data)) as opened:
            return _pixels(opened if opened.mode == mode else opened.convert(mode), size)
    except (OSError, SyntaxError, ValueError) as err:  # Pillow's errors for bad image bytes
        raise DataError(f"shard {shard}, sample {key!r}: image cannot be decoded ({err})") from err


def _pixels(image: Any, size: tuple[int, int] | None) -> np.ndarray:
    """A Pillow image, resized to `size` (height, width; bilinear) if given, as (H, W, C) uint8."""
    from PIL import Image

    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOR_TYPES = {"L": 0, "RGB": 2}  # PNG colour types of 8-bit grey and RGB pixels


def _plain_png(data: bytes, mode: str) -> Any:
    """The image of a PNG that holds 8-bit pixels of `mode` (grey or RGB), not interlaced,
    decoded by Pillow's own PNG decoder without the Python layer of ``Image.open`` (about
    55 -> 38 us for a 32x32 RGB image, the same pixels). None for any other PNG, a broken
    chunk (its CRC) or bytes that are no PNG: those take ``Image.open``, which reads every
    kind of image and names what is wrong."""
    from PIL import Image

    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR" or len(data) < 33:
        return None
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth, color, compression, filtering, interlace = data[24:29]
    if (depth, color, compression, filtering, interlace) != (8, _PNG_COLOR_TYPES[mode], 0, 0, 0):
        return None
    idat: list[bytes] = []
    at = 8
    while at + 12 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        end = at + 8 + length
        if end + 4 > len(data) or zlib.crc32(data[at + 4 : end]) != int.from_bytes(
            data[end : end + 4], "big"
        ):
            return None
        if kind == b"IDAT":
            idat.append(data[at + 8 : end])
        elif kind == b"IEND":
            break
        elif kind not in (b"IHDR", b"PLTE") and kind[0] < ord("a"):  # an unknown critical chunk
            return None
        at = end + 4
    else:
        return None  # no IEND: cut short
    try:
        return Image.frombytes(mode, (width, height), b"".join(idat), "zip", mode)
    except (OSError, ValueError):  # inflating failed, too few bytes: Image.open says why
        return None


_NPY_HEADERS: dict[bytes, tuple[int, ...]] = {}  # header text -> shape, for headers seen


def decode_npy(data: bytes, channels: int, shard: str, key: str) -> np.ndarray:
    """``.npy`` bytes of an (H, W) or (H, W, C) uint8 array (C = `channels`) -> (H, W, C).

    The header is parsed once per distinct header (every image of a shard set has the same),
    so a sample costs a slice and a view; anything but C-ordered uint8 pixels of the right
    channels is a DataError naming the shard and the key."""

    def bad(why: str) -> DataError:
        return DataError(f"shard {shard}, sample {key!r}: .npy image {why}; re-pack the dataset")

    if len(data) < 10 or data[6] not in (1, 2, 3):
        raise bad("has no valid header")
    width = 2 if data[6] == 1 else 4
    length = int.from_bytes(data[8 : 8 + width], "little")
    start = 8 + width
    if length > MAX_NPY_HEADER or start + length > len(data):
        raise bad("has a truncated or oversized header")
    header = data[start : start + length]
    shape = _NPY_HEADERS.get(header)
    if shape is None:
        import ast

        try:
            fields = ast.literal_eval(header.decode("latin1"))  # literals only: no code runs
        except (ValueError, SyntaxError, MemoryError, RecursionError) as err:
            raise bad(f"has an unreadable header ({err})") from None
        if not isinstance(fields, dict) or fields.get("descr") not in ("|u1", "<u1", "u1"):
            raise bad(f"is not uint8 pixels (header {header[:80]!r})")
        found = fields.get("shape")
        if fields.get("fortran_order") is not False or not (
            isinstance(found, tuple)
            and len(found) in (2, 3)
            and all(isinstance(n, int) and n >= 1 for n in found)
        ):
            raise bad(f"is not a C-ordered (H, W) or (H, W, C) array (header {header[:80]!r})")
        shape = found if len(found) == 3 else (*found, 1)
        if shape[2] != channels:
            raise bad(f"has {shape[2]} channels, but the manifest says {channels}")
        if len(_NPY_HEADERS) < 64:
            _NPY_HEADERS[header] = shape
    body = memoryview(data)[start + length :]
    if len(body) != shape[0] * shape[1] * shape[2]:
        raise bad(f"holds {len(body)} bytes, not the {shape[0] * shape[1] * shape[2]} of {shape}")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def encode_image(pixels: np.ndarray, image_format: str, quality: int = 95) -> bytes:
    """(H, W, C) uint8 -> PNG, JPEG or .npy bytes (lossless PNG; JPEG at `quality`; .npy: the
    pixels themselves, nothing to decode)."""
    from PIL import Image

    if image_format == "npy":
        out = io.BytesIO()
        np.save(out, np.ascontiguousarray(pixels, dtype=np.uint8), allow_pickle=False)
        return out.getvalue()

    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    out = io.BytesIO()
    if image_format == "png":
        image.save(out, format="PNG", compress_level=6)
    else:
        image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


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
