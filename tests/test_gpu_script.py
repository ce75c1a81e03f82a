"""The GPU benchmark script rehearsed on the CPU: the same three stages and commands with a tiny
model and 200 real NLSY97 people, so GPU time is never spent on a typo or a version mismatch."""
import json
import os
import subprocess
import sys
from pathlib import Path


def test_gpu_script_dry_run(tmp_path):
    env = {**os.environ, "LABORLLM_GPU_STATE": str(tmp_path / "state"), "OUT": str(tmp_path / "out"),
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    r = subprocess.run(["bash", "scripts/gpu-benchmark.sh", "dry-run"], cwd=Path(__file__).parents[1], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "out"
    log = (out / "gpu-benchmark.log").read_text()
    assert ": OK" in log  # the joined parts passed the sha256 check
    assert "scoring: events=2" in log and "max_abs_diff" in log
    assert "tokens_per_second=" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["model"] for m in metrics] == ["uniform", "markov1", "markov2", "logit", "career", "llm-titles", "llm-codes",
                                             "icl"]
    assert all(len(m["paired"]) == 7 for m in metrics)
    for f in ("config.json", "report.html", "comparison.md", "paired.md"):
        assert (out / f).exists(), f
    assert len(list(out.iterdir())) <= 8  # within the run tool's 8 files
    # stage 3 found everything fitted and scored, and printed the targets beside the figures
    assert log.count("stage 3: resume") == 1 and "already fitted" in (out / "stderr.log").read_text()
    assert "target: exact scoring of the test set <= 60 s per LLM" in log
    # then the LoRA titles model for CPU users (issue 10 item 2), packed into one file beside the results
    assert "target: LoRA within 2% of the full fine-tune" in log and "target: adapter at most 16 MiB" in log
    import tarfile

    names = tarfile.open(out / "lora-titles.tgz").getnames()
    assert "lora-titles/model.json" in names and "lora-titles/adapter/adapter_model.safetensors" in names
