"""Decoding a slice's PNGs together against one at a time, in the same run.

    python benchmarks/bench_decode.py [--images 512] [--reps 15]

On the benchmark's generated 32x32 RGB images (``bench_shards.write_images``, ~2.5 KB as PNG):
CPU microseconds a sample (process time, one thread) of

* ``decode_image`` called for each of Pillow's PNGs (one Pillow image, and its copy to numpy,
  per image),
* ``decode_pngs`` over all of Pillow's PNGs (rows filtered adaptively, Average and Paeth among
  them: Pillow's PNG decoder into bands of one image),
* ``decode_pngs`` over the PNGs ``data pack`` writes (``encode_png``: None, Sub and Up rows only,
  undone in numpy), and
* the inflate alone of those (``inflate_exactly``, ISA-L's where installed, else zlib's), a floor no
  PNG decoder goes below; and zlib's, for comparison.

Medians over reps, and the ratios per rep as medians with 95% bootstrap intervals; every path
gives the same pixels (checked). Also the PNGs' mean size.
"""

from __future__ import annotations

import argparse
import io
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

from benchmarks.bench_shards import median_interval, write_images
from trainers.data.images import (
    decode_image,
    decode_pngs,
    encode_image,
    inflate_exactly,
    inflater,
    plain_png,
)


def cpu_us(work: Callable[[], object], count: int) -> float:
    start = time.process_time()
    work()
    return (time.process_time() - start) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="Images decoded a rep.")
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    with TemporaryDirectory() as tmp:
        arrays = np.load(write_images(Path(tmp) / "images.npz", args.images, 0, 0))["x"]
    pillows = [_pillow_png(pixels) for pixels in arrays]
    ours = [encode_image(pixels, "png") for pixels in arrays]
    idat = [p.data for p in (plain_png(data, "RGB") for data in ours) if p is not None]
    one = np.stack([decode_image(data, 3, "bench", "k") for data in pillows])
    for images in (pillows, ours):
        together, rest = decode_pngs(images, 3, 32, 32)
        assert rest == [] and np.array_equal(one, together) and np.array_equal(one, arrays)

    n = len(arrays)
    paths: dict[str, Callable[[], object]] = {
        "decode_image, Pillow's PNGs, one at a time": lambda: [
            decode_image(data, 3, "bench", "k") for data in pillows
        ],
        "decode_pngs, Pillow's PNGs, together": lambda: decode_pngs(pillows, 3, 32, 32),
        "decode_pngs, data pack's PNGs, together": lambda: decode_pngs(ours, 3, 32, 32),
        f"inflate alone ({inflater.__module__}), data pack's": lambda: [
            inflate_exactly(d, 32 * 97) for d in idat
        ],
        "zlib.decompress alone, data pack's": lambda: [zlib.decompress(d) for d in idat],
    }
    rows = []
    for _ in range(args.reps):  # interleaved, so machine load hits all of them alike
        rows.append({name: cpu_us(work, n) for name, work in paths.items()})
    sizes = (np.mean([len(d) for d in pillows]), np.mean([len(d) for d in ours]))
    print(
        f"{n} 32x32 RGB images, {args.reps} reps; PNG bytes: Pillow's {sizes[0]:.0f}, "
        f"data pack's {sizes[1]:.0f} ({sizes[1] / sizes[0]:.3f}x)"
    )
    for name in paths:
        print(f"  {name + ':':52s} {np.median([r[name] for r in rows]):6.1f} us a sample")
    names = list(paths)
    for a, b in ((1, 0), (2, 1)):
        ratios = np.array([r[names[a]] / r[names[b]] for r in rows])
        low, high = median_interval(ratios)
        print(f"  {names[a]} / {names[b]}:\n      {np.median(ratios):.3f} [{low:.3f}, {high:.3f}]")


def _pillow_png(pixels: np.ndarray) -> bytes:
    """Pillow's PNG of the pixels (what data pack wrote before encode_png; level 6)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=6)
    return out.getvalue()


if __name__ == "__main__":
    main()
