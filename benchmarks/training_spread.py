"""How far notebook 03's numbers move with the seed and the CPU's instruction set: the spread its checks must accept.

Float32 training on another CPU parts from the committed run the way another seed does: kernels
for another instruction set differ in the last bits, and hundreds of iterations amplify them. So
the tolerance of a notebook cell that prints a trained number (``tests/nbval_tolerance.py``) comes
from runs: notebook 03's recipe at its defaults (``cpu-demo``, deterministic) for each seed and
each instruction set asked for, each in a fresh process with PyTorch's kernels set by
``ATEN_CPU_CAPABILITY`` and oneDNN's capped by ``ONEDNN_MAX_CPU_ISA`` (``native`` leaves both
alone). Each run prints what the notebook prints: the final and best mean validation Dice, and
the best checkpoint's mean Dice on the held-out ages' own grids (:func:`fss.evaluation.crl_dice`).

Run: python benchmarks/training_spread.py [--seeds 0 1 2] [--instruction-sets native avx2]
     (about 5 minutes per run with AVX-512 or AVX2 on 2 cores, 12 or more without vector kernels)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from fss.device import cpu_threads, describe_device
from fss.evaluation import crl_dice
from fss.train import train
from fss.training_config import TrainConfig

CONFIG = "cpu-demo"
"""Notebook 03's default configuration."""
ONEDNN_CAP = "AVX2"
"""oneDNN's instruction set when PyTorch's kernels are lowered (``make test-cpus`` caps it the same way)."""


def one_run(seed: int, folder: Path) -> dict:
    """Notebook 03 at its defaults with ``seed``: the numbers its cells print (mean Dice, 0-1)."""
    torch.set_num_threads(cpu_threads())
    config = TrainConfig.load(CONFIG, [f"seed={seed}", "deterministic=true"])
    metrics = train(config, folder, overwrite=True, progress=False)
    own_grids = crl_dice(folder / "best", config.validation_ages, device=config.device).mean(axis=1).mean()
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "seed": seed,
        "final_mean_dice": metrics["final_mean_dice"],
        "best_mean_dice": metrics["best_mean_dice"],
        "own_grid_mean_dice": float(own_grids),
        "training_seconds": metrics["seconds"],
    }


def environment(instruction_set: str) -> dict:
    """This process's environment with PyTorch's kernels set to ``instruction_set`` (``native``: unchanged)."""
    if instruction_set == "native":
        return dict(os.environ)
    return {**os.environ, "ATEN_CPU_CAPABILITY": instruction_set, "ONEDNN_MAX_CPU_ISA": ONEDNN_CAP}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--instruction-sets", nargs="+", default=["native", "avx2"], help="native, avx512, avx2 or default (no vector kernels)")
    parser.add_argument("--one", type=int, metavar="SEED", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(one_run(args.one, Path(folder) / "run")))
        return
    print(f"\n{describe_device(torch.device('cpu'))}, torch {torch.__version__}, {CONFIG}\n")
    print("| kernels | seed | final mean validation Dice | best | mean Dice on the own grids | training s |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for instruction_set in args.instruction_sets:
        for seed in args.seeds:
            command = [sys.executable, __file__, "--one", str(seed)]
            done = subprocess.run(command, env=environment(instruction_set), capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(
                f"| {row['capability']} | {seed} | {row['final_mean_dice']:.3f} | {row['best_mean_dice']:.3f} "
                f"| {row['own_grid_mean_dice']:.3f} | {row['training_seconds']:.0f} |",
                flush=True,
            )
    for key in ("final_mean_dice", "best_mean_dice", "own_grid_mean_dice"):
        values = [row[key] for row in rows]
        print(f"{key}: {min(values):.3f} to {max(values):.3f} over {len(values)} runs")


if __name__ == "__main__":
    main()
