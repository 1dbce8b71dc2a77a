"""Seconds from typing an ``fss`` command to its answer, in fresh processes, as a user meets them.

Measures ``fss --help``, ``fss segment --help``, a command refused for its arguments (answered
before any heavy import) and one segmentation end to end (``fss segment`` of the 0.8 mm CRL
atlas at 31 weeks with the packaged model: start-up, loading, inference and writing).

Run: python benchmarks/startup.py [--repeats 3]
(target: ``fss segment --help`` in well under a second)
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fss import datasets


def seconds(arguments: list[str], repeats: int) -> float:
    """Median wall-clock seconds of ``fss ARGUMENTS`` in a new Python process."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fss.cli", *arguments], capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    image = datasets.fetch_crl_atlas([31])[0].image
    with tempfile.TemporaryDirectory() as folder:
        commands = {
            "fss --help": ["--help"],
            "fss segment --help": ["segment", "--help"],
            "fss segment (refused: output is the input)": ["segment", str(image), "-o", str(image), "--overwrite"],
            "fss segment CRL GA31 (end to end)": ["segment", str(image), "-o", str(Path(folder) / "labels.nii.gz"), "--overwrite", "--device", "cpu"],
        }
        for name, arguments in commands.items():
            print(f"{name:45s} {seconds(arguments, args.repeats):6.2f} s")


if __name__ == "__main__":
    main()
