"""Decoding a slice's PNGs together against one at a time, in the same run.

    python benchmarks/bench_decode.py [--images 512] [--reps 15]

On the benchmark's generated 32x32 RGB images (``bench_shards.write_images``, ~2.3 KB as PNG):
CPU microseconds a sample (process time, one thread) of

* ``decode_image`` called for each image (what every image took before: one Pillow image, and
  its copy to numpy, per image),
* ``decode_pngs`` over all of them (Pillow's PNG decoder into bands of one image), and
* ``zlib.decompress`` of each image's data: the inflate alone, a floor neither can go below.

Medians over reps, and decode_pngs / decode_image per rep as a median with its 95% bootstrap
interval; both give the same pixels (checked).
"""

from __future__ import annotations

import argparse
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np

from benchmarks.bench_shards import median_interval, write_images
from trainers.data.images import decode_image, decode_pngs, encode_image, plain_png


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
    images = [encode_image(pixels, "png") for pixels in arrays]
    plain = [plain_png(data, "RGB") for data in images]
    idat = [p.data for p in plain if p is not None]
    one = np.stack([decode_image(data, 3, "bench", "k") for data in images])
    together, rest = decode_pngs(images, 3, 32, 32)
    assert rest == [] and np.array_equal(one, together) and np.array_equal(one, arrays)

    n = len(images)
    rows = []
    for _ in range(args.reps):  # interleaved, so machine load hits all three alike
        each = cpu_us(lambda: [decode_image(data, 3, "bench", "k") for data in images], n)
        batch = cpu_us(lambda: decode_pngs(images, 3, 32, 32), n)
        inflate = cpu_us(lambda: [zlib.decompress(data) for data in idat], n)
        rows.append((each, batch, inflate))
    each, batch, inflate = (np.median([r[i] for r in rows]) for i in range(3))
    ratios = np.array([r[1] / r[0] for r in rows])
    low, high = median_interval(ratios)
    print(
        f"{n} 32x32 RGB PNGs ({np.mean([len(d) for d in images]):.0f} bytes each), {args.reps} reps:"
    )
    print(f"  decode_image, one at a time: {each:6.1f} us a sample")
    print(f"  decode_pngs, together:       {batch:6.1f} us a sample")
    print(f"  zlib.decompress alone:       {inflate:6.1f} us a sample")
    print(f"  together / one at a time: {np.median(ratios):.3f} [{low:.3f}, {high:.3f}]")


if __name__ == "__main__":
    main()
