"""Shard sets on disk: `activescale data pack` / `inspect`, the manifest, the reader's checks
of bad shards (named errors, or skipped and counted), interoperability with the webdataset
package, and the cifar10 / imagefolder loaders reading their real formats without torchvision."""

from __future__ import annotations

import io
import json
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from activescale.errors import DataError
from orchestrator.cli import main
from tests.images import image_arrays, write_cifar10, write_image_folder, write_npz
from trainers.data import DataConfig, dataset_config, load_splits, make_source, shardfile
from trainers.data.manifest import read_manifest, verify_shards
from trainers.data.pack import pack
from trainers.data.shard_reader import ShardReader
from trainers.data.shardfile import ShardWriter, file_sha256, index_shard
from trainers.data.shards import read_settings


def shard_config(folder: Path, **fields: object) -> object:
    return dataset_config({"name": "shards", "path": str(folder), "workers": 0, **fields})


def all_training_keys(folder: Path, **fields: object) -> list[str]:
    """One epoch of the training stream's keys (the stream's first epoch, one rank)."""
    cfg = shard_config(folder, **fields)
    source = make_source(cfg, load_splits(cfg), 0)  # type: ignore[arg-type]
    total = read_manifest(folder).splits["train"].count
    return source.next_with_keys(total)[3]  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# pack and inspect


def test_pack_writes_shards_and_a_manifest_that_describes_them(tmp_path: Path) -> None:
    src = write_npz(tmp_path / "data.npz", train=300, test=40)
    manifest = pack(src, tmp_path / "out", shard_size=64, clean_fraction=0.1, seed=3)
    train, clean, test = (manifest.splits[s] for s in ("train", "clean", "test"))
    assert (train.count, clean.count, test.count) == (270, 30, 40)
    assert sum(train.per_class) + sum(clean.per_class) == 300 and test.per_class == [10] * 4
    assert [s.count for s in train.shards] == [64, 64, 64, 64, 14]
    assert manifest.input_shape == (3, 8, 8) and manifest.classes == ["0", "1", "2", "3"]
    assert manifest.source.kind == "npz" and manifest.splits["train"].corrupted is None
    for split in manifest.splits.values():
        for shard in split.shards:
            path = tmp_path / "out" / shard.name
            assert path.stat().st_size == shard.bytes and file_sha256(path) == shard.sha256
            assert len(index_shard(path).samples) == shard.count
    settings = read_settings(shard_config(tmp_path / "out"), manifest, "train", train=True)  # type: ignore[arg-type]
    pixels = ShardReader(settings).read_all().pixels / 255.0
    assert np.allclose(manifest.mean, pixels.mean(axis=(0, 1, 2)), atol=1e-12)
    assert np.allclose(manifest.std, pixels.std(axis=(0, 1, 2)), atol=1e-9)
    assert verify_shards(tmp_path / "out", manifest, checksums=True) == []


def test_pack_is_deterministic_and_shuffles_train(tmp_path: Path) -> None:
    src = write_npz(tmp_path / "data.npz")
    a = pack(src, tmp_path / "a", shard_size=64)
    b = pack(src, tmp_path / "b", shard_size=64)
    c = pack(src, tmp_path / "c", shard_size=64, seed=1)
    digests = [[s.sha256 for s in m.splits["train"].shards] for m in (a, b, c)]
    assert digests[0] == digests[1] != digests[2]
    # the labels cycle 0,1,2,3 in the source: shuffled, a shard's first labels do not
    first = index_shard(tmp_path / "a" / "train" / "shards-00000.tar").samples[:12]
    with open(tmp_path / "a" / "train" / "shards-00000.tar", "rb") as file:
        origins = [json.loads(_member(file, s.fields["json"]))["origin"] for s in first]
    assert origins != sorted(origins)


def npy_bytes(array: np.ndarray, fortran: bool = False) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asfortranarray(array) if fortran else array, allow_pickle=False)
    return out.getvalue()


def _member(file: io.BufferedReader, member: object) -> bytes:
    file.seek(member.offset)  # type: ignore[attr-defined]
    return file.read(member.size)  # type: ignore[attr-defined]


def test_pack_an_image_folder_with_png_and_jpeg(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "folder", {"train": 30, "test": 6, "clean": 4})
    manifest = pack(root, tmp_path / "out", shard_size=8, image_format="jpg")
    assert manifest.source.kind == "imagefolder" and manifest.classes == ["cat", "dog"]
    assert [manifest.splits[s].count for s in ("train", "clean", "test")] == [30, 4, 6]
    assert manifest.image.format == "jpg" and manifest.input_shape == (3, 8, 6)
    assert manifest.clean_fraction == 0.0  # the folder has its own clean split
    splits = load_splits(shard_config(tmp_path / "out"))  # type: ignore[arg-type]
    assert splits.test_x.shape == (6, 3, 8, 6) and splits.clean_y.tolist().count(0) == 2


def test_npy_shards_hold_the_pixels_of_the_png_ones(tmp_path: Path) -> None:
    """--format npy: raw pixels, nothing to decode, the same samples as lossless PNG."""
    src = write_npz(tmp_path / "data.npz")
    png = pack(src, tmp_path / "png", shard_size=64)
    assert png.image.format == "png"  # the default
    npy = pack(src, tmp_path / "npy", shard_size=64, image_format="npy")
    assert npy.image.format == "npy" and npy.splits["train"].count == png.splits["train"].count
    read = [
        ShardReader(read_settings(shard_config(tmp_path / f), m, "train", train=False)).read_all()  # type: ignore[arg-type]
        for f, m in (("png", png), ("npy", npy))
    ]
    assert read[0].keys == read[1].keys and np.array_equal(read[0].pixels, read[1].pixels)
    assert verify_shards(tmp_path / "npy", npy, checksums=True) == []
    with pytest.raises(DataError, match=r"--format 'gif' is not allowed: png, jpg, npy"):
        pack(src, tmp_path / "gif", image_format="gif")


def test_the_cli_offers_the_formats_pack_writes() -> None:
    from orchestrator import data_command
    from trainers.data.images import IMAGE_FORMATS

    assert data_command.IMAGE_FORMATS == IMAGE_FORMATS


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x93NUMPY", "has no valid header"),
        (b"\x93NUMPY\x01\x00\xff\x7f{}", "has a truncated or oversized header"),
        (npy_bytes(np.zeros((4, 4, 3), np.float32)), "is not uint8 pixels"),
        (npy_bytes(np.zeros((4, 4, 3), np.uint8), fortran=True), "is not a C-ordered"),
        (npy_bytes(np.zeros((4, 4, 3, 1), np.uint8)), "is not a C-ordered"),
        (npy_bytes(np.zeros((4, 4, 1), np.uint8)), "has 1 channels, but the manifest says 3"),
        (npy_bytes(np.zeros((4, 4, 3), np.uint8))[:-5], "holds 43 bytes, not the 48"),
        (b"\x93NUMPY\x01\x00\x0a\x00__import__", "has an unreadable header"),
    ],
)
def test_a_bad_npy_image_is_a_named_error(data: bytes, message: str) -> None:
    from trainers.data.images import decode_npy

    with pytest.raises(DataError, match=rf"shard s\.tar, sample 'k': \.npy image {message}"):
        decode_npy(data, 3, "s.tar", "k")


def _png(image: object, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **options)  # type: ignore[attr-defined]
    return out.getvalue()


def _pillow_pixels(data: bytes, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as opened:
        pixels = np.asarray(opened.convert("L" if channels == 1 else "RGB"))
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def test_png_decoding_gives_pillows_pixels_for_every_kind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plain 8-bit grey and RGB PNGs take the short path (Image.open is never called), every
    other kind Image.open; all give what Pillow gives. A PNG whose chunk CRC fails goes to
    Image.open too, and bytes no decoder reads are a named error."""
    from PIL import Image, PngImagePlugin

    from trainers.data.images import decode_image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)  # noise: several IDAT chunks
    text = PngImagePlugin.PngInfo()
    text.add_text("origin", "test")
    plain = {
        "rgb": (_png(Image.fromarray(rgb)), 3),
        "rgb small": (_png(Image.fromarray(rgb[:32, :32])), 3),
        "grey": (_png(Image.fromarray(rgb[:, :, 0])), 1),
        "rgb with a text chunk": (_png(Image.fromarray(rgb), pnginfo=text), 3),
    }
    other = {
        "grey as rgb": (plain["grey"][0], 3),
        "rgb as grey": (plain["rgb"][0], 1),
        "rgba": (_png(Image.fromarray(rng.integers(0, 256, (20, 30, 4), dtype=np.uint8))), 3),
        "palette": (_png(Image.fromarray(rgb[:20, :20]).convert("P")), 3),
        "16-bit grey": (_png(Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 200)), 1),
        "1-bit": (_png(Image.fromarray(rgb[:, :, 0] > 128)), 1),
    }
    assert len(Image.open(io.BytesIO(plain["rgb"][0])).tile) == 1
    assert plain["rgb"][0].count(b"IDAT") > 1
    expected = {name: _pillow_pixels(*case) for name, case in plain.items()}
    with monkeypatch.context() as patched:
        patched.setattr(Image, "open", None)  # the short path, or a TypeError
        for name, (data, channels) in plain.items():
            assert np.array_equal(decode_image(data, channels, "s", name), expected[name]), name
    for name, (data, channels) in other.items():
        assert np.array_equal(
            decode_image(data, channels, "s", name), _pillow_pixels(data, channels)
        ), name
    broken = bytearray(plain["rgb small"][0])
    broken[-20] ^= 0x01  # inside the last IDAT: its CRC fails
    try:
        pillows: object = _pillow_pixels(bytes(broken), 3)
    except (OSError, SyntaxError, ValueError):
        pillows = DataError
    if pillows is DataError:
        with pytest.raises(DataError, match="image cannot be decoded"):
            decode_image(bytes(broken), 3, "s", "broken")
    else:
        assert np.array_equal(decode_image(bytes(broken), 3, "s", "broken"), pillows)
    for data in (plain["rgb small"][0][:60], b"\x89PNG\r\n\x1a\n" + b"\0" * 40):
        with pytest.raises(DataError, match="shard s, sample 'cut': image cannot be decoded"):
            decode_image(data, 3, "s", "cut")


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (type, payload)."""
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append((data[at + 4 : at + 8], data[at + 8 : at + 8 + length]))
        at += 12 + length
    return chunks


def _png_of(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """PNG bytes of (type, payload) chunks, each with its right CRC."""
    import zlib

    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, payload in chunks:
        crc = zlib.crc32(kind + payload).to_bytes(4, "big")
        out.append(len(payload).to_bytes(4, "big") + kind + payload + crc)
    return b"".join(out)


def _with_idat(png: bytes, make: object) -> bytes:
    """`png` with its image data replaced by `make(data)` (a list of IDAT payloads)."""
    chunks = _chunks(png)
    data = b"".join(p for k, p in chunks if k == b"IDAT")
    head = [c for c in chunks if c[0] not in (b"IDAT", b"IEND")]
    return _png_of(head + [(b"IDAT", p) for p in make(data)] + [(b"IEND", b"")])  # type: ignore[operator]


@pytest.mark.parametrize("channels", [3, 1])
def test_batch_png_decoding_gives_pillows_pixels_and_leaves_the_rest(
    monkeypatch: pytest.MonkeyPatch, channels: int
) -> None:
    """decode_pngs decodes the plain PNGs of the size asked for into exactly Pillow's pixels
    (data pack's in numpy; Pillow's, several per band; image data split over IDAT chunks,
    ancillary chunks, a deflate bomb without inflating it whole) and leaves every other image
    for decode_image: other kinds and sizes, a failing CRC, image data that does not inflate
    or inflates to too few pixels, an unknown filter type, JPEG and .npy."""
    import tracemalloc
    import zlib

    from PIL import Image, PngImagePlugin

    from trainers.data import images
    from trainers.data.images import decode_pngs, encode_image

    rng = np.random.default_rng(1)
    shape = (24, 32, channels)

    def plain(seed: int, **options: object) -> bytes:
        pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
        return _png(Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels), **options)

    text = PngImagePlugin.PngInfo()
    text.add_text("origin", "test")
    raw_rows = zlib.decompress(b"".join(p for k, p in _chunks(plain(9)) if k == b"IDAT"))
    other_mode = rng.integers(0, 256, shape[:2] if channels == 3 else (*shape[:2], 3))
    fast = {
        "plain": plain(0),
        "another": plain(1),
        "a text chunk": plain(2, pnginfo=text),
        "IDAT in 3 chunks": _with_idat(plain(3), lambda d: [d[:7], d[7:100], d[100:]]),
        "compressed again": _with_idat(plain(4), lambda d: [zlib.compress(zlib.decompress(d), 1)]),
        # A whole deflate stream of half the rows: Pillow reads it too, the rest are zeros.
        "half the rows": _with_idat(
            plain(9), lambda d: [zlib.compress(raw_rows[: len(raw_rows) // 2])]
        ),
        # 97 KB of image data that inflates to 100 MB: only the rows are ever inflated.
        "a deflate bomb": _with_idat(plain(12), lambda d: [zlib.compress(bytes(10**8), 9)]),
        "data pack's (None, Sub, Up rows)": encode_image(
            np.random.default_rng(10).integers(0, 256, shape, dtype=np.uint8), "png"
        ),
        "data pack's, a smooth image": encode_image(
            np.linspace(0, 255, np.prod(shape)).astype(np.uint8).reshape(shape), "png"
        ),
    }
    crc = bytearray(plain(5))
    crc[-20] ^= 0x01
    rest = {
        "other size": _png(Image.fromarray(rng.integers(0, 256, (32, 24), np.uint8))),
        "other mode": _png(Image.fromarray(other_mode.astype(np.uint8))),
        "rgba": _png(Image.fromarray(rng.integers(0, 256, (24, 32, 4), dtype=np.uint8))),
        "failing crc": bytes(crc),
        "not deflate": _with_idat(plain(6), lambda d: [b"\x78\x9c" + bytes(60)]),
        "deflate cut short": _with_idat(plain(7), lambda d: [d[: len(d) // 2]]),
        "cut short": plain(8)[:-30],
        "filter type 5": _with_idat(
            plain(11), lambda d: [zlib.compress(bytes([5]) + raw_rows[1:])]
        ),
        "jpeg": encode_image(np.zeros(shape, np.uint8), "jpg"),
        "npy": encode_image(np.zeros(shape, np.uint8), "npy"),
    }
    names = [*fast, *rest]
    order = rng.permutation(len(names))
    data = [{**fast, **rest}[names[i]] for i in order]
    monkeypatch.setattr(images, "BATCH_BYTES", 2 * 24 * 32 * 4)  # bands of 2 images
    tracemalloc.start()
    try:
        pixels, left = decode_pngs(data, channels, 24, 32)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 << 20, peak  # the bomb inflated whole would be 100 MB
    assert pixels.shape == (len(names), *shape) and pixels.dtype == np.uint8
    assert sorted(names[order[i]] for i in left) == sorted(rest)
    for i, name in enumerate(names[j] for j in order):
        if name in fast:
            assert np.array_equal(pixels[i], _pillow_pixels(data[i], channels)), name
        else:
            assert not pixels[i].any(), name
    assert decode_pngs([], channels, 24, 32)[0].shape == (0, *shape)


@pytest.mark.parametrize("inflate", ["isal", "zlib"])
@pytest.mark.parametrize("channels", [3, 1])
def test_data_packs_pngs_are_decoded_in_numpy_to_what_pillow_reads(
    monkeypatch: pytest.MonkeyPatch, channels: int, inflate: str
) -> None:
    """The PNGs data pack writes hold only None, Sub and Up rows (all three appear), Pillow
    reads back the pixels, and decode_pngs decodes them without Pillow's decoder (patched
    away here), with ISA-L's inflate or, where it is absent, zlib's."""
    import zlib

    from PIL import Image

    from trainers.data import images
    from trainers.data.images import decode_pngs, encode_image, plain_png

    rng = np.random.default_rng(2)
    shape = (20, 12, channels)
    walk = np.cumsum(rng.integers(-3, 4, (8, *shape)), axis=2) + 128
    pixels = np.concatenate(
        [
            rng.integers(0, 256, (8, *shape)),  # noise: None rows
            np.clip(walk, 0, 255),  # smooth along rows: Sub
            np.broadcast_to(rng.integers(0, 256, (8, 1, *shape[1:])), (8, *shape)),  # Up
            np.zeros((2, *shape)),
        ]
    ).astype(np.uint8)
    data = [encode_image(p, "png") for p in pixels]
    mode = "L" if channels == 1 else "RGB"
    kinds: set[int] = set()
    for png, p in zip(data, pixels, strict=True):
        found = plain_png(png, mode)
        assert found is not None
        kinds |= set(zlib.decompress(found.data)[:: 1 + shape[1] * channels])
        assert np.array_equal(_pillow_pixels(png, channels), p)
    assert kinds == {0, 1, 2}
    if inflate == "zlib":
        monkeypatch.setattr(images, "inflater", zlib.decompressobj)
        monkeypatch.setattr(images, "INFLATE_ERRORS", (zlib.error,))
    monkeypatch.setattr(Image, "_getdecoder", None)  # what Pillow would decode comes back left
    decoded, left = decode_pngs(data, channels, *shape[:2])
    assert left == [] and np.array_equal(decoded, pixels)


def test_pack_cifar10_batches(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path / "cifar")
    manifest = pack(root, tmp_path / "out", shard_size=25, clean_fraction=0.2)
    assert manifest.source.kind == "cifar10" and manifest.classes[3] == "class3"
    assert [manifest.splits[s].count for s in ("train", "clean", "test")] == [48, 12, 10]
    assert manifest.input_shape == (3, 32, 32)


def test_pack_keeps_a_corrupted_mask_and_never_carves_a_corrupted_clean_sample(
    tmp_path: Path,
) -> None:
    corrupted = np.zeros(300, dtype=bool)
    corrupted[::3] = True
    src = write_npz(tmp_path / "data.npz", corrupted=corrupted)
    manifest = pack(src, tmp_path / "out", shard_size=64, clean_fraction=0.5)
    assert manifest.splits["train"].corrupted == 100 and manifest.splits["clean"].corrupted == 0


def test_pack_refuses_an_existing_output_and_writes_nothing(tmp_path: Path) -> None:
    src = write_npz(tmp_path / "data.npz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["data", "pack", str(src), str(tmp_path / "out")]) == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "out"]  # no staging left


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"x": np.zeros((5, 4, 4, 3), np.float32) + 2}, "images must be uint8 pixels or floats"),
        ({"x": np.zeros((5, 4), np.uint8)}, r"images must be \(N, H, W\)"),
        ({"y": np.zeros(5, np.float32)}, "one integer label per image"),
        ({"corrupted": np.zeros(5, np.int64)}, "must be a bool array"),
    ],
)
def test_pack_names_what_is_wrong_with_an_npz(
    tmp_path: Path, arrays: dict[str, np.ndarray], message: str
) -> None:
    x, y = image_arrays(5, (4, 4, 3))
    base = {"x": x, "y": y, "x_test": x, "y_test": y}
    np.savez(tmp_path / "bad.npz", **(base | arrays))
    with pytest.raises(DataError, match=message):
        pack(tmp_path / "bad.npz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_pack_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a dataset this command packs"):
        pack(tmp_path, tmp_path / "out")


def test_inspect_prints_the_manifest_and_verify_finds_a_changed_shard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write_npz(tmp_path / "data.npz")
    out = tmp_path / "out"
    assert main(["data", "pack", str(src), str(out), "--shard-size", "100"]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(out), "--verify"]) == 0
    text = capsys.readouterr().out
    assert "train: 270 samples in 3 shards" in text and "per class: 0=" in text
    assert "every shard matches the manifest (sizes and sha256 checked)" in text
    shard = out / "train" / "shards-00001.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # same size, other bytes: only the checksum sees it
    shard.write_bytes(bytes(data))
    assert main(["data", "inspect", str(out)]) == 0
    assert main(["data", "inspect", str(out), "--verify"]) == 1
    assert "train: train/shards-00001.tar has another sha256" in capsys.readouterr().err


def test_inspect_of_a_folder_without_manifest_is_a_named_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["data", "inspect", str(tmp_path)]) == 2
    assert "manifest.json does not exist" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# bad shards: named errors with the shard and the sample key, or skipped and counted


@pytest.fixture
def packed(tmp_path: Path) -> Path:
    return _pack_small(tmp_path)


def _pack_small(tmp_path: Path) -> Path:
    src = write_npz(tmp_path / "data.npz", train=120, test=20)
    pack(src, tmp_path / "out", shard_size=50, clean_fraction=0.1)
    return tmp_path / "out"


def rewrite_shard(folder: Path, name: str, change: object) -> None:
    """Rewrite one shard, sample by sample, through `change(key, fields) -> fields`, and
    record its new size and checksum in the manifest (as if it had been packed so)."""
    path = folder / name
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as archive:
        for info in archive.getmembers():
            key, _, ext = info.name.partition(".")
            file = archive.extractfile(info)
            assert file is not None
            samples.setdefault(key, {})[ext] = file.read()
    path.unlink()
    writer = ShardWriter(path.parent, shard_size=10**6, relative_to=folder)
    for key, fields in samples.items():
        writer.add(key, change(key, fields))  # type: ignore[operator]
    (written,) = writer.close()
    written_path = folder / written.name
    written_path.rename(path)
    manifest = json.loads((folder / "manifest.json").read_text())
    for split in manifest["splits"].values():
        for shard in split["shards"]:
            if shard["name"] == name:
                shard["bytes"], shard["sha256"] = written.bytes, written.sha256
    (folder / "manifest.json").write_text(json.dumps(manifest))


def truncate_in_sample(shard: Path, index: int) -> None:
    """Cut the file inside the image of its sample `index` (samples before it stay whole)."""
    member = index_shard(shard).samples[index].fields["png"]
    shard.write_bytes(shard.read_bytes()[: member.offset + 10])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda key, f: {k: v for k, v in f.items() if k != "cls"} | {"json": b"{}"},
            r"sample '00000003' has no label: it needs a 00000003\.cls member",
        ),
        (
            lambda key, f: f | {"png": b"not a png"},
            r"sample '00000003': image cannot be decoded",
        ),
        (lambda key, f: f | {"cls": b"9"}, r"sample '00000003': label 9 is out of range"),
        (
            lambda key, f: {k: v for k, v in f.items() if k != "png"},
            r"sample '00000003' has no image",
        ),
    ],
)
def test_a_bad_sample_is_a_named_error(packed: Path, change: object, message: str) -> None:
    rewrite_shard(
        packed,
        "train/shards-00000.tar",
        lambda key, f: change(key, f) if key == "00000003" else f,  # type: ignore[operator]
    )
    with pytest.raises(DataError, match=rf"shard train/shards-00000\.tar, {message}"):
        all_training_keys(packed)


def test_an_image_of_another_size_is_a_named_error_unless_resized(packed: Path) -> None:
    from trainers.data.images import encode_image

    bigger = encode_image(np.zeros((9, 8, 3), np.uint8), "png")
    rewrite_shard(
        packed, "train/shards-00000.tar", lambda k, f: f | {"png": bigger} if k == "00000007" else f
    )
    with pytest.raises(DataError, match=r"sample '00000007': image of shape \(9, 8, 3\)"):
        all_training_keys(packed)
    assert len(all_training_keys(packed, image_size=8)) == 108


def test_a_truncated_shard_is_named_before_training(packed: Path) -> None:
    truncate_in_sample(packed / "train" / "shards-00001.tar", 30)
    with pytest.raises(
        DataError, match=r"shard train/shards-00001\.tar has \d+ bytes, the manifest"
    ):
        all_training_keys(packed)


def test_skip_bad_skips_and_counts_bad_samples(packed: Path) -> None:
    rewrite_shard(
        packed, "train/shards-00000.tar", lambda k, f: f | {"png": b"junk"} if k < "00000005" else f
    )
    truncate_in_sample(packed / "train" / "shards-00001.tar", 30)  # 50 samples -> 30 readable
    cfg = shard_config(packed, skip_bad=True, shuffle_buffer=40)
    source = make_source(cfg, load_splits(cfg), 0)  # type: ignore[arg-type]
    keys = source.next_with_keys(400)[3]  # type: ignore[attr-defined]
    per_epoch = 108 - 5 - 20
    assert len(set(keys)) == per_epoch
    metrics = source.metrics()  # type: ignore[attr-defined]
    assert metrics["data/skipped"] == pytest.approx(25 * 400 / per_epoch, abs=25)
    assert any("image cannot be decoded" in m for m in source.skip_messages)  # type: ignore[attr-defined]
    assert any("is missing: the file is truncated" in m for m in source.skip_messages)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------
# the webdataset package reads our shards, and we read its


def test_webdataset_reads_the_same_samples(packed: Path) -> None:
    wds = pytest.importorskip("webdataset")
    names = sorted(str(p) for p in (packed / "train").glob("*.tar"))
    theirs = {s["__key__"]: (s["cls"], s["png"]) for s in wds.WebDataset(names, shardshuffle=False)}
    ours = {}
    for name in names:
        indexed = index_shard(Path(name))
        with open(name, "rb") as file:
            for sample in indexed.samples:
                ours[sample.key] = tuple(_member(file, sample.fields[f]) for f in ("cls", "png"))
    assert ours == theirs and len(ours) == 108


def test_we_read_shards_webdataset_writes(tmp_path: Path) -> None:
    wds = pytest.importorskip("webdataset")
    from trainers.data.images import encode_image

    with wds.TarWriter(str(tmp_path / "shard.tar")) as sink:
        for i in range(5):
            image = encode_image(np.full((4, 4, 3), i, np.uint8), "png")
            sink.write({"__key__": f"sample{i:04d}", "png": image, "cls": str(i).encode()})
    indexed = index_shard(tmp_path / "shard.tar")
    assert [s.key for s in indexed.samples] == [f"sample{i:04d}" for i in range(5)]
    assert not indexed.truncated and set(indexed.samples[0].fields) == {"png", "cls"}


# ---------------------------------------------------------------------------------------------
# the shard index against the standard library's tar reader


def _tar(
    path: Path, members: list[tuple[str, int]], tar_format: int = tarfile.USTAR_FORMAT
) -> Path:
    """A tar of `members` (name, size; size -1: a folder) with distinct byte content."""
    with tarfile.open(path, "w", format=tar_format) as archive:
        for i, (name, size) in enumerate(members):
            info = tarfile.TarInfo(name)
            if size < 0:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
                continue
            info.size = size
            archive.addfile(info, io.BytesIO(bytes((i + j) % 251 for j in range(size))))
    return path


def _whole_members(path: Path) -> list[tuple[str, int, int]]:
    """(name, data offset, size) of the regular files tarfile finds whose bytes all lie in
    the file: what the index must give."""
    size = path.stat().st_size
    found = []
    try:
        with tarfile.open(path, "r:") as archive:
            for info in archive:
                if info.offset_data + info.size > size:
                    break
                if info.isfile():
                    found.append((info.name, info.offset_data, info.size))
    except tarfile.TarError:  # an empty file, a header cut short
        pass
    return found


def _indexed_members(path: Path) -> list[tuple[str, int, int]]:
    indexed = index_shard(path)
    members = [
        (f"{s.key}.{ext}", m.offset, m.size) for s in indexed.samples for ext, m in s.fields.items()
    ]
    return sorted(members, key=lambda m: m[1])


# Sizes around the 512-byte block and past the 1 MiB chunk the index reads at a time; a
# folder; a name long enough for ustar's prefix field; a member of zero bytes.
MEMBERS = [
    ("a/0001.png", 0),
    ("a/0001.cls", 1),
    ("a", -1),
    ("a/0002.png", 511),
    ("a/0002.cls", 512),
    ("a/0003.png", 513),
    ("a/0003.json", (1 << 20) + 700),
    ("a/0004.npy", 3 * 1024 + 128),
    (f"{'deep/' * 30}0005.png", 40),
    ("0006.tar.gz", 10),  # the field starts at the first dot: ext "tar.gz"
]


def test_the_index_finds_what_tarfile_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain ustar (what pack and webdataset write) is read by the fast path alone; GNU long
    names and pax headers go to tarfile; both give tarfile's members."""
    ustar = _tar(tmp_path / "ustar.tar", MEMBERS)
    with monkeypatch.context() as patched:
        patched.setattr(shardfile, "_tarfile_members", None)  # the fast path, or a TypeError
        assert _indexed_members(ustar) == _whole_members(ustar)
    for tar_format in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = _tar(tmp_path / f"{tar_format}.tar", MEMBERS, tar_format)
        members = _indexed_members(path)
        assert members == _whole_members(path) and len(members) == 9
        assert not index_shard(path).truncated
    long = _tar(tmp_path / "long.tar", [("x" * 150 + ".png", 3), ("y.cls", 1)], tarfile.GNU_FORMAT)
    assert _indexed_members(long) == _whole_members(long)  # a GNU long name: tarfile reads it


def test_the_index_of_a_cut_shard_keeps_only_whole_members(tmp_path: Path) -> None:
    """Cut at every 997th byte and at block and chunk edges: what the index keeps is whole
    (a sample whose member was cut is dropped with it); a cut inside a member's bytes is
    `truncated`, one at a header's start is not (a tar may end there)."""
    whole = _tar(tmp_path / "whole.tar", MEMBERS)
    data = whole.read_bytes()
    with tarfile.open(whole) as archive:
        spans = [(m.offset, m.offset_data, m.offset_data + m.size) for m in archive]
    cut = tmp_path / "cut.tar"
    edges = {0, 1, 511, 512, 513, 1024, 1100, 2048, 1 << 20, (1 << 20) + 4096}
    for length in sorted(edges | set(range(0, spans[-1][2], 997))):
        cut.write_bytes(data[:length])
        indexed = index_shard(cut)
        kept = {m[0] for m in _indexed_members(cut)}
        assert kept <= {m[0] for m in _whole_members(cut)}, length
        if any(data_start < length < end for _, data_start, end in spans):
            assert indexed.truncated, length
        if length in {header for header, _, _ in spans}:
            assert not indexed.truncated, length
            assert len(kept) == sum(1 for h, _, _ in spans if h < length) - (length > 1024), length


def test_a_corrupt_header_goes_to_tarfile_and_is_named(tmp_path: Path) -> None:
    """A header whose checksum fails: tarfile reads the members before it, as if the archive
    ended there (the reader then names the missing samples); bytes that are no tar at all
    are a DataError naming the shard."""
    ok = _tar(tmp_path / "ok.tar", MEMBERS[:5])
    with tarfile.open(ok) as archive:
        header = archive.getmembers()[3].offset  # a/0002.png's
    data = bytearray(ok.read_bytes())
    data[header + 10] ^= 0xFF  # a byte of its name: the checksum no longer holds
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    indexed = index_shard(bad)
    assert [(s.key, sorted(s.fields)) for s in indexed.samples] == [("a/0001", ["cls", "png"])]
    bad.write_bytes(b"not a tar" * 100)
    with pytest.raises(DataError, match=r"bad\.tar"):
        index_shard(bad)


# ---------------------------------------------------------------------------------------------
# cifar10 and imagefolder: their real formats, read without torchvision


@pytest.fixture
def no_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchvision", None)  # any import of it fails


@pytest.mark.usefixtures("no_torchvision")
def test_cifar10_reads_its_python_batches(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path)
    splits = load_splits(DataConfig(name="cifar10", path=str(root), clean_size=10))
    assert splits.input_shape == (3, 32, 32) and splits.num_classes == 10
    assert len(splits.train_y) == 50 and len(splits.clean_y) == 10 and len(splits.test_y) == 10
    with open(root / "cifar-10-batches-py" / "test_batch", "rb") as file:
        batch = pickle.load(file)
    raw = torch.from_numpy(batch["data"].reshape(-1, 3, 32, 32).astype(np.float32))
    assert splits.test_y.tolist() == batch["labels"]
    # normalised per channel: an affine map of the raw pixels, channel by channel
    for c in range(3):
        x, r = splits.test_x[:, c].flatten(), raw[:, c].flatten()
        slope = (x[1] - x[0]) / (r[1] - r[0])
        assert torch.allclose(x, x[0] + slope * (r - r[0]), atol=1e-4)
    # the batch folder itself may be the path too
    batches = str(root / "cifar-10-batches-py")
    same = load_splits(DataConfig(name="cifar10", path=batches, clean_size=10))
    assert torch.equal(same.test_x, splits.test_x)


def test_cifar10_is_never_downloaded(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Data are never downloaded"):
        load_splits(DataConfig(name="cifar10", path=str(tmp_path)))
    assert not any(tmp_path.iterdir())


def test_cifar10_batch_files_may_hold_only_arrays(tmp_path: Path) -> None:
    root = write_cifar10(tmp_path)

    class Sneaky:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("this ran",))

    (root / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps({"data": Sneaky()}))
    with pytest.raises(DataError, match=r"builtins\.print is not allowed in a CIFAR batch file"):
        load_splits(DataConfig(name="cifar10", path=str(root)))


@pytest.mark.usefixtures("no_torchvision")
def test_imagefolder_loads_normalised_png_and_jpeg_images(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    splits = load_splits(DataConfig(name="imagefolder", path=str(tmp_path), clean_size=4))
    assert splits.input_shape == (3, 8, 6) and splits.num_classes == 2
    assert len(splits.train_y) == 26 and len(splits.clean_y) == 4 and len(splits.test_y) == 6
    all_train = torch.cat([splits.train_x, splits.clean_x])
    assert torch.allclose(all_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert splits.test_y.tolist() == [0, 0, 0, 1, 1, 1]  # classes sorted, files sorted


def test_imagefolder_matches_torchvision_where_installed(tmp_path: Path) -> None:
    datasets = pytest.importorskip("torchvision.datasets")
    from trainers.data.vision import image_folder_files

    write_image_folder(tmp_path)
    files, labels, classes = image_folder_files(tmp_path / "train")
    theirs = datasets.ImageFolder(str(tmp_path / "train"))
    assert classes == theirs.classes
    assert [(str(f), int(y)) for f, y in zip(files, labels, strict=True)] == theirs.samples


def test_imagefolder_images_must_share_a_size(tmp_path: Path) -> None:
    from PIL import Image

    write_image_folder(tmp_path)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "train" / "dog" / "zz.png")
    with pytest.raises(DataError, match=r"zz\.png: image of shape \(5, 5, 3\)"):
        load_splits(DataConfig(name="imagefolder", path=str(tmp_path)))


def test_pack_to_a_relative_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_npz(tmp_path / "data.npz", train=60, test=10)
    monkeypatch.chdir(tmp_path)
    manifest = pack(Path("data.npz"), Path("packs/out"), shard_size=25)
    assert manifest.splits["train"].shards[0].name == "train/shards-00000.tar"
    assert verify_shards(tmp_path / "packs" / "out", manifest, checksums=True) == []
