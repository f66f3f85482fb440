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
from dataclasses import dataclass
from typing import Any

import numpy as np

from activescale.errors import DataError

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

    The plain PNGs are decoded by Pillow's PNG decoder into horizontal bands of one tall image,
    which becomes numpy pixels in one copy: 0.59x the CPU of :func:`decode_image` for a 32x32
    RGB image, which makes a Pillow image, and its copy, per image (``bench_decode.py``)."""
    from PIL import Image

    mode = "L" if channels == 1 else "RGB"
    out = np.zeros((len(images), height, width, channels), dtype=np.uint8)
    decoder = getattr(Image, "_getdecoder", None)  # what Image.frombytes uses; private
    if decoder is None:
        return out, list(range(len(images)))
    fast: list[tuple[int, PlainPng]] = []
    rest: list[int] = []
    for i, data in enumerate(images):
        png = plain_png(data, mode)
        if png is not None and (png.height, png.width) == (height, width):
            fast.append((i, png))
        else:
            rest.append(i)
    per_band = max(1, BATCH_BYTES // (height * width * (1 if channels == 1 else 4)))
    for first in range(0, len(fast), per_band):
        bands = fast[first : first + per_band]
        tall = Image.new(mode, (width, height * len(bands)))
        for band, (i, png) in enumerate(bands):
            zip_decoder = decoder(mode, "zip", mode)
            zip_decoder.setimage(tall.im, (0, band * height, width, (band + 1) * height))
            try:
                consumed, error = zip_decoder.decode(png.data)
            except (OSError, ValueError):
                consumed, error = 0, -1
            if consumed >= 0 or error < 0:  # the data stops mid-stream, or does not inflate
                rest.append(i)
        rows = [i for i, _ in bands]
        out[rows] = np.asarray(tall).reshape(len(bands), height, width, channels)
    out[rest] = 0
    return out, sorted(rest)


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
