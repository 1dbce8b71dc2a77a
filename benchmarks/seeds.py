"""Seconds and peak memory of seed generation for one 0.8 mm CRL atlas volume, K = 1..4.

Run: python benchmarks/seeds.py [--age 30] [--repeats 3]   (target: under 20 s on 2 cores)
"""

import argparse
import resource
import time
import tracemalloc

import numpy as np
import torch

from fss import datasets
from fss.device import describe_device
from fss.io import load_nifti
from fss.seeds import make_seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--age", type=int, default=30)
    parser.add_argument("--max-subclasses", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    [record] = datasets.fetch_crl_atlas(ages=[args.age])
    image = load_nifti(record.image)
    labels = record.feta_labels()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = []
    tracemalloc.start()
    for _ in range(args.repeats):
        start = time.perf_counter()
        make_seeds(image, labels, max_subclasses=args.max_subclasses, seed=0)
        seconds.append(time.perf_counter() - start)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"seeds for {record.name}: {image.shape} voxels at 0.8 mm, K = 1..{args.max_subclasses}")
    print(f"machine: {describe_device('cpu')}, torch {torch.__version__}")
    print(f"seconds per volume: median {np.median(seconds):.2f}, min {min(seconds):.2f}, max {max(seconds):.2f} ({args.repeats} runs)")
    print(
        f"peak memory: {traced_peak / 2**20:.0f} MiB allocated by the seeds code (tracemalloc); "
        f"process peak RSS {rss_after:.0f} MiB (was {rss_before:.0f} MiB before)"
    )


if __name__ == "__main__":
    main()
