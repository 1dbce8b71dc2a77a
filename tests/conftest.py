"""Shared fixtures: no network in tests, and the public data mirror when present; figures drawn off screen."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import matplotlib
import pytest

from fss import datasets

matplotlib.use("Agg")  # once for every test: no window, the same pictures on every machine


_connect = socket.socket.connect


def _no_network(*args, **kwargs):
    raise OSError("network access is disabled in the tests")


def _local_connect(self, address):
    """Sockets between local processes (data loader workers) still connect; internet ones do not."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _no_network()
    return _connect(self, address)


@pytest.fixture(autouse=True)
def block_network(monkeypatch):
    """Every test runs offline: a download attempt fails at once with an OSError."""
    monkeypatch.setattr(socket.socket, "connect", _local_connect)
    monkeypatch.setattr(socket, "getaddrinfo", _no_network)


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The folder holding every registered data file (``$FSS_DATA`` or the cache).

    Skipped when the data are absent, except under CI, where that is a failure.
    """
    home = datasets.data_home()
    missing = [key for key in datasets.registry() if not (home / key).exists()]
    if missing:
        message = (
            f"{len(missing)} of {len(datasets.registry())} data files are missing from {home} "
            f"(first: {missing[0]}); set {datasets.ENV_VAR} to the data mirror or run `fss fetch --all`"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return home


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained two-level U-Net saved as a checkpoint at 1.6 mm: fast, for everything but accuracy."""
    import torch

    from fss.checkpoint import save_checkpoint
    from fss.unet import UNet

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = UNet(channels=(4, 8))
    stem = tmp_path_factory.mktemp("model") / "model"
    save_checkpoint(model, stem, {"spacing_mm": 1.6})
    return stem


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
