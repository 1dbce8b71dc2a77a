"""Seconds per image and peak memory of the synthetic image generator.

Settings: the reference one (sub-sta30, 256^3 at 0.5 mm, velocity-field integration on) and
128 x 160 x 128 at 0.8 mm (CRL atlas at 30 weeks, seeds made on the fly), batch 1 and 4, on
the CPU and on CUDA when present. Each measurement runs in a fresh process. Memory: on the
CPU, the peak resident memory of the whole process while it generates (libraries and the
subjects included; the kernel's peak counter is reset after setup) and what it held before;
on a GPU, the peak allocated memory.

Run: python benchmarks/generator.py [--devices cpu cuda] [--repeats 5] [--preset reference]
Targets: 2-core CPU at 256^3 at most 4 s per image and under 3 GB; one H100 at most 30 ms per image.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from memory import reset_peak_resident, resident_mb

from fss import datasets
from fss.device import describe_device
from fss.io import load_nifti
from fss.seeds import make_seeds
from fss.synth import Generator, SynthSubject, load_subjects, preset
from fss.synth.config import GeneratorConfig

SETTINGS = {
    "reference": "256^3 at 0.5 mm (sub-sta30)",
    "atlas": "128 x 160 x 128 at 0.8 mm (CRL GA30)",
}


def subjects(setting: str) -> tuple[list[SynthSubject], tuple[int, int, int] | None]:
    if setting == "reference":
        record = datasets.fetch_reference_example()
        return load_subjects(record.labels.parents[2], ["sta30"]), None
    [record] = datasets.fetch_crl_atlas(ages=[30])
    labels = record.feta_labels()
    seeds = make_seeds(load_nifti(record.image), labels, max_subclasses=4, seed=0)
    return [SynthSubject(record.name, seeds, np.asarray(labels.dataobj))], (128, 160, 128)


def measure(setting: str, batch: int, device: str, repeats: int, preset_name: str) -> dict:
    """One measurement, in this process."""
    loaded, shape = subjects(setting)
    config = preset(preset_name)
    if shape is not None:
        config = GeneratorConfig(**{**config.__dict__, "output_shape": shape})
    generator = Generator(loaded, config, device=device)
    cuda = generator.device.type == "cuda"

    def synchronize():
        if cuda:
            torch.cuda.synchronize()

    generator.sample(batch, seed=0)  # warm-up
    synchronize()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = resident_mb("VmRSS")
    reset_peak_resident()
    seconds = []
    for seed in range(1, repeats + 1):
        start = time.perf_counter()
        generator.sample(batch, seed=seed)
        synchronize()
        seconds.append((time.perf_counter() - start) / batch)
    result = {"setting": setting, "batch": batch, "device": describe_device(generator.device), "seconds": seconds}
    if cuda:
        result["peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_mb"] = resident_mb("VmHWM")
        result["before_mb"] = before
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--preset", default="reference")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--one", nargs=3, metavar=("SETTING", "BATCH", "DEVICE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        setting, batch, device = args.one
        print(json.dumps(measure(setting, int(batch), device, args.repeats, args.preset)))
        return

    devices = [d for d in args.devices if d != "cuda" or torch.cuda.is_available()]
    results = []
    for device in devices:
        for setting in args.settings:
            for batch in args.batches:
                command = [sys.executable, __file__, "--one", setting, str(batch), device, "--repeats", str(args.repeats), "--preset", args.preset]
                output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                results.append(json.loads(output.strip().splitlines()[-1]))
                r = results[-1]
                print(f"measured {setting} batch {batch} on {r['device']}: {1000 * statistics.median(r['seconds']):.0f} ms per image", flush=True)
    print(f"\npreset {args.preset!r}, torch {torch.__version__}, median of {args.repeats} batches after one warm-up\n")
    print("| setting | batch | device | ms per image | peak memory |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        memory = f"{r['peak_mb']:.0f} MiB" + (f" RSS (held {r['before_mb']:.0f} MiB before)" if "before_mb" in r else " allocated")
        print(f"| {SETTINGS[r['setting']]} | {r['batch']} | {r['device']} | {1000 * statistics.median(r['seconds']):.1f} | {memory} |")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)


if __name__ == "__main__":
    main()
