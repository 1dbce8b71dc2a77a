"""The ``fss`` command line: thin wrappers over the package's functions."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from fss import __version__, datasets
from fss.device import describe_device

DATASETS = ("crl", "wu", "reference")


def _fetch(args: argparse.Namespace) -> int:
    if args.all:
        paths = datasets.fetch_all(args.data_dir, progress=True)
        print(f"{len(paths)} files verified in {datasets.data_home(args.data_dir)}")
        names = DATASETS
    else:
        names = args.names
    records = []
    for name in names:
        if name == "reference":
            records.append(datasets.fetch_reference_example(args.data_dir, progress=not args.all))
        else:
            fetch = datasets.fetch_crl_atlas if name == "crl" else datasets.fetch_wu_atlas
            records.extend(fetch(args.ages, args.data_dir, progress=not args.all))
    if not args.all:
        for record in records:
            print(f"{record.name:12s} labels {record.labels}" + (f"\n{'':12s} image  {record.image}" if record.image else ""))
    print("\nThese data are not ours; use them on their terms and cite them:")
    seen = set()
    for record in records:
        if record.family not in seen:
            seen.add(record.family)
            print(f"- {record.family}: {record.licence}\n  Cite: {record.citation}")
    return 0


def _info(args: argparse.Namespace) -> int:
    packages = ("torch", "numpy", "scipy", "nibabel", "nilearn", "pooch", "matplotlib")
    print(f"fss {__version__} on Python {platform.python_version()} ({platform.platform()})")
    for name in packages:
        try:
            print(f"  {name:10s} {version(name)}")
        except PackageNotFoundError:
            print(f"  {name:10s} not installed")
    print(f"device     {describe_device('auto')}")
    home = datasets.data_home()
    present = sum((home / key).exists() for key in datasets.registry())
    source = f"${datasets.ENV_VAR}" if os.environ.get(datasets.ENV_VAR) else "per-user cache"
    print(f"data       {home} ({source}; {present} of {len(datasets.registry())} registered files present)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fss`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="fss", description="FetalSynthSeg: fetal brain tissue segmentation trained on synthetic images.")
    parser.add_argument("--version", action="version", version=f"fss {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fetch = commands.add_parser("fetch", help="download (or find in $FSS_DATA) and verify public data")
    which = fetch.add_mutually_exclusive_group(required=True)
    which.add_argument("names", nargs="*", default=[], metavar="NAME", help=f"datasets: {', '.join(DATASETS)}")
    which.add_argument("--all", action="store_true", help="every registered file")
    fetch.add_argument("--ages", type=int, nargs="+", help="gestational ages in weeks (atlases only)")
    fetch.add_argument("--data-dir", help="data folder (default: $FSS_DATA, else a per-user cache)")
    fetch.set_defaults(run=_fetch)

    info = commands.add_parser("info", help="versions, compute device and data location")
    info.set_defaults(run=_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fss``; returns the exit code (1 when data are missing or corrupted)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "fetch" and not args.all:
        unknown = sorted(set(args.names) - set(DATASETS))
        if unknown or not args.names:
            parser.error(f"fetch: name one or more of {', '.join(DATASETS)}, or --all" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    try:
        return args.run(args)
    except (datasets.ChecksumError, datasets.DataUnavailableError, ValueError) as error:
        print(f"fss {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
