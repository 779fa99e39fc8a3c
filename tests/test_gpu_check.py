"""benchmarks/gpu_check.py in its reduced form: on a CPU-only machine every CUDA branch is skipped with a
reason and every CPU comparison is made (and passes); on a GPU machine it runs them all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CHECKS = {"harvest", "sae steps", "resampling", "features build", "nccl", "saelens"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: run benchmarks/gpu_check.py in full by hand")
def test_gpu_check_reduced_on_cpu(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--quick", "--work", str(tmp_path / "w"),
           "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {r["check"] for r in rows} == CHECKS
    cuda = [r for r in rows if r["part"].startswith("cuda")]
    cpu = [r for r in rows if not r["part"].startswith("cuda")]
    assert {r["check"] for r in cuda} == CHECKS  # every check has its CUDA branch ...
    assert all(r["status"] == "skipped" and r["detail"] for r in cuda)  # ... skipped, saying why
    assert {r["check"] for r in cpu} == CHECKS - {"saelens"}  # the CPU comparison of every other check ...
    assert all(r["status"] == "ok" for r in cpu)  # ... made, and passed
    crossover = next(r for r in rows if r["part"] == "cpu crossover")
    assert len(crossover["crossover"]) == 2 and all(w["dense_over_sparse"] > 0 for w in crossover["crossover"])
