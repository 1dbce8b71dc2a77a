"""Generator recipes compared with short training runs: notebook 03's budget (``cpu-demo``), two seeds per arm.

Each arm is a generator configuration; each run trains ``cpu-demo`` with it from a seed (``fss train``, one run at a
time), and its last checkpoint is scored, each scan on its own grid through ``fss segment``'s path, on:

- the held-out CRL ages (validation: they chose checkpoints and recipes), mean Dice of the seven tissues;
- the Wu atlas (test), whole head and brain-masked, mean Dice;
- the clinical-like stacks (test, :func:`fss.evaluation.clinical_cases`), mean Dice, and the mean share of labels
  where the stack is 0 (%).

Run: python benchmarks/short_runs.py [--arms reference clinical clinical-unmasked clinical-edges] [--seeds 0 1]
     [--out outputs/short_runs]  (the runs of docs/recipes.md: evaluation/short_runs.tsv)
     (a run folder that holds a finished run is scored again, not retrained)
"""

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
from clinical_stacks import score

from fss import datasets
from fss.checkpoint import load_checkpoint
from fss.device import describe_device
from fss.evaluation import WU_BRAIN_MASK, WU_WHOLE_HEAD, atlas_cases, crl_dice, evaluate, tissue_table
from fss.paths import atomic_path
from fss.synth import preset

CLINICAL = preset("clinical")
ARMS = {
    "reference": preset("reference"),
    "clinical": CLINICAL,
    "clinical-unmasked": dataclasses.replace(CLINICAL, mask=dataclasses.replace(CLINICAL.mask, enabled=False)),
    "clinical-edges": dataclasses.replace(CLINICAL, spatial=dataclasses.replace(CLINICAL.spatial, shift_beyond=0.25)),
}
"""``reference``: the generator before acquisitions were drawn at the working grid; ``clinical``: acquisitions at the
working grid, thick slices and brain masks, crops within the input as before; ``clinical-unmasked``: the same without
the brain masks; ``clinical-edges``: with crops that may move a quarter of their size beyond the input, showing the
field of view's edge."""


def train(arm: str, seed: int, out: Path) -> Path:
    """Train ``cpu-demo`` with the arm's generator from ``seed`` into ``out/<arm>-seed<seed>`` unless it is there."""
    run = out / f"{arm}-seed{seed}"
    if (run / "metrics.json").exists():
        return run
    out.mkdir(parents=True, exist_ok=True)
    generator = out / f"{arm}.yaml"
    ARMS[arm].save(generator, overwrite=True)
    command = ["fss", "train", "--config", "cpu-demo", "--set", f"seed={seed}", "--set", f"generator={generator}", "--out", str(run)]
    print(" ".join(command), flush=True)
    subprocess.run(command, check=True)
    return run


def scores(run: Path, wu_ages: list[int]) -> dict:
    """The run's last checkpoint on the CRL validation ages, the Wu atlas and the clinical-like stacks."""
    loaded = load_checkpoint(run / "last", "cpu")
    ages = loaded[1]["training"]["validation_ages"]
    wu = evaluate({"run": loaded}, atlas_cases(wu_ages=wu_ages), progress=False)
    wu = tissue_table(wu, ["dataset"], "dice")["mean"]
    clinical = score({"run": loaded}, wu_ages, seed=0)
    tissues = [c for c in clinical.columns if c not in ("model", "case", "slice_mm", "axis", "brain", "outside")]
    return {
        "CRL validation": float(crl_dice(loaded, ages).mean(axis=1).mean()),
        "Wu whole head": float(wu[WU_WHOLE_HEAD]),
        "Wu masked": float(wu[WU_BRAIN_MASK]),
        "clinical-like": float(clinical[tissues].mean(axis=1).mean()),
        "clinical brain": float(clinical.brain.mean()),
        "outside %": 100 * float(clinical.outside.mean()),
        "outside % max": 100 * float(clinical.outside.max()),
    }


def markdown(table: pd.DataFrame) -> str:
    """The table of docs/recipes.md: one row per run."""
    lines = [
        "| generator | seed | CRL ages | Wu, whole head | Wu, masked | clinical-like | outside % | training s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in table.to_dict("records"):
        lines.append(
            f"| `{row['arm']}` | {row['seed']} | {row['CRL validation']:.3f} | {row['Wu whole head']:.3f} | {row['Wu masked']:.3f} | "
            f"{row['clinical-like']:.3f} | {row['outside %']:.2f} ({row['outside % max']:.2f}) | {row['training s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--wu-ages", nargs="+", type=int, default=list(datasets.FAMILIES["wu"].ages))
    parser.add_argument("--out", type=Path, default=Path("outputs/short_runs"))
    args = parser.parse_args()
    print(f"{describe_device(torch.device('cpu'))}, torch {torch.__version__}, python {sys.version.split()[0]}", flush=True)
    runs = [(arm, seed, train(arm, seed, args.out)) for arm in args.arms for seed in args.seeds]
    rows = []
    for arm, seed, run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        rows.append(
            {"arm": arm, "seed": seed, **scores(run, args.wu_ages), "final validation": metrics["final_mean_dice"], "training s": metrics["seconds"]}
        )
        print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    with atomic_path(args.out / "short_runs.tsv", overwrite=True) as temporary:
        table.to_csv(temporary, sep="\t", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{markdown(table)}\n\nmean over the seeds:")
    print(table.drop(columns="seed").groupby("arm", sort=False).mean().to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
