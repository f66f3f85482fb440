"""Image bytes to pixels and back: PNG, JPEG and WebP through Pillow, ``.npy`` raw pixels.

:func:`decode_image` decodes one image of any kind Pillow reads; :func:`decode_pngs` decodes
many plain 8-bit PNGs of one size at once (the common case of a packed shard set) and leaves
the rest to it. Both give exactly Pillow's pixels (``tests/test_shards.py``); undecodable bytes
are a DataError naming the shard and the sample key.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from activescale.errors import DataError

inflater: Callable[[], Any]  # a new zlib decompressobj
try:  # ISA-L's inflate: the same bytes as zlib's, faster (bench_decode.py); zlib where absent
    from isal import isal_zlib

    inflater = isal_zlib.decompressobj
    _isal_error = cast("type[Exception]", isal_zlib.error)  # a class; its stub says an instance
    INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _isal_error)
except ImportError:  # pragma: no cover (isal is a dependency; a platform may lack its wheel)
    inflater = zlib.decompressobj
    INFLATE_ERRORS = (zlib.error,)

__all__ = [
    "IMAGE_FORMATS",
    "PlainPng",
    "decode_image",
    "decode_npy",
    "decode_pngs",
    "encode_image",
    "plain_png",
]

IMAGE_FORMATS = ("png", "jpg", "npy")  # what `data pack --format` writes
NPY_MAGIC = b"\x93NUMPY"
MAX_NPY_HEADER = 4096


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


@dataclass(frozen=True)
class PlainPng:
    """A PNG of 8-bit grey or RGB pixels, not interlaced, whose chunks check out: its size and
    its image data (the IDAT chunks joined), what Pillow's "zip" decoder reads."""

    width: int
    height: int
    data: bytes


def plain_png(data: bytes, mode: str) -> PlainPng | None:
    """`data` as a :class:`PlainPng` of `mode` ("L" or "RGB"). None for any other PNG, a broken
    chunk (its CRC), an unknown critical chunk or bytes that are no PNG: those take
    ``Image.open``, which reads every kind of image and names what is wrong."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, color, compression, filtering, interlace = _IHDR.unpack_from(data, 16)
    if (depth, color, compression, filtering, interlace) != (8, _PNG_COLOR_TYPES[mode], 0, 0, 0):
        return None
    idat: list[bytes] = []
    at, size, crc32 = 8, len(data), zlib.crc32
    while at + 12 <= size:
        length, kind = _CHUNK.unpack_from(data, at)
        end = at + 8 + length
        if end + 4 > size or crc32(data[at + 4 : end]) != int.from_bytes(data[end : end + 4]):
            return None
        if kind == b"IDAT":
            idat.append(data[at + 8 : end])
        elif kind == b"IEND":
            return PlainPng(width, height, idat[0] if len(idat) == 1 else b"".join(idat))
        elif kind[0] < 97 and kind not in (b"IHDR", b"PLTE"):  # an unknown critical chunk
            return None
        at = end + 4
    return None  # no IEND: cut short


_IHDR = struct.Struct(">IIBBBBB")  # width, height, bit depth, colour type, ..., interlace
_CHUNK = struct.Struct(">I4s")  # a chunk's length and type


def _plain_png(data: bytes, mode: str) -> Any:
    """The Pillow image of a :func:`plain_png`, decoded by Pillow's own PNG decoder without the
    Python layer of ``Image.open`` (about 55 -> 38 us for a 32x32 RGB image, the same
    pixels); None where it is not one, or its image data does not inflate to its pixels."""
    from PIL import Image

    plain = plain_png(data, mode)
    if plain is None:
        return None
    try:
        return Image.frombytes(mode, (plain.width, plain.height), plain.data, "zip", mode)
    except (OSError, ValueError):  # inflating failed, too few bytes: Image.open says why
        return None


BATCH_BYTES = 16 << 20  # Pillow's pixels (4 bytes an RGB pixel) decoded at once by decode_pngs


def decode_pngs(
    images: list[bytes], channels: int, height: int, width: int
) -> tuple[np.ndarray, list[int]]:
    """Many images at once -> (N, height, width, channels) uint8, and the indexes of those it did
    not decode (their rows are zeros): anything but a :func:`plain_png` of exactly this size,
    and a PNG whose data does not inflate to its pixels. Those take :func:`decode_image`, which
    decodes any image or says what is wrong with it.

    Each plain PNG's data is inflated, and where every row's filter is None, Sub or Up (what
    :func:`encode_image` writes), :func:`unfilter` undoes the filters of all such images
    together in numpy. The others (an Average or Paeth row, as Pillow's and most encoders'
    adaptive filtering writes them; data that does not inflate to exactly the rows) go to
    Pillow's PNG decoder, into horizontal bands of one tall image that becomes numpy pixels
    in one copy; the rows already inflated are handed to it stored, so it copies them rather
    than inflate them again (``bench_decode.py`` has the CPU of each path)."""
    mode = "L" if channels == 1 else "RGB"
    out = np.zeros((len(images), height, width, channels), dtype=np.uint8)
    line = 1 + width * channels  # a scanline: its filter type, then its bytes
    inflated: list[tuple[int, bytes]] = []
    for_pillow: list[tuple[int, bytes]] = []  # (index, zlib data)
    rest: list[int] = []
    for i, data in enumerate(images):
        png = plain_png(data, mode)
        if png is None or (png.height, png.width) != (height, width):
            rest.append(i)
            continue
        lines = inflate_exactly(png.data, height * line)
        if lines is not None:
            inflated.append((i, lines))
        else:  # Pillow's decoder decides: it reads some streams that do not inflate whole
            for_pillow.append((i, png.data))
    if inflated:
        scanlines = np.frombuffer(b"".join(lines for _, lines in inflated), dtype=np.uint8)
        scanlines = scanlines.reshape(len(inflated), height, line)
        simple = (scanlines[:, :, 0] <= 2).all(axis=1)  # None, Sub and Up rows only
        rows = np.fromiter((i for i, _ in inflated), dtype=np.int64, count=len(inflated))
        pixels = unfilter(scanlines[simple], channels)
        out[rows[simple]] = pixels.reshape(-1, height, width, channels)
        for j in np.flatnonzero(~simple).tolist():  # stored deflate: Pillow copies, not inflates
            for_pillow.append((inflated[j][0], zlib.compress(inflated[j][1], 0)))
    rest += _decode_with_pillow(for_pillow, out, mode)
    out[rest] = 0
    return out, sorted(rest)


def _decode_with_pillow(pngs: list[tuple[int, bytes]], out: np.ndarray, mode: str) -> list[int]:
    """Plain PNGs' (index, zlib data) decoded by Pillow's PNG decoder into `out` (N, H, W, C):
    into horizontal bands of one tall image, which becomes numpy pixels in one copy. Returns
    the indexes it did not decode: data that stops mid-stream or does not inflate."""
    from PIL import Image

    decoder = getattr(Image, "_getdecoder", None)  # what Image.frombytes uses; private
    if decoder is None:
        return [i for i, _ in pngs]
    _, height, width, channels = out.shape
    failed = []
    per_band = max(1, BATCH_BYTES // (height * width * (1 if channels == 1 else 4)))
    for first in range(0, len(pngs), per_band):
        bands = pngs[first : first + per_band]
        tall = Image.new(mode, (width, height * len(bands)))
        for band, (i, zipped) in enumerate(bands):
            zip_decoder = decoder(mode, "zip", mode)
            zip_decoder.setimage(tall.im, (0, band * height, width, (band + 1) * height))
            try:
                consumed, error = zip_decoder.decode(zipped)
            except (OSError, ValueError):
                consumed, error = 0, -1
            if consumed >= 0 or error < 0:  # the data stops mid-stream, or does not inflate
                failed.append(i)
        out[[i for i, _ in bands]] = np.asarray(tall).reshape(len(bands), height, width, channels)
    return failed


def inflate_exactly(data: bytes, size: int) -> bytes | None:
    """`data` inflated where it is one whole zlib stream of exactly `size` bytes, else None.
    Never inflates more than `size` + 1 bytes, so a small stream that would inflate to
    gigabytes costs no memory."""
    stream = inflater()
    try:
        out = stream.decompress(data, size + 1)
    except INFLATE_ERRORS:
        return None
    return out if len(out) == size and stream.eof else None


def unfilter(scanlines: np.ndarray, channels: int) -> np.ndarray:
    """PNG scanlines of N images, (N, H, 1 + W * channels) uint8, each row's filter type None
    (0), Sub (1) or Up (2) -> their pixels, (N, H, W * channels). Row by row, each row of all N
    images at once: Sub adds each byte the reconstructed byte one pixel to its left (a running
    sum along the row, per channel), Up the byte above it; uint8 sums wrap, as PNG's do."""
    height = scanlines.shape[1]
    kinds = scanlines[:, :, 0]
    pixels = scanlines[:, :, 1:].copy()  # None rows are their pixels
    for row in range(height):
        sub = np.flatnonzero(kinds[:, row] == 1)
        if len(sub):
            left_to_right = pixels[sub, row].reshape(len(sub), -1, channels)
            pixels[sub, row] = np.cumsum(left_to_right, axis=1, dtype=np.uint8).reshape(
                len(sub), -1
            )
        up = kinds[:, row] == 2
        if row and up.all():
            pixels[:, row] += pixels[:, row - 1]
        elif row and up.any():
            which = np.flatnonzero(up)
            pixels[which, row] += pixels[which, row - 1]
    return pixels


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
    """(H, W, C) uint8 -> PNG, JPEG or .npy bytes (lossless PNG, :func:`encode_png` for grey and
    RGB; JPEG at `quality`; .npy: the pixels themselves, nothing to decode)."""
    from PIL import Image

    if image_format == "png" and pixels.ndim == 3 and pixels.shape[2] in (1, 3):
        return encode_png(pixels)
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


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W, 1 or 3) uint8 -> an 8-bit grey or RGB PNG whose rows are each filtered by the one
    of None, Sub and Up that leaves the smallest sum of byte magnitudes (libpng's heuristic,
    without Average and Paeth), deflated at level 6. Every PNG reader reads it;
    :func:`decode_pngs` undoes those three filters in numpy. On the benchmark's noisy images it
    is 0.6% larger than Pillow's PNG (which also tries Average and Paeth), on smooth ones ~15%."""
    height, width, channels = pixels.shape
    rows = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(height, width * channels)
    filtered = np.empty((3, height, width * channels), dtype=np.uint8)
    filtered[0] = rows
    filtered[1, :, :channels] = rows[:, :channels]
    np.subtract(rows[:, channels:], rows[:, :-channels], out=filtered[1, :, channels:])
    filtered[2, 0] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[2, 1:])
    cost = np.abs(filtered.view(np.int8).astype(np.int32)).sum(axis=2)  # (3, H)
    kinds = cost.argmin(axis=0)  # the first of equals: None over Sub over Up
    scanlines = np.empty((height, 1 + width * channels), dtype=np.uint8)
    scanlines[:, 0] = kinds
    scanlines[:, 1:] = filtered[kinds, np.arange(height)]
    header = _IHDR.pack(width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    body = zlib.compress(scanlines.tobytes(), 6)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    """A PNG chunk: length, type, payload, CRC of type and payload."""
    crc = zlib.crc32(kind + payload)
    return len(payload).to_bytes(4, "big") + kind + payload + crc.to_bytes(4, "big")
