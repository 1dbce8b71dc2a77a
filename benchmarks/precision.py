"""Accuracy at equal iterations in float32 and in bfloat16 on the CPU: the packaged coarse-to-fine recipe, per seed.

For each seed and precision, the whole recipe trains in that precision, one run after the other:
the first stage (``--first-stage``, by default ``cpu-model-coarse``) to its end, then the recipe
(``--recipe``, by default ``cpu-model``) for ``--iterations`` from its last weights. Both precisions
run the same iterations with the same seed, so what differs is the arithmetic and the minutes it
takes. The last checkpoint is scored on the held-out CRL ages (the configuration's validation
ages) on their own grids, through the path of ``fss segment``
(:func:`fss.evaluation.crl_dice`); these ages chose between recipes, so they are validation
data, not a test.

bfloat16 is timed only where the CPU computes it natively (:func:`fss.device.native_bfloat16`:
AVX512-BF16 or AMX); elsewhere it is emulated, two orders of magnitude slower, and refused.
Runs are folders under ``--out``; one that has finished is scored again but not retrained. The
table is printed and written to ``dice.tsv`` there. Run it on a quiet machine: the minutes are
the runs' own training steps (validation and scoring excluded).

Run: python benchmarks/precision.py [--seeds 0 1] [--iterations 1000] [--out outputs/precision]
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from time_to_accuracy import Volumes, first_stage, recipe_label, timed_crl_dice, train_to_end, training_minutes

from fss.device import describe_device, native_bfloat16
from fss.labels import TISSUE_ORDER
from fss.paths import atomic_path
from fss.training_config import TrainConfig

PRECISIONS = ("float32", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="cpu-model", help="the second stage: a packaged configuration or a YAML file")
    parser.add_argument("--first-stage", default="cpu-model-coarse", metavar="CONFIG", help="the first stage, trained to its end")
    parser.add_argument("--iterations", type=int, default=1000, help="iterations of the second stage")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--out", default="outputs/precision")
    args = parser.parse_args()
    if not native_bfloat16("cpu"):
        parser.error(f"this CPU has no native bfloat16 ({describe_device('cpu')}): emulated, a run would take days")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    volumes = Volumes()
    first_label, label = recipe_label(args.first_stage), recipe_label(args.recipe)
    rows = []
    for seed in args.seeds:
        for precision in PRECISIONS:
            options = [f"seed={seed}", f"precision={precision}", "device=cpu"]
            first = TrainConfig.load(args.first_stage, options)
            start, first_minutes = first_stage(first, f"{first_label}-{precision}", out, volumes)
            second = [f"iterations={args.iterations}", f"validation_every={args.iterations}", f"initialize_from={start / 'last'}"]
            config = TrainConfig.load(args.recipe, [*options, *second])
            folder = out / f"{first_label}+{label}-{precision}-synthetic-seed{seed}"
            train_to_end(config, folder, volumes)
            scores, seconds = timed_crl_dice(folder, tuple(config.validation_ages))
            row = {
                "precision": precision,
                "seed": seed,
                "iterations": f"{first.iterations}+{config.iterations}",
                "first_stage_minutes": first_minutes,
                "training_minutes": first_minutes + training_minutes(folder, config.iterations),
                "scoring_seconds": seconds,
                "mean_dice": float(np.nanmean(scores.to_numpy())),
                **scores.mean().to_dict(),
            }
            print(f"{folder.name}: {row['training_minutes']:.1f} training minutes, mean Dice {row['mean_dice']:.3f}", flush=True)
            rows.append(row)
    table = pd.DataFrame(rows)
    with atomic_path(out / "dice.tsv", overwrite=True) as temporary:
        table.to_csv(temporary, sep="\t", index=False)
    tissues = list(TISSUE_ORDER)
    print(f"\n{first_label} then {label}, mean Dice of the held-out CRL ages on their own grids, {describe_device('cpu')}\n")
    print(
        table[["precision", "seed", "iterations", "training_minutes", "mean_dice", *tissues]].to_string(
            index=False, float_format=lambda v: f"{v:.3f}"
        )
    )
    print("\nOver seeds:\n")
    print(table.groupby("precision")[["training_minutes", "mean_dice"]].agg(["mean", "min", "max"]).to_string(float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
