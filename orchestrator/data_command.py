"""`activescale data pack` and `activescale data inspect`: shard sets on disk
(trainers/data/pack.py, trainers/data/manifest.py; docs/data.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

IMAGE_FORMATS = ("png", "jpg", "npy")  # trainers.data.images.IMAGE_FORMATS, without its imports
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def cmd_data_pack(args: argparse.Namespace) -> int:
    from trainers.data.manifest import describe_manifest
    from trainers.data.pack import pack

    out = Path(args.out)
    manifest = pack(
        Path(args.src),
        out,
        shard_size=args.shard_size,
        image_format=args.format,
        clean_fraction=args.clean_fraction,
        seed=args.seed,
    )
    console.print(describe_manifest(out, manifest), highlight=False)
    return 0


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from trainers.data.manifest import describe_manifest, read_manifest, verify_shards

    folder = Path(args.folder)
    manifest = read_manifest(folder)
    console.print(describe_manifest(folder, manifest), highlight=False)
    problems = verify_shards(folder, manifest, checksums=args.verify)
    for problem in problems:
        err_console.print(f"[red]bad shard[/]: {problem}", highlight=False)
    checked = "sizes and sha256" if args.verify else "sizes"
    if problems:
        err_console.print(f"{len(problems)} shards differ from the manifest ({checked} checked)")
        return 1
    console.print(f"every shard matches the manifest ({checked} checked)")
    return 0


def add_data_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    data = sub.add_parser("data", help="Pack datasets into shards and inspect them.")
    commands = data.add_subparsers(dest="data_command", required=True)
    p = commands.add_parser(
        "pack",
        help="Write an image folder, an .npz or CIFAR-10's batches as WebDataset shards.",
        description="Write SRC (an image folder with train/ and test/, an .npz file, or "
        "CIFAR-10's python batches) as WebDataset shards with a manifest under OUT.",
    )
    p.add_argument("src", help="Image folder, .npz file, or folder with cifar-10-batches-py.")
    p.add_argument("out", help="New folder for the shards and manifest.json.")
    p.add_argument("--shard-size", type=int, default=1000, help="Samples per shard.")
    p.add_argument(
        "--format",
        choices=IMAGE_FORMATS,
        default="png",
        help="Image encoding (npy: raw pixels, nothing to decode; larger for photos, faster).",
    )
    p.add_argument(
        "--clean-fraction",
        type=float,
        default=0.1,
        help="Without a clean split in SRC: this fraction of train becomes it (0: none).",
    )
    p.add_argument("--seed", type=int, default=0, help="Seed of the shuffle and clean carving.")
    p.set_defaults(func=cmd_data_pack)
    p = commands.add_parser("inspect", help="Print a shard set's manifest; check its shards.")
    p.add_argument("folder", help="A folder written by `activescale data pack`.")
    p.add_argument("--verify", action="store_true", help="Also check every shard's sha256.")
    p.set_defaults(func=cmd_data_inspect)
