import pytest
import torch

from fss.device import cpu_threads, describe_device, resolve_precision


@pytest.mark.parametrize(
    "files, omp, expected",
    [
        ({"cpu.max": "150000 100000"}, None, 2),  # cgroup v2: 1.5 CPUs of quota, rounded up
        ({"cpu.max": "max 100000"}, None, 8),  # no quota: the CPUs the process may run on
        ({"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"}, None, 1),  # cgroup v1
        ({}, "3", 3),
    ],
)
def test_torch_threads_follow_the_container(tmp_path, monkeypatch, files, omp, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    assert cpu_threads(tmp_path) == expected


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected",
    [
        (False, False, torch.float32),  # AVX2 only: bfloat16 would be emulated
        (True, False, torch.bfloat16),  # e.g. AMD Zen 4
        (False, True, torch.bfloat16),  # e.g. Intel Sapphire Rapids
    ],
)
def test_auto_precision_is_bfloat16_only_where_the_cpu_computes_it(monkeypatch, avx512_bf16, amx, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("float32", "cpu") == torch.float32  # a request is taken as it is
    assert resolve_precision("bfloat16", "cpu") == torch.bfloat16
    assert describe_device("cpu").endswith(", no native bfloat16)") == (expected == torch.float32)


def test_auto_precision_on_a_gpu_follows_its_bfloat16_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for supported, expected in ((True, torch.bfloat16), (False, torch.float32)):  # an A100, then a T4
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, answer=supported: answer)
        assert resolve_precision("auto", torch.device("cuda")) == expected


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="use one of auto, float32, bfloat16"):
        resolve_precision("float16", "cpu")
