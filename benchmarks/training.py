"""Training speed: iterations per second and peak memory, synthetic batches made on the training device.

Each iteration draws a batch with the generator, then runs :func:`fss.optimization.training_step`
(forward, backward, AdamW step), as training does. Settings come from training configurations
(``--configs``: packaged names or YAML files, such as the earlier recipes in
``benchmarks/recipes/``), by default ``cpu-demo`` on the CPU and ``gpu`` on CUDA; several
configurations are timed one after the other in one process, so that their ratio compares them
on one machine. Speed is given in iterations and in thousands of training voxels (crop voxels
times batch) per second. Each device is timed in float32 and,
where it computes bfloat16 natively (:func:`fss.device.native_bfloat16`: a CPU with AVX512-BF16
or AMX, an Ampere or newer GPU), in bfloat16 too; elsewhere bfloat16 is emulated, far slower,
and not timed.

``--modes CONFIG`` instead times one iteration of CONFIG with synthetic batches (the generator)
and with real ones (the augmentation of real images), in alternating blocks in one process, so
that both see the same machine: the budget of a synthetic and a real model trained with the
same recipe, per iteration.

Run: python benchmarks/training.py [--devices cpu cuda] [--iterations 20]
     python benchmarks/training.py --devices cpu --configs benchmarks/recipes/cpu-model-0.1.yaml cpu-model
     python benchmarks/training.py --modes cpu-model [--iterations 10] [--blocks 3]
"""

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from memory import reset_peak_resident, resident_mb

from fss.device import describe_device, native_bfloat16, resolve_device
from fss.optimization import training_step
from fss.synth import Generator, SynthSubject
from fss.synth.augment import Augmenter
from fss.synth.dataset import SyntheticBatches
from fss.training_config import TrainConfig
from fss.training_data import prepare_crl
from fss.unet import count_parameters


def measure(config_name: str, device: torch.device, dtype: torch.dtype, iterations: int) -> dict:
    config = TrainConfig.load(config_name)
    if device.type == "cpu":
        reset_peak_resident()
    volumes = prepare_crl((30, 31), config.spacing, with_seeds=True)
    generator = Generator([SynthSubject(v.name, v.seeds, v.labels) for v in volumes], config.generator_config(), device)
    batches = SyntheticBatches(generator, config.batch_size, seed=0)
    torch.manual_seed(0)
    model = config.network().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)

    def step():
        batch = next(batches)
        training_step(model, optimizer, batch.image, batch.labels, dtype)

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iterations):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else resident_mb("VmHWM")
    return {
        "config": Path(config_name).name.removesuffix(".yaml"),
        "device": describe_device(device),
        "precision": str(dtype).removeprefix("torch."),
        "crop": "x".join(map(str, config.crop_shape)),
        "channels": "-".join(map(str, config.channels)) + (", skips added" if config.skip == "add" else ""),
        "spacing": config.spacing,
        "batch": config.batch_size,
        "parameters": count_parameters(model),
        "iterations_per_second": iterations / seconds,
        "kilovoxels_per_second": iterations * config.batch_size * math.prod(config.crop_shape) / seconds / 1000,
        "peak_mb": peak,
        "memory": "allocated" if device.type == "cuda" else "process RSS",
    }


def compare_modes(config_name: str, iterations: int, blocks: int) -> None:
    """Print the seconds per iteration of ``config_name`` on the CPU with synthetic and with real batches."""
    config = TrainConfig.load(config_name)
    volumes = prepare_crl((30, 31), config.spacing, with_seeds=True)
    generator_config = config.generator_config()
    synthetic = SyntheticBatches(Generator([SynthSubject(v.name, v.seeds, v.labels) for v in volumes], generator_config, "cpu"), config.batch_size)
    real = Augmenter([v.image for v in volumes], [v.labels for v in volumes], [[v.spacing] * 3 for v in volumes], generator_config, "cpu")
    sources = {"synthetic": lambda step: next(synthetic), "real": lambda step: real.sample(config.batch_size, step)}
    models = {}
    for mode in sources:
        torch.manual_seed(0)
        model = config.network()
        models[mode] = (model, torch.optim.AdamW(model.parameters(), lr=config.learning_rate))
    seconds = {mode: [] for mode in sources}
    for block in range(blocks + 1):  # block 0 warms up
        for mode, source in sources.items():
            model, optimizer = models[mode]
            start = time.perf_counter()
            for step in range(iterations):
                batch = source(block * iterations + step)
                training_step(model, optimizer, batch.image, batch.labels)
            if block:
                seconds[mode].append((time.perf_counter() - start) / iterations)
    medians = {mode: statistics.median(values) for mode, values in seconds.items()}
    print(
        f"\n{config_name} on {describe_device(torch.device('cpu'))}, torch {torch.__version__}: "
        f"{blocks} alternating blocks of {iterations} iterations\n"
    )
    print("| batches | seconds per iteration (median of blocks) | blocks |")
    print("| --- | --- | --- |")
    for mode, values in seconds.items():
        print(f"| {mode} | {medians[mode]:.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(f"\nsynthetic / real: {medians['synthetic'] / medians['real']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--configs", nargs="+", help="configurations to time on each device (default: cpu-demo on the CPU, gpu on CUDA)")
    parser.add_argument("--modes", metavar="CONFIG", help="compare synthetic and real batches for this configuration on the CPU")
    parser.add_argument("--blocks", type=int, default=3, help="with --modes: timed blocks per mode")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if args.modes:
        compare_modes(args.modes, args.iterations, args.blocks)
        return
    rows = []
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            continue
        device = resolve_device(name)
        for config_name in args.configs or ["gpu" if device.type == "cuda" else "cpu-demo"]:
            for dtype in (torch.float32, torch.bfloat16) if native_bfloat16(device) else (torch.float32,):
                rows.append(measure(config_name, device, dtype, args.iterations))
    print(f"\ntorch {torch.__version__}, {args.iterations} timed iterations after 3 warm-up ones\n")
    print(
        "| configuration | device | precision | crop (voxels) at mm | batch | channels | parameters | "
        "iterations/s | thousand voxels/s | peak memory |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['config']} | {r['device']} | {r['precision']} | {r['crop']} at {r['spacing']} | {r['batch']} | {r['channels']} | "
            f"{r['parameters']:,} | "
            f"{r['iterations_per_second']:.2f} | {r['kilovoxels_per_second']:.0f} | {r['peak_mb']:.0f} MiB {r['memory']} |"
        )
    if len(rows) > 1 and "cpu" in args.devices:
        print(
            "\nPeak memory on the CPU counts from the start of each configuration, but memory an earlier one freed may stay with the process: "
            "time one configuration per process to compare memory."
        )
    if "cpu" in args.devices and not native_bfloat16("cpu"):
        print("\nThis CPU has neither AVX512-BF16 nor AMX: bfloat16 would be emulated, so only float32 is timed.")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
