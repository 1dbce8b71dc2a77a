"""Does matching the reference's images help? Train the same small model on two generators and compare Dice.

For each generator preset (default: ``literal``, fss's images before they matched the
reference's, and ``reference``) and each seed, trains one recipe (``--recipe``, default
``cpu-demo``) for the same number of iterations (one run after the other), then segments the CRL ages held out of
training and the Wu atlas with its brain mask, on their own grids, with the last checkpoint.
Runs that finished are reused. Writes ``dice.tsv`` (preset, seed, dataset, case, tissue,
dice) to the output folder and prints the mean per tissue of each preset.

Run: python benchmarks/generator_fidelity.py [--recipe cpu-demo] [--iterations 800] [--seeds 0 1] [--out outputs/generator_fidelity]
     (the README's numbers: --recipe benchmarks/recipes/cpu-demo-0.1.yaml --iterations 300)
"""

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from fss.checkpoint import load_checkpoint
from fss.evaluation import atlas_cases
from fss.infer import segment
from fss.labels import TISSUE_ORDER
from fss.metrics import dice_per_tissue
from fss.paths import atomic_path
from fss.train import train
from fss.training_config import TrainConfig

WU_AGES = (22, 26, 30, 34)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["literal", "reference"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--recipe", default="cpu-demo", help="a packaged configuration or a YAML file")
    parser.add_argument("--iterations", type=int, default=800)
    parser.add_argument("--out", default="outputs/generator_fidelity")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for preset in args.presets:
        for seed in args.seeds:
            run = out / f"{preset}-seed{seed}"
            config = TrainConfig.load(args.recipe, [f"generator={preset}", f"seed={seed}", f"iterations={args.iterations}", "validation_every=100"])
            if not (run / "metrics.json").exists():
                train(config, run, overwrite=True)
            model = load_checkpoint(run / "last", "cpu")
            for case in atlas_cases(crl_ages=config.validation_ages, wu_ages=WU_AGES, wu_whole_head=False):
                image, labels = case.load()
                prediction, _ = segment(image, model, device="cpu")
                for tissue, value in dice_per_tissue(np.asarray(prediction.dataobj), labels).items():
                    rows.append({"preset": preset, "seed": seed, "dataset": case.dataset, "case": case.name, "tissue": tissue, "dice": value})
    table = pd.DataFrame(rows)
    with atomic_path(out / "dice.tsv", overwrite=True) as path:
        table.to_csv(path, sep="\t", index=False)
    order = list(TISSUE_ORDER)
    summary = table.pivot_table(index=["dataset", "preset"], columns="tissue", values="dice", aggfunc="mean")[order]
    summary["mean"] = summary.mean(axis=1)
    spread = table.groupby(["dataset", "preset", "seed"]).dice.mean().groupby(["dataset", "preset"]).agg(["min", "max"])
    print(
        f"\n{Path(args.recipe).name.removesuffix('.yaml')} recipe, {args.iterations} iterations, seeds {args.seeds}: "
        "mean Dice per tissue (last checkpoint)\n"
    )
    print(summary.join(spread.add_prefix("mean over seeds ")).round(3).to_string())


if __name__ == "__main__":
    main()
