"""Training speed: iterations per second and peak memory, synthetic batches made on the training device.

Each iteration draws a batch with the generator, then runs :func:`fss.train.training_step`
(forward, backward, AdamW step; bfloat16 autocast on CUDA), as training does. Settings come
from a packaged configuration: ``cpu-demo`` on the CPU, ``gpu`` on CUDA.

Run: python benchmarks/training.py [--devices cpu cuda] [--iterations 20]
"""

import argparse
import json
import time

import torch
from memory import resident_mb

from fss.device import describe_device, resolve_device
from fss.synth import Generator, SynthSubject
from fss.synth.dataset import SyntheticBatches
from fss.train import TrainConfig, prepare_crl, training_step
from fss.unet import UNet, count_parameters


def measure(config_name: str, device: torch.device, iterations: int) -> dict:
    config = TrainConfig.load(config_name)
    volumes = prepare_crl((30, 31), config.spacing, with_seeds=True)
    generator = Generator([SynthSubject(v.name, v.seeds, v.labels) for v in volumes], config.generator_config(), device)
    batches = SyntheticBatches(generator, config.batch_size, seed=0)
    torch.manual_seed(0)
    model = UNet(channels=config.channels).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)

    def step():
        batch = next(batches)
        training_step(model, optimizer, batch.image, batch.labels)

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
        "config": config_name,
        "device": describe_device(device),
        "crop": "x".join(map(str, config.crop_shape)),
        "spacing": config.spacing,
        "batch": config.batch_size,
        "parameters": count_parameters(model),
        "iterations_per_second": iterations / seconds,
        "peak_mb": peak,
        "memory": "allocated" if device.type == "cuda" else "process RSS",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    rows = []
    for name in args.devices:
        if name == "cuda" and not torch.cuda.is_available():
            continue
        device = resolve_device(name)
        rows.append(measure("gpu" if device.type == "cuda" else "cpu-demo", device, args.iterations))
    print(f"\ntorch {torch.__version__}, {args.iterations} timed iterations after 3 warm-up ones\n")
    print("| configuration | device | crop (voxels) at mm | batch | parameters | iterations/s | peak memory |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['config']} | {r['device']} | {r['crop']} at {r['spacing']} | {r['batch']} | {r['parameters']:,} | {r['iterations_per_second']:.2f} | {r['peak_mb']:.0f} MiB {r['memory']} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(rows, file, indent=1)


if __name__ == "__main__":
    main()
