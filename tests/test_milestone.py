"""scripts/milestone.py: a long run's LLM progress carried through git to a fresh clone."""
import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "milestone.py"


def milestone(*args):
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def checkpoint(models: Path, step: int, name="llm-titles"):
    c = models / f".{name}.checkpoints"
    (c / f"checkpoint-{step}").mkdir(parents=True)
    (c / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (c / f"checkpoint-{step}" / "adapter_model.safetensors").write_bytes(b"w" * step)
    (c / "laborllm-run.json").write_text('{"stamp": 1}')


def test_save_carries_the_newest_checkpoint_and_partial_scores_only_and_restore_never_goes_back(tmp_path):
    run, ms = tmp_path / "run", tmp_path / "milestones"
    models = run / "nlsy97" / "models"
    checkpoint(models, 4)
    checkpoint(models, 8)
    (models / "markov1").mkdir()
    (models / "markov1" / "model.json").write_text('{"kind": "markov"}')  # refits in seconds: not carried
    parts = run / "nlsy97" / "logprobs" / "llm-titles-test.partial"
    parts.mkdir(parents=True)
    (parts / "part-00001.npz").write_bytes(b"scores")
    out = milestone("save", run, ms)
    assert "checkpoint-8" in out
    kept = ms / "nlsy97" / "models" / ".llm-titles.checkpoints"
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoint-8", "laborllm-run.json"]
    assert not (ms / "nlsy97" / "models" / "markov1").exists()
    assert (ms / "nlsy97" / "logprobs" / "llm-titles-test.partial" / "part-00001.npz").read_bytes() == b"scores"
    # a fresh clone: everything comes back
    fresh = tmp_path / "fresh"
    milestone("restore", ms, fresh)
    assert (fresh / "nlsy97" / "models" / ".llm-titles.checkpoints" / "checkpoint-8" / "trainer_state.json").exists()
    assert (fresh / "nlsy97" / "logprobs" / "llm-titles-test.partial" / "part-00001.npz").exists()
    # a run folder further along keeps its own progress
    checkpoint(tmp_path / "ahead" / "nlsy97" / "models", 12)
    milestone("restore", ms, tmp_path / "ahead")
    ahead = tmp_path / "ahead" / "nlsy97" / "models" / ".llm-titles.checkpoints"
    assert sorted(p.name for p in ahead.iterdir()) == ["checkpoint-12", "laborllm-run.json"]
    # once the model is fitted, its folder travels and its spent checkpoints leave the milestone
    (models / "llm-titles").mkdir()
    (models / "llm-titles" / "model.json").write_text('{"kind": "llm"}')
    milestone("save", run, ms)
    assert (ms / "nlsy97" / "models" / "llm-titles" / "model.json").exists() and not kept.exists()
