"""Seconds and peak memory of ``fss.infer.segment`` on one 0.8 mm CRL atlas volume (135 x 189 x 155).

Each model is timed without and with left-right test-time augmentation, on the CPU and on
CUDA when present. Models: the packaged pretrained ones, and the architecture of each packaged
training configuration at its working spacing (untrained weights: the time does not depend on
their values).

Run: python benchmarks/inference.py [--repeats 3] [--devices cpu cuda]
(target: at most 10 s per volume without TTA and 2 GB peak memory on 2 CPU cores)
"""

import argparse
import time

import numpy as np
import torch
from memory import reset_peak_resident, resident_mb

from fss import datasets, pretrained
from fss.device import describe_device, resolve_device
from fss.infer import segment
from fss.io import load_nifti
from fss.training_config import TrainConfig
from fss.unet import UNet, count_parameters


def models(device: torch.device) -> dict[str, tuple[UNet, dict]]:
    """(model, metadata) by description: packaged models, then each configuration's architecture."""
    found = {name: pretrained.load(name, device) for name in pretrained.available()}
    for config_name in ("cpu-demo", "gpu"):
        config = TrainConfig.load(config_name)
        torch.manual_seed(0)
        found[f"{config_name} architecture (untrained)"] = (config.network().to(device), {"spacing_mm": config.spacing})
    return found


def measure(image, model: tuple[UNet, dict], device: torch.device, tta: bool, repeats: int) -> dict:
    segment(image, model, device, tta=tta)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    reset_peak_resident()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        segment(image, model, device, tta=tta)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resident_mb("VmHWM")
    return {"median_s": float(np.median(seconds)), "min_s": min(seconds), "max_s": max(seconds), "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--age", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    args = parser.parse_args()

    [record] = datasets.fetch_crl_atlas(ages=[args.age])
    image = load_nifti(record.image)
    print(f"{record.name}: {image.shape} voxels at {image.header.get_zooms()[:3]} mm; torch {torch.__version__}")
    print(f"median of {args.repeats} runs after one warm-up; CPU memory is the process's peak RSS, CUDA memory the peak allocated\n")
    print("| model | parameters | working spacing (mm) | device | TTA | seconds per volume (min-max) | peak memory |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            continue
        device = resolve_device(name)
        for label, (model, metadata) in models(device).items():
            for tta in (False, True):
                r = measure(image, (model, metadata), device, tta, args.repeats)
                print(
                    f"| {label} | {count_parameters(model):,} | {metadata['spacing_mm']} | {describe_device(device)} | {'yes' if tta else 'no'} "
                    f"| {r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}) | {r['peak_mb']:.0f} MiB |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
