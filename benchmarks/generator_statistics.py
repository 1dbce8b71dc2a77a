"""What the network sees: resolution, partial volume, texture and noise of the generator's images.

Prints, for each preset, statistics that can be set beside the reference method's:

- effective resolution (from 100,000 drawn acquisitions, no images): mean, 10th and 90th
  percentile and maximum of the voxel size (mm) the image is acquired at (the input spacing
  where the resolution is kept), and the fraction of images left unblurred. The reference's
  row is computed from its own draws, read as it reads them (its millimetres are 0.707 true
  ones, and its "kept" images go through a grid 1.41 times finer);
- native white-matter high-frequency std: images that keep their resolution, all other
  stages on; the standard deviation, inside the white matter, of the [0, 1] image minus its
  Gaussian smoothing (sigma 1 voxel);
- edge-profile width (voxels) at native resolution: total white-matter / cortex contrast
  across three voxels on either side of the boundary, divided by the step between the two
  voxels next to it (1 for a sharp step, more where edges carry partial volume);
- texture std ratio and lag-1 correlation: with the contrast stage alone and one subclass
  per tissue, the white-matter texture's standard deviation over the drawn one, and the
  correlation of neighbouring voxels along the first axis.

Images are sub-sta30 (256^3 at 0.5 mm, the reference's example subject), drawn from seeds
0..N-1. The reference's image statistics (not runnable here) are the numbers measured
side by side with its code: high-frequency std 0.030, texture ratio 0.545, lag-1 0.25.

Run: python benchmarks/generator_statistics.py [--images 6] [--presets literal reference]
"""

import argparse
import dataclasses

import numpy as np
import torch
from scipy import ndimage

from fss import datasets
from fss.synth import Generator, GeneratorConfig, load_subjects, preset
from fss.synth.config import REFERENCE_MM, BiasConfig, FlipConfig, GammaConfig, ResolutionConfig, SubclassConfig
from fss.synth.resolution import acquired_voxel_size, draw_resolution

WHITE_MATTER, CORTEX = 3, 2
REFERENCE_IMAGE_STATISTICS = {"wm_high_frequency_std": 0.030, "texture_std_ratio": 0.545, "texture_lag1": 0.25}
"""Quoted, not computed: measured once by running the reference method's own code on sub-sta30 with the statistics of this
script; that code is not part of fss, so this script cannot re-run it."""


def effective_resolution(config: ResolutionConfig, spacing: float, scale: float = 1.0, draws: int = 100_000) -> dict:
    """Acquired voxel size (mm) of ``draws`` images of ``spacing`` mm voxels (``scale``: see ``acquired_voxel_size``)."""
    size, blurred = acquired_voxel_size(draw_resolution(config, draws, torch.Generator().manual_seed(0)), spacing, scale)
    size = size.numpy()
    return {
        "mean_mm": float(size.mean()),
        "p10_mm": float(np.percentile(size, 10)),
        "p90_mm": float(np.percentile(size, 90)),
        "max_mm": float(size.max()),
        "unblurred": float(1 - blurred.double().mean()),
    }


def high_frequency_std(image: np.ndarray, labels: np.ndarray) -> float:
    """Std inside the (eroded) white matter of ``image`` minus its Gaussian smoothing (sigma 1 voxel)."""
    inside = ndimage.binary_erosion(labels == WHITE_MATTER, iterations=2)
    return float((image - ndimage.gaussian_filter(image, 1.0))[inside].std())


def edge_width(image: np.ndarray, labels: np.ndarray) -> float:
    """Edge-profile width in voxels between white matter and cortex (see the module docstring); NaN if no contrast."""
    white = labels == WHITE_MATTER
    signed = ndimage.distance_transform_edt(~white) - ndimage.distance_transform_edt(white)
    profile = {}
    for distance in (-3, -1, 1, 3):
        tissue = WHITE_MATTER if distance < 0 else CORTEX
        near = (np.abs(signed - distance) < 0.5) & (labels == tissue)
        profile[distance] = image[near].mean()
    total, step = profile[-3] - profile[3], profile[-1] - profile[1]
    return float(total / step) if abs(total) > 0.05 else float("nan")


def texture(image: np.ndarray, labels: np.ndarray, seed_map: np.ndarray, params: dict) -> tuple[float, float]:
    """White-matter texture std over the drawn std, and lag-1 correlation along axis 0 (one subclass per tissue)."""
    means, stds = params["contrast"].means[0].numpy(), params["contrast"].stds[0].numpy()
    value = 30  # white matter's only subclass
    inside = ndimage.binary_erosion(labels == WHITE_MATTER, iterations=3) & (seed_map == value)
    scale = means[value] / image[inside].mean()  # undo the normalisation by the maximum
    residual = np.where(inside, image * scale - means[value], 0.0)
    pairs = inside[:-1] & inside[1:]
    lag1 = np.corrcoef(residual[:-1][pairs], residual[1:][pairs])[0, 1]
    return float(residual[inside].std() / stds[value]), float(lag1)


def image_statistics(base: GeneratorConfig, images: int) -> dict:
    """Native-resolution and texture statistics over ``images`` sub-sta30 samples (median, min, max)."""
    subjects = load_subjects(datasets.fetch_reference_example().labels.parents[2], ["sta30"])
    native = dataclasses.replace(base, resolution=dataclasses.replace(base.resolution, preserve_resol=1.0), flip=FlipConfig(enabled=False))
    contrast_only = dataclasses.replace(
        base,
        subclasses=SubclassConfig(1, 1),
        gamma=GammaConfig(enabled=False),
        bias=BiasConfig(enabled=False),
        resolution=ResolutionConfig(enabled=False),
        flip=FlipConfig(enabled=False),
    )
    found: dict[str, list[float]] = {"wm_high_frequency_std": [], "edge_width_voxels": [], "texture_std_ratio": [], "texture_lag1": []}
    native_generator = Generator(subjects, native, "cpu")
    texture_generator = Generator(subjects, contrast_only, "cpu")
    for seed in range(images):
        sample = native_generator.sample(1, seed)
        image, labels = sample.image[0, 0].numpy(), sample.labels[0].numpy()
        found["wm_high_frequency_std"].append(high_frequency_std(image, labels))
        found["edge_width_voxels"].append(edge_width(image, labels))
        sample = texture_generator.sample(1, seed)
        ratio, lag1 = texture(sample.image[0, 0].numpy(), sample.labels[0].numpy(), sample.seed_map[0].numpy(), sample.params)
        found["texture_std_ratio"].append(ratio)
        found["texture_lag1"].append(lag1)
    return {key: (float(np.nanmedian(v)), float(np.nanmin(v)), float(np.nanmax(v))) for key, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=6, help="images per preset for the image statistics")
    parser.add_argument("--presets", nargs="+", default=["literal", "reference"])
    args = parser.parse_args()
    spacing = 0.5
    print(f"\nEffective resolution of a {spacing} mm input, 100,000 draws\n")
    print("| generator | mean mm | 10-90% mm | max mm | unblurred |")
    print("| --- | --- | --- | --- | --- |")
    rows = [
        (
            "reference method, modelled (its draws read as it reads them)",
            effective_resolution(preset("literal").resolution, spacing, scale=REFERENCE_MM),
        )
    ]
    rows += [(f"fss {name}", effective_resolution(preset(name).resolution, spacing)) for name in args.presets]
    for name, r in rows:
        print(f"| {name} | {r['mean_mm']:.2f} | {r['p10_mm']:.2f}-{r['p90_mm']:.2f} | {r['max_mm']:.2f} | {r['unblurred']:.0%} |")
    print(f"\nImage statistics, sub-sta30 256^3, {args.images} images per preset: median (min-max)\n")
    print("| generator | WM high-frequency std | edge width (voxels) | texture std ratio | texture lag-1 |")
    print("| --- | --- | --- | --- | --- |")
    r = REFERENCE_IMAGE_STATISTICS
    print(
        "| reference method, quoted (measured once with its own code, not run here) | "
        f"{r['wm_high_frequency_std']:.3f} | | {r['texture_std_ratio']:.3f} | {r['texture_lag1']:.2f} |"
    )
    for name in args.presets:
        s = image_statistics(preset(name), args.images)
        cells = [f"{m:.3f} ({lo:.3f}-{hi:.3f})" for m, lo, hi in s.values()]
        print(f"| fss {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
