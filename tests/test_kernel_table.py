"""``fastmtl bench --models M --kernel-table``: one profiled CPU train step at size tiny gives a
consistent top-N table (ops by self CPU time); an impl the device cannot run is listed as skipped."""
import json
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from fastmtl.cli import main
from fastmtl.perf.kernel_table import TOP, _event_times


def test_kernel_table_of_one_cpu_step(capsys):
    rc = main(["bench", "--models", "joint@resnet18", "--kernel-table", "--impls", "eager,compile_graphs",
               "--layouts", "channels_last", "--size", "tiny", "--device", "cpu", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["schema"] == "fastmtl-kernel-table/1" and report["top"] == TOP == 25
    eager, graphs = report["tables"]
    assert (eager["model"], eager["encoder"], eager["layout"], eager["impl"]) == ("joint", "resnet18", "channels_last", "eager")
    assert eager["error"] is None and eager["time"] == "cpu"
    rows = eager["rows"]
    assert 0 < len(rows) <= TOP
    assert [r["total_ms"] for r in rows] == sorted((r["total_ms"] for r in rows), reverse=True)
    assert any("convolution" in r["name"] for r in rows)
    assert all(r["calls"] >= 1 and 0 < r["percent"] <= 100 for r in rows)
    assert sum(r["total_ms"] for r in rows) <= eager["step_ms"] * (1 + 1e-9)
    assert sum(r["percent"] for r in rows) == pytest.approx(100 * sum(r["total_ms"] for r in rows) / eager["step_ms"])
    assert "CUDA graphs need a CUDA device" in graphs["skipped"] and "rows" not in graphs


def test_kernel_table_text(capsys):
    assert main(["bench", "--models", "joint@resnet18", "--kernel-table", "--impls", "fused", "--size", "tiny",
                 "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "== joint@resnet18 nchw fused: not profiled: Triton kernels run on CUDA only" in text


def test_cuda_tables_count_only_device_events():
    """The CUDA path (no GPU here): kernels by their device time; the CPU ops that launched them,
    which also carry that time, are not counted twice."""
    def ev(key, kind, dev_us, cpu_us, n=1):  # an averaged profiler event
        return SimpleNamespace(key=key, device_type=kind, count=n, self_device_time_total=dev_us,
                               self_cpu_time_total=cpu_us)

    events = [ev("aten::convolution", DeviceType.CPU, 900, 50), ev("sm90_xmma_fprop", DeviceType.CUDA, 900, 0, 3),
              ev("triton_poi_fused_add", DeviceType.CUDA, 100, 0), ev("cudaLaunchKernel", DeviceType.CPU, 0, 30)]
    assert _event_times(events, on_cuda=True) == [{"name": "sm90_xmma_fprop", "calls": 3, "total_ms": 0.9},
                                                  {"name": "triton_poi_fused_add", "calls": 1, "total_ms": 0.1}]
    assert [r["name"] for r in _event_times(events, on_cuda=False)] == ["aten::convolution", "cudaLaunchKernel"]
