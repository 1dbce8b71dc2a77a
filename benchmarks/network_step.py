"""Seconds per training step of candidate networks and batch shapes, network only, in one process.

Each row times forward, Dice + cross-entropy, backward and an AdamW step on a random image and
random labels (no generator, so that only the network's cost is compared): 2 warm-up steps, then
the mean of ``--steps``. Candidates that the package does not build are defined here:
``onednn`` calls oneDNN's convolution directly (PyTorch uses it at batch 1 only above a size,
see ``use_mkldnn`` in its ``Convolution.cpp``), ``channels_last_3d`` keeps the weights in
oneDNN's layout, ``torch.compile`` compiles the network with the default inductor backend (it
needs a C++ compiler; the compilation happens in the warm-up steps, whose seconds are shown
apart). The first row is timed again at the end, to show how steady the machine was.

``--profile FILE`` instead writes ``torch.profiler``'s operator table (self CPU time) of two
steps of the first candidate to FILE.

Run: python benchmarks/network_step.py [--steps 5]
     python benchmarks/network_step.py --profile docs/profile-cpu-model-0.1.txt
"""

import argparse
import contextlib
import time
from pathlib import Path

import torch
from torch import nn

from fss.device import describe_device
from fss.optimization import dice_ce_loss
from fss.unet import UNet


class OneDNNConv3d(nn.Conv3d):
    """A 3-D convolution that always runs oneDNN's kernel (CPU, float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.mkldnn_convolution(x, self.weight, self.bias, list(self.padding), list(self.stride), list(self.dilation), self.groups)


def on_onednn(model: nn.Module) -> nn.Module:
    """``model`` with each ``nn.Conv3d`` replaced by :class:`OneDNNConv3d` (same weights)."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Conv3d:
                replacement = OneDNNConv3d(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding)
                replacement.load_state_dict(child.state_dict())
                setattr(module, name, replacement)
    return model


def channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its weights in the ``channels_last_3d`` memory format (oneDNN's preferred layout)."""
    return model.to(memory_format=torch.channels_last_3d)


def seconds_per_step(model: nn.Module, shape: tuple[int, int, int], batch: int, steps: int, profile_to: str | None = None) -> tuple[float, float]:
    """Seconds of the 2 warm-up steps together and mean seconds of the ``steps`` training steps after them.

    With ``profile_to``, the operator table of those steps is written there.
    """
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 1, *shape, generator=generator)
    labels = torch.randint(0, 8, (batch, *shape), generator=generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        loss = dice_ce_loss(model(image), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    started = time.perf_counter()
    step()
    step()
    warm_up = time.perf_counter() - started
    with torch.profiler.profile() if profile_to else contextlib.nullcontext() as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        seconds = (time.perf_counter() - started) / steps
    if profile_to:
        table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=45)
        Path(profile_to).write_text(
            f"{steps} training steps, {shape}, batch {batch}, {describe_device(torch.device('cpu'))}, torch {torch.__version__}\n{table}"
        )
    return warm_up, seconds


CANDIDATES = [
    ("16-32-64-128 (fss 0.1.0 cpu-model)", lambda: UNet(channels=(16, 32, 64, 128)), (64, 80, 64), 1),
    ("16-32-64-128, oneDNN", lambda: on_onednn(UNet(channels=(16, 32, 64, 128))), (64, 80, 64), 1),
    ("8-32-64-128", lambda: UNet(channels=(8, 32, 64, 128)), (64, 80, 64), 1),
    ("16-32-64-128", lambda: UNet(channels=(16, 32, 64, 128)), (48, 64, 48), 2),
    ("8-32-64-128", lambda: UNet(channels=(8, 32, 64, 128)), (48, 64, 48), 2),
    ("8-32-64-128, channels_last_3d", lambda: channels_last(UNet(channels=(8, 32, 64, 128))), (48, 64, 48), 2),
    ("8-32-64-128, torch.compile (compiled in the warm-up steps)", lambda: torch.compile(UNet(channels=(8, 32, 64, 128))), (48, 64, 48), 2),
    ("8-32-64-128, skips added (cpu-model)", lambda: UNet(channels=(8, 32, 64, 128), skip="add"), (48, 64, 48), 2),
    ("16-32-64-128, skips added", lambda: UNet(channels=(16, 32, 64, 128), skip="add"), (48, 64, 48), 2),
    ("16-32-64-128", lambda: UNet(channels=(16, 32, 64, 128)), (32, 40, 32), 1),
    ("16-32-64-128, oneDNN", lambda: on_onednn(UNet(channels=(16, 32, 64, 128))), (32, 40, 32), 1),
    ("16-32-64-128 (cpu-demo)", lambda: UNet(channels=(16, 32, 64, 128)), (32, 40, 32), 2),
    ("8-16-32-64", lambda: UNet(channels=(8, 16, 32, 64)), (32, 40, 32), 2),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--profile", metavar="FILE", help="write the operator table of two steps of the first candidate here instead")
    args = parser.parse_args()
    if args.profile:
        name, build, shape, batch = CANDIDATES[0]
        torch.manual_seed(0)
        seconds_per_step(build(), shape, batch, 2, profile_to=args.profile)
        print(f"{name}: operator table in {args.profile}")
        return
    print(
        f"\n{describe_device(torch.device('cpu'))}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"mean of {args.steps} steps after 2\n"
    )
    print("| network | crop | batch | seconds for the 2 warm-up steps | seconds per step | thousand voxels per second |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, build, shape, batch in [*CANDIDATES, CANDIDATES[0]]:
        torch.manual_seed(0)
        warm_up, seconds = seconds_per_step(build(), shape, batch, args.steps)
        voxels = batch * shape[0] * shape[1] * shape[2]
        print(f"| {name} | {' x '.join(map(str, shape))} | {batch} | {warm_up:.1f} | {seconds:.2f} | {voxels / seconds / 1000:.0f} |", flush=True)


if __name__ == "__main__":
    main()
