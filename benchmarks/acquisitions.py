"""What the resolution stage simulates at each training configuration's working grid, and what it costs.

For each packaged training configuration (its spacing and crop) and each generator preset: the share of 20 000 drawn
acquisitions that blur the image (coarser than the working grid on some axis), the share that are thick-slice stacks,
the median acquired voxel's largest side (mm), and the seconds the stage takes per crop (mean and largest over
``--repeats`` crops of the configuration's size drawn one at a time, on a random image, after one warm-up).

Run: python benchmarks/acquisitions.py [--configs cpu-demo cpu-model-coarse cpu-model gpu] [--presets reference clinical]
Target: at the cpu-model grid with the clinical preset, more than a third of the draws blur, some are thick-slice
stacks, and the stage takes at most 0.05 s per 48 x 64 x 48 crop on a 2-core CPU.
"""

import argparse
import statistics
import time

import torch

from fss.device import describe_device
from fss.synth import preset
from fss.synth.resolution import acquired_voxel_size, apply_resolution, draw_resolution
from fss.training_config import TrainConfig

DRAWS = 20_000


def measure(config_name: str, preset_name: str, repeats: int) -> dict:
    """The row of one training configuration and one preset."""
    train = TrainConfig.load(config_name)
    resolution = preset(preset_name).resolution
    draws = draw_resolution(resolution, DRAWS, torch.Generator().manual_seed(0))
    size, blurred = acquired_voxel_size(draws, train.spacing)
    thick = float(draws.thick.double().mean()) if draws.thick is not None else 0.0
    spacings = torch.full((1, 3), train.spacing, dtype=torch.float64)
    seconds = []
    for repeat in range(repeats + 1):
        image = 300 * torch.rand((1, 1, *train.crop_shape), generator=torch.Generator().manual_seed(repeat))
        params = draw_resolution(resolution, 1, torch.Generator().manual_seed(repeat))
        start = time.perf_counter()
        apply_resolution(image, params, spacings)
        seconds.append(time.perf_counter() - start)
    return {
        "configuration": config_name,
        "grid": f"{train.spacing} mm, {' x '.join(map(str, train.crop_shape))}",
        "preset": preset_name,
        "blurred": f"{float(blurred.double().mean()):.1%}",
        "thick slices": f"{thick:.1%}",
        "median acquired mm": f"{float(size.median()):.2f}",
        "mean s per crop": f"{statistics.mean(seconds[1:]):.3f}",
        "largest s": f"{max(seconds[1:]):.3f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["cpu-demo", "cpu-model-coarse", "cpu-model", "gpu"])
    parser.add_argument("--presets", nargs="+", default=["reference", "clinical"])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    print(f"device: {describe_device(torch.device('cpu'))}, {DRAWS} draws per row, seconds over {args.repeats} crops")
    rows = [measure(c, p, args.repeats) for c in args.configs for p in args.presets]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        print("| " + " | ".join(row[c] for c in columns) + " |")


if __name__ == "__main__":
    main()
