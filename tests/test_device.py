import pytest

from fss.device import cpu_threads


@pytest.mark.parametrize("files, omp, expected", [
    ({"cpu.max": "150000 100000"}, None, 2),  # cgroup v2: 1.5 CPUs of quota, rounded up
    ({"cpu.max": "max 100000"}, None, 8),  # no quota: the CPUs the process may run on
    ({"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"}, None, 1),  # cgroup v1
    ({}, "3", 3),
])
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
