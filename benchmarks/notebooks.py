"""Wall time and peak memory of each tutorial notebook, executed at its defaults in a fresh kernel.

Each notebook runs from ``notebooks/`` (as ``make tutorial`` runs it) in a new Python kernel, one
after the other, with one extra cell appended that reports the kernel's peak resident memory
(``getrusage``: its own, and the largest of the processes it started, such as notebook 06's runs).
The executed copies are thrown away, or with ``--write`` replace the notebooks in ``notebooks/``
(without the extra cell): the committed outputs that nbval checks. What the notebooks write goes
to ``outputs/`` as usual. Run it on a quiet machine: the times are those of the notebooks' own
work, training included.

Run: python benchmarks/notebooks.py [NAME ...] [--write]    (default: every numbered notebook)
"""

import argparse
import json
import time
from pathlib import Path

import nbformat
import torch
from nbclient import NotebookClient

from fss.device import describe_device
from fss.paths import atomic_path

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PEAK_CELL = (
    "import json, resource\n"
    "print(json.dumps({'self': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
    " 'children': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))"
)


def run(path: Path, write: bool = False) -> dict:
    """Seconds to execute the notebook at ``path`` and the peak resident memory (GiB) of its kernel and of that kernel's children.

    ``write``: replace the notebook at ``path`` with the executed one (atomically).
    """
    book = nbformat.read(path, as_version=4)
    book.cells.append(nbformat.v4.new_code_cell(PEAK_CELL))
    started = time.perf_counter()
    NotebookClient(book, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    seconds = time.perf_counter() - started
    peak = json.loads(book.cells.pop().outputs[-1]["text"])  # KiB on Linux
    if write:
        with atomic_path(path, overwrite=True) as temporary:
            nbformat.write(book, temporary)
    return {"notebook": path.name, "seconds": seconds, "kernel_gib": peak["self"] / 2**20, "children_gib": peak["children"] / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook files in notebooks/ (default: all numbered ones)")
    parser.add_argument("--write", action="store_true", help="write the executed notebooks over the ones in notebooks/")
    args = parser.parse_args()
    paths = [NOTEBOOKS / name for name in args.names] or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    print(f"\n{describe_device(torch.device('cpu'))}, torch {torch.__version__}\n")
    print("| notebook | wall time | peak memory of the kernel | peak memory of a process it started |")
    print("| --- | --- | --- | --- |")
    for path in paths:
        row = run(path, args.write)
        minutes = f"{row['seconds'] / 60:.1f} min" if row["seconds"] >= 60 else f"{row['seconds']:.0f} s"
        children = f"{row['children_gib']:.2f} GiB" if row["children_gib"] > 0.01 else "none"
        print(f"| {row['notebook']} | {minutes} | {row['kernel_gib']:.2f} GiB | {children} |", flush=True)


if __name__ == "__main__":
    main()
