"""scripts/gpu_check.py --dry-run: every part of the GPU check, end to end on the CPU with tiny sizes, so
that the real run (GPU time is scarce and may come once) cannot fail on its own plumbing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402


@pytest.mark.slow
def test_the_dry_run_measures_every_part(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    assert {r["part"] for r in rows} == set(gpu_check.PARTS)
    assert not [r for r in rows if "error" in r], [r for r in rows if "error" in r]
    tests = next(r for r in rows if r["part"] == "cuda-tests")
    assert tests["returncode"] == 0 and tests["passed"] == 2 and "failed" not in tests  # rehearsed on the CPU
    for setting in ("omniglot", "miniimagenet"):
        measured = [r for r in rows if r["part"] == f"bench-{setting}"]
        assert {r["exec_mode"] for r in measured if r["kind"] == "metarun"} == {"vmap", "loop"}
        assert all(r["tasks_per_s"] > 0 and r["device"] == "cpu" for r in measured)
    deviations = {r["setting"]: r["relative_deviation"] for r in rows if r["part"] == "precision"}
    assert deviations["exec.tf32=true"] == 0.0 and 0 < deviations["float32 (IEEE)"] < 1e-4  # a CPU has no TF32
    assert deviations["exec.autocast=bf16"] > 1e-3
    train = next(r for r in rows if r["part"] == "train-500")
    assert train["iterations"] == 3 and (tmp_path / "train-500" / "results.json").is_file()
    summary = (tmp_path / "gpu_check.md").read_text()
    for heading in ("## CUDA tests", "## Throughput: Omniglot", "## Throughput: miniImageNet", "## Precision",
                    "## Training run", "## Targets", "## Parts that did not finish\n\nnone"):
        assert heading in summary, heading
    assert summary in capsys.readouterr().out
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path)]) == 2  # never over an earlier check
