"""Choice of compute device (``"auto"`` means CUDA, then Apple MPS, then CPU) and of the precision a network computes in."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``device``; ``"auto"`` picks CUDA, then MPS, then CPU.

    Raises
    ------
    ValueError
        For a name torch does not know, or a device this machine does not have.

    Example
    -------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if str(device) != "auto":
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from error
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: CUDA is not available to this torch ({torch.__version__}); use cpu or auto")
        if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: there are {torch.cuda.device_count()} CUDA devices")
        if chosen.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r}: Apple MPS is not available here; use cpu or auto")
        if chosen.type not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device {device!r}: fss runs on cpu, cuda or mps")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


PRECISIONS = ("auto", "float32", "bfloat16")
"""Precisions a network can be trained in: ``auto`` is bfloat16 where the device computes it natively, else float32."""


def native_bfloat16(device: str | torch.device = "auto") -> bool:
    """Whether ``device`` computes bfloat16 in hardware: a CUDA GPU that supports it (Ampere and
    newer), or a CPU with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated: on an AVX2-only
    CPU a bfloat16 forward pass is two orders of magnitude slower than float32."""
    device = resolve_device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(precision: str = "auto", device: str | torch.device = "auto") -> torch.dtype:
    """The dtype a network computes in on ``device`` (under autocast; the weights stay float32).

    ``"auto"`` is bfloat16 where :func:`native_bfloat16`, else float32; ``"float32"`` and
    ``"bfloat16"`` are taken as they are.

    Raises
    ------
    ValueError
        For a name not in :data:`PRECISIONS`.

    Example
    -------
    >>> resolve_precision("float32", "cpu")
    torch.float32
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return getattr(torch, precision)


def describe_device(device: str | torch.device = "auto") -> str:
    """A one-line human description of the device, e.g. ``"cuda (NVIDIA H100 80GB HBM3)"`` or
    ``"cpu (2 threads, AVX2 kernels, no native bfloat16)"``: the instruction set that PyTorch's
    CPU kernels use (``ATEN_CPU_CAPABILITY`` can lower it), which changes float32 results in the
    last bits and the speed."""
    device = resolve_device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        bfloat16 = "native bfloat16" if native_bfloat16(device) else "no native bfloat16"
        return f"cpu ({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()} kernels, {bfloat16})"
    return device.type


def cpu_threads(cgroup: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """How many CPU threads this process may really use: the smallest of the CPUs it may run on,
    the container's CPU quota (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_quota_us``, rounded up) and
    ``OMP_NUM_THREADS`` when set.

    Binder gives a notebook 1-2 CPUs of a large host; torch would otherwise start one thread per
    host CPU and run slower. Notebooks call ``torch.set_num_threads(cpu_threads())`` themselves:
    this function changes nothing.
    """
    limits = [len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)]
    cgroup = Path(cgroup)
    for quota_file, period_file in ((cgroup / "cpu.max", None), (cgroup / "cpu" / "cpu.cfs_quota_us", cgroup / "cpu" / "cpu.cfs_period_us")):
        try:
            fields = quota_file.read_text().split()
            quota, period = fields[0], (fields[1] if period_file is None else period_file.read_text().strip())
        except (OSError, IndexError):
            continue
        if quota not in ("max", "-1") and int(period) > 0:
            limits.append(max(1, -(-int(quota) // int(period))))
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        limits.append(int(os.environ["OMP_NUM_THREADS"]))
    return min(limits)


def memory_bytes(device: str | torch.device = "auto") -> int:
    """Total memory of ``device`` in bytes: the GPU's for CUDA, else the machine's RAM."""
    device = resolve_device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(needed: float, device: str | torch.device, what: str) -> None:
    """Raise ValueError when ``what`` needs more than ``device``'s memory (``needed`` in bytes, an estimate).

    The message gives both numbers, so that the user can pick a smaller grid or output.
    """
    available = memory_bytes(device)
    if needed > available:
        raise ValueError(
            f"{what} needs about {needed / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB of {resolve_device(device).type} memory here"
        )
