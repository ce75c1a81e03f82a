"""Carry a long run's expensive progress through git, so a fresh clone continues it.

python scripts/milestone.py save RUN_DIR MILESTONE_DIR     # after a piece of the run: then commit MILESTONE_DIR
python scripts/milestone.py restore MILESTONE_DIR RUN_DIR  # on a fresh clone, before `laborllm run` continues

What travels is what costs hours and is small: each LLM's newest complete training checkpoint (the
LoRA adapter, optimiser and schedule, a few MiB to tens of MiB) with the stamp that says which run it
belongs to, the LLM's finished model folder, and its scores (finished, or the parts scored so far).
Baselines refit in minutes and are not carried. `restore` never replaces newer progress in the run
folder with older progress from the milestone.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def _latest(ckpts: Path) -> Path | None:
    done = [p for p in ckpts.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def _llm_models(models: Path) -> list[str]:
    """LLM model names in a panel's models folder: fitted ones and ones still training."""
    names = {p.name[1:].split(".checkpoints")[0] for p in models.glob(".*.checkpoints*")}
    for m in models.glob("*/model.json"):
        if json.loads(m.read_text()).get("kind") in ("llm", "icl"):
            names.add(m.parent.name)
    return sorted(names)


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp) if src.is_dir() else (tmp.parent.mkdir(parents=True, exist_ok=True), shutil.copy2(src, tmp))
    if dst.is_dir():
        shutil.rmtree(dst)
    tmp.replace(dst)


def _step(ckpts: Path) -> int:
    latest = _latest(ckpts) if ckpts.is_dir() else None
    return int(latest.name.split("-")[-1]) if latest else -1


def save(run: Path, dest: Path) -> list[str]:
    """Copy the run's LLM progress into `dest` (replacing what `dest` held for those models)."""
    done = []
    for models in sorted(run.glob("*/models")):
        panel = models.parent
        for name in _llm_models(models):
            out = dest / panel.name
            for ckpts in models.glob(f".{name}.checkpoints*"):
                latest = _latest(ckpts)
                if latest is None:
                    continue
                target = out / "models" / ckpts.name
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                shutil.copy2(ckpts / "laborllm-run.json", target / "laborllm-run.json")
                _copy(latest, target / latest.name)
                done.append(f"{panel.name}/{name}: {ckpts.name}/{latest.name}")
            if (models / name / "model.json").is_file():
                _copy(models / name, out / "models" / name)
                for old in (out / "models").glob(f".{name}.checkpoints*"):  # fitted: checkpoints are spent
                    shutil.rmtree(old)
                done.append(f"{panel.name}/{name}: fitted model")
            for scores in (panel / "logprobs").glob(f"{name}-*"):
                _copy(scores, out / "logprobs" / scores.name)
                done.append(f"{panel.name}/{name}: {scores.name}")
    return done


def restore(src: Path, run: Path) -> list[str]:
    """Copy milestone progress into the run folder where the run folder has less."""
    done = []
    for models in sorted(src.glob("*/models")):
        panel = run / models.parent.name
        for item in sorted(models.iterdir()):
            target = panel / "models" / item.name
            if item.name.startswith("."):  # checkpoints: the further one wins
                fitted = panel / "models" / item.name[1:].split(".checkpoints")[0] / "model.json"
                if not fitted.exists() and _step(item) > _step(target):
                    _copy(item, target)
                    done.append(f"{panel.name}/{item.name} (step {_step(item)})")
            elif not (target / "model.json").exists():
                _copy(item, target)
                done.append(f"{panel.name}/models/{item.name}")
        for scores in sorted((models.parent / "logprobs").glob("*")):
            target = panel / "logprobs" / scores.name
            finished = panel / "logprobs" / (scores.name.split(".partial")[0] + ".parquet")
            if scores.name.endswith(".partial") and (finished.exists() or _parts(target) >= _parts(scores)):
                continue
            if not scores.name.endswith(".partial") and target.exists():
                continue
            _copy(scores, target)
            done.append(f"{panel.name}/logprobs/{scores.name}")
    return done


def _parts(folder: Path) -> int:
    return len(list(folder.glob("part-*.npz"))) if folder.is_dir() else -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("save", "restore"))
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    a = ap.parse_args()
    if not a.source.is_dir():
        if a.action == "restore":  # nothing committed yet: the run starts from the beginning
            print(f"{a.source}: no milestone yet; nothing to restore")
            return
        raise SystemExit(f"{a.source}: no such folder")
    for line in (save if a.action == "save" else restore)(a.source, a.dest) or ["nothing to carry"]:
        print(line)


if __name__ == "__main__":
    main()
