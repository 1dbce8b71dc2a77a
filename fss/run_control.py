"""How a training run meets its process: deterministic algorithms, ranks under ``torchrun``, and Ctrl-C.

Each piece changes process-wide state only inside a ``with`` block and restores it on exit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist


@contextlib.contextmanager
def determinism(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms inside the block if ``enabled`` (else cuDNN's autotuner on CUDA), all undone on exit.

    Sets ``torch.use_deterministic_algorithms``, ``torch.backends.cudnn.benchmark`` and, for
    cuBLAS, ``CUBLAS_WORKSPACE_CONFIG``; the caller's values come back when the block ends.
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    try:
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
        if saved[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[3]


class Distributed:
    """Rank and world size under ``torchrun`` (1 process otherwise)."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_true(self, flag: bool, device: torch.device) -> bool:
        """Whether ``flag`` holds on every rank (one all-reduce on ``device`` under ``torchrun``)."""
        if self.world == 1:
            return flag
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
        return bool(value.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Wait for every rank, then destroy the process group while all are still connected.

        Callers release the DistributedDataParallel model first: it keeps the group alive, and a
        group left to the interpreter's exit can abort the process while its threads still run.
        """
        if self.world > 1:
            dist.barrier()
            dist.destroy_process_group()


class TrainingInterrupted(Exception):
    """Training stopped by an interrupt (Ctrl-C) after saving its state: ``fss train --resume`` continues it."""

    def __init__(self, out: Path, iteration: int):
        super().__init__(f"interrupted after iteration {iteration}; the state is saved in {out}: continue with --resume")
        self.out, self.iteration = out, iteration


class TrainingDiverged(Exception):
    """Training stopped because the loss or the weights were not finite; the checkpoints saved before are kept."""

    def __init__(self, out: Path, iteration: int, what: str, saved: int):
        kept = f"the checkpoints of iteration {saved} in {out} are kept" if saved else f"no checkpoint was saved in {out}"
        super().__init__(f"{what} at iteration {iteration}: training diverged (is the learning rate too high?) and stopped; {kept}")
        self.out, self.iteration, self.saved = out, iteration, saved


class CheckpointNotSaved(OSError):
    """A checkpoint unit that could not be written (a full disk, a folder made read-only); the one saved before stays."""

    def __init__(self, path: Path, iteration: int, saved: int, error: Exception):
        folder = path.parent
        kept = f"{folder} keeps the checkpoint of iteration {saved}: --resume continues from it" if saved else f"{folder} holds no checkpoint yet"
        reason = " ".join(str(error).split())
        super().__init__(f"{path}: the checkpoint of iteration {iteration} could not be written ({reason}); {kept} once there is room")
        self.path, self.iteration, self.saved = path, iteration, saved


class Interrupt:
    """What Ctrl-C asked of the training loop."""

    requested = False
    saving = False

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """While the block runs (a save), any Ctrl-C only asks to stop after it."""
        self.saving = True
        try:
            yield
        finally:
            self.saving = False


@contextlib.contextmanager
def stop_on_interrupt(enabled: bool) -> Iterator[Interrupt]:
    """While the block runs, a first Ctrl-C asks the loop to stop after the current iteration; a second one stops at once,
    except during a save (:meth:`Interrupt.deferred`), which it lets finish.

    The caller's SIGINT handler is back on exit. Off (``enabled`` false, or outside the main
    thread) the block runs with the handler as it is.
    """
    interrupt = Interrupt()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield interrupt
        return

    def request(signum, frame):
        if interrupt.requested and not interrupt.saving:
            raise KeyboardInterrupt
        interrupt.requested = True

    previous = signal.signal(signal.SIGINT, request)
    try:
        yield interrupt
    finally:
        signal.signal(signal.SIGINT, previous)
