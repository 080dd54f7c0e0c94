"""The ingest benchmark's smoke run (``bench/ingest.py --quick``): a real registry process
on SQLite, stations onboarded through the API, realistic packages uploaded concurrently,
a surge that meets admission control (503 + Retry-After), and nothing lost."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "ingest.py"


def _load_bench() -> Any:
    # bench/ is a folder of scripts, not a package: load the module from its file.
    spec = importlib.util.spec_from_file_location("bench_ingest", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_settings_become_the_registry_environment() -> None:
    bench = _load_bench()
    env = bench.settings_env(
        {"database": {"url": "sqlite:///x.db"}, "worker": {"in_process": False}}
    )
    assert env == {
        "REGISTRY_DATABASE__URL": "sqlite:///x.db",
        "REGISTRY_WORKER__IN_PROCESS": "false",
    }


def test_window_rate_leaves_out_ramp_up_and_stragglers() -> None:
    bench = _load_bench()
    steady = [i * 0.01 for i in range(100)]  # 100 receipts/s
    assert bench.window_rate(steady) == pytest.approx(100.0)
    # A slow start and a late straggler do not change the sustained rate.
    assert bench.window_rate([-5.0, *steady[1:-1], 60.0]) == pytest.approx(100.0)


def _row(output: str, first_cells: str) -> list[str]:
    for line in output.splitlines():
        if line.startswith(f"| {first_cells} |"):
            return [c.strip() for c in line.strip("|").split("|")]
    raise AssertionError(f"no table row starting {first_cells!r} in:\n{output}")


@pytest.mark.timeout(180)
def test_quick_run_prints_its_tables_and_loses_nothing(tmp_path: Path) -> None:
    plot = tmp_path / "latency.png"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--plot", str(plot)],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    out = done.stdout
    # The concurrency curve: every package acknowledged, at a positive rate.
    for stations, acked in (("1", "8"), ("4", "24")):
        row = _row(out, f"sqlite (1 API) | {stations}")
        assert row[3] == acked, row
        assert float(row[4]) > 0, row
        p50, p99 = float(row[6]), float(row[8])
        assert 0 < p50 <= p99, row
    core = _row(out, "sqlite | 8")  # the in-process baseline ran on 8 packages
    assert float(core[2]) > 0
    # The surge of 12 stations against 4 admitted at once: refused, retried, all acked.
    surge = _row(out, "sqlite | 12")
    assert surge[2] == "12", surge
    assert int(surge[5]) > 0, surge
    held = re.search(
        r"sqlite: nothing lost: (\d+) receipts; the database holds (\d+) packages", out
    )
    assert held is not None, out
    assert held.group(1) == held.group(2) == str(8 + 24 + 12 + 8)
    assert plot.stat().st_size > 10_000
