"""scripts/milestone.py: a long run's LLM progress carried through git to a fresh clone."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "scripts" / "milestone.py"


def milestone(*args):
    r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def checkpoint(models: Path, step: int, name="llm-titles"):
    models.mkdir(parents=True, exist_ok=True)
    (models.parents[1] / ".laborllm-run").touch()  # the run folder says it is one
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
    from laborllm.pipeline import claim_run_folder

    claim_run_folder(fresh)  # `laborllm run --out fresh` continues there (it refuses folders not its own)
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
    # once scored on every event, the finished scores travel and the spent parts leave the milestone
    shutil.rmtree(parts)
    (parts.parent / "llm-titles-test.parquet").write_bytes(b"PAR1 scores")
    milestone("save", run, ms)
    assert (ms / "nlsy97" / "logprobs" / "llm-titles-test.parquet").exists()
    assert not (ms / "nlsy97" / "logprobs" / "llm-titles-test.partial").exists()


def test_large_files_travel_in_parts_and_adam_moments_in_bf16(tmp_path):
    import os

    import torch

    run, ms = tmp_path / "run", tmp_path / "milestones"
    models = run / "nlsy97" / "models"
    checkpoint(models, 8)
    ck = models / ".llm-titles.checkpoints" / "checkpoint-8"
    weights = os.urandom(7 << 20)  # an adapter over the 6 MiB part size
    (ck / "adapter_model.safetensors").write_bytes(weights)
    p = torch.nn.Parameter(torch.zeros(3_300_000))
    opt = torch.optim.AdamW([p])
    p.grad = torch.randn_like(p)
    opt.step()
    torch.save(opt.state_dict(), ck / "optimizer.pt")
    (ck / "training_args.bin").write_bytes(b"a pickle never read on resume")
    scores = run / "nlsy97" / "logprobs" / "llm-titles-test.parquet"
    scores.parent.mkdir(parents=True)
    finished = os.urandom(13 << 20)
    scores.write_bytes(finished)
    milestone("save", run, ms)
    carried = [f for f in ms.rglob("*") if f.is_file()]
    assert max(f.stat().st_size for f in carried) <= 6 << 20
    assert not any(f.name == "training_args.bin" for f in carried)
    fresh = tmp_path / "fresh"
    milestone("restore", ms, fresh)
    back = fresh / "nlsy97" / "models" / ".llm-titles.checkpoints" / "checkpoint-8"
    assert (back / "adapter_model.safetensors").read_bytes() == weights  # the weights travel exactly
    state = torch.load(back / "optimizer.pt", weights_only=True)["state"][0]
    want = opt.state_dict()["state"][0]
    assert state["exp_avg_sq"].dtype == torch.float32 and state["step"] == want["step"]
    torch.testing.assert_close(state["exp_avg"], want["exp_avg"], rtol=1e-2, atol=0)  # bf16: 3 digits
    assert (fresh / "nlsy97" / "logprobs" / "llm-titles-test.parquet").read_bytes() == finished


def test_the_best_epochs_weights_travel_with_the_newest_checkpoint(tmp_path):
    """The run keeps its best epoch at the end: the checkpoint the newest one names as best travels
    too (weights only, never taken for the one to resume from) and comes back beside it."""
    run, ms = tmp_path / "run", tmp_path / "milestones"
    models = run / "nlsy97" / "models"
    checkpoint(models, 769)
    checkpoint(models, 900)
    ckpts = models / ".llm-titles.checkpoints"
    state = {"global_step": 900, "best_model_checkpoint": f"runs/x/nlsy97/models/.llm-titles.checkpoints/checkpoint-769"}
    (ckpts / "checkpoint-900" / "trainer_state.json").write_text(json.dumps(state))
    (ckpts / "checkpoint-769" / "adapter_config.json").write_text('{"r": 16}')
    (ckpts / "checkpoint-769" / "optimizer.pt").write_bytes(b"moments")
    milestone("save", run, ms)
    fresh = tmp_path / "fresh"
    milestone("restore", ms, fresh)
    back = fresh / "nlsy97" / "models" / ".llm-titles.checkpoints"
    assert sorted(p.name for p in (back / "checkpoint-769").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (back / "checkpoint-769" / "adapter_model.safetensors").read_bytes() == b"w" * 769
    assert json.loads((back / "checkpoint-900" / "trainer_state.json").read_text())["global_step"] == 900
    from laborllm.lm.checkpoints import latest_checkpoint
    from laborllm.lm.training import best_checkpoint

    assert latest_checkpoint(back).name == "checkpoint-900"
    # the recorded path is relative to where the run began: found in the restored folder
    assert best_checkpoint(state["best_model_checkpoint"], back) == str(back / "checkpoint-769")
    import pytest

    from laborllm.errors import UserError

    with pytest.raises(UserError, match="best epoch's checkpoint checkpoint-5 is missing"):
        best_checkpoint("elsewhere/checkpoint-5", back)


def test_misuse_is_refused_before_anything_is_written(tmp_path):
    """Arguments swapped, a file, a mistyped folder: exit 2 with one message, nothing changed; a
    milestone not committed yet is nothing to restore."""
    run, ms = tmp_path / "run", tmp_path / "milestones" / "m"
    models = run / "nlsy97" / "models"
    checkpoint(models, 4)
    (models / "llm-titles").mkdir()
    (models / "llm-titles" / "model.json").write_text(json.dumps({"kind": "llm"}))
    (models / "llm-titles" / "adapter_model.safetensors").write_bytes(b"weights")
    milestone("save", run, ms)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    (tmp_path / "notes.txt").write_text("mine")
    for args, says in ((("save", ms, run), "not a laborllm run folder"), (("restore", run, ms), "not a milestone"),
                       (("save", run, tmp_path / "notes.txt"), "a file"), (("save", run, tmp_path), "not a milestone"),
                       (("restore", tmp_path / "milestone-typo", run), "no such milestone folder")):
        r = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert "no milestone yet" in milestone("restore", tmp_path / "milestones" / "not-yet", tmp_path / "fresh")


def test_heads_and_sampled_models_travel_with_their_scores_and_a_mixture_without(tmp_path):
    run, ms = tmp_path / "run", tmp_path / "ms"
    (run / ".laborllm-run").parent.mkdir(parents=True)
    (run / ".laborllm-run").touch()
    panel = run / "nlsy97"
    for name, kind, scores in (("llm-codes", "llm", "test"), ("llm-codes-head", "llm-head", "test"),
                               ("llm-mix", "mixture", "test"), ("logit", "logit", "test"),
                               ("icl", "icl", "test-100people-seed0")):  # a sampled model's scores of its sample
        (panel / "models" / name).mkdir(parents=True)
        (panel / "models" / name / "model.json").write_text(json.dumps({"kind": kind}))
        (panel / "logprobs").mkdir(exist_ok=True)
        (panel / "logprobs" / f"{name}-{scores}.parquet").write_bytes(name.encode())
    milestone("save", run, ms)
    kept = sorted(p.name for p in (ms / "nlsy97" / "logprobs").iterdir())
    assert kept == ["icl-test-100people-seed0.parquet", "llm-codes-head-test.parquet", "llm-codes-test.parquet"]
    assert sorted(p.name for p in (ms / "nlsy97" / "models").iterdir()) == ["icl", "llm-codes", "llm-codes-head",
                                                                           "llm-mix"]


def test_every_committed_nlsy97_model_is_the_fit_the_profile_asks_for(nlsy97, monkeypatch, tmp_path):
    """`make nlsy97-cpu` on a fresh clone restores these folders and must reuse them (ten CPU hours of
    LLM training): each one's stored identity equals the one the nlsy97-cpu profile asks for now, its
    settings compared by their roles."""
    from laborllm import api, pipeline
    from laborllm.models.folder import read_model_json
    from laborllm.profiles import profile

    committed = Path(__file__).parents[1] / "milestones" / "nlsy97-cpu" / "nlsy97" / "models"
    prof = profile("nlsy97-cpu")
    [(panel, chosen)] = pipeline._plan(prof, None, None, {})
    folder = Path("runs/nlsy97-cpu") / pipeline.panel_tag(panel)
    # restored where `make nlsy97-cpu` restores them (the mixture names its members by those paths)
    (tmp_path / folder / "models").mkdir(parents=True)
    for m in committed.iterdir():
        (tmp_path / folder / "models" / m.name).symlink_to(m)
    monkeypatch.chdir(tmp_path)
    names = [n for n, _, _ in chosen]
    checked = []
    for name, kind, settings in chosen:
        if not (committed / name).is_dir():
            continue  # refitted by the run itself (the baselines, CAREER)
        wanted = api.make_model(kind, prof.preset, name=name, **pipeline._run_members(settings, folder, names))
        stored = read_model_json(committed / name)
        assert api.identity_differences(stored["fit_identity"], api.fit_identity(wanted, nlsy97), wanted.Settings) == [], name
        checked.append(name)
    assert set(checked) == {"llm-titles", "llm-codes", "llm-mix", "icl"}
