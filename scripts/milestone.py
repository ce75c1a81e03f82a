"""Carry a long run's expensive progress through git, so a fresh clone continues it.

python scripts/milestone.py save RUN_DIR MILESTONE_DIR     # after a piece of the run: then commit MILESTONE_DIR
python scripts/milestone.py restore MILESTONE_DIR RUN_DIR  # on a fresh clone, before `laborllm run` continues

What travels is what costs hours: each LLM's newest complete training checkpoint (the LoRA adapter,
optimiser and schedule) with the stamp that says which run it belongs to, the weights of the best
epoch's checkpoint it names (loaded when the run ends), the LLM's finished model
folder, and its scores (finished, or the parts scored so far). Baselines refit in minutes and are not
carried. `restore` never replaces newer progress in the run folder with older progress.

To keep the repository light, the optimiser's Adam moments travel in bf16 (half the bytes; the
weights and the schedule travel exactly), the pickled training arguments (never read on resume)
stay behind, and any file over 6 MiB is cut into numbered parts, joined again by `restore`.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from laborllm.lm.checkpoints import latest_checkpoint
from laborllm.pipeline import MARKER

PART = 6 << 20  # bytes per part of a large file in the milestone (git hosts flag files over 8 MB)
LEFT_BEHIND = ("training_args.bin",)  # a pickle the Trainer writes and never reads when resuming


# the kinds whose fit or scores cost hours: LLMs, and the occupation heads on them (an hour of features);
# a mixture's scores are recomputed in seconds from its members' and stay behind
CARRIED = ("llm", "icl", "llm-head", "mixture")
SCORES_STAY = ("mixture",)


def _llm_models(models: Path) -> dict[str, str]:
    """{name: kind} of the models in a panel's models folder that travel: fitted ones and LLMs still training."""
    names = {p.name[1:].split(".checkpoints")[0]: "llm" for p in models.glob(".*.checkpoints*")}
    for m in models.glob("*/model.json"):
        kind = json.loads(m.read_text()).get("kind")
        if kind in CARRIED:
            names[m.parent.name] = kind
    return dict(sorted(names.items()))


def _copy(src: Path | list[Path], dst: Path, convert=None) -> None:
    """Copy a folder, a file, or a file's parts into place at `dst` via a temp folder; `convert`
    (_pack or _unpack) rewrites the copy first (a packed file may become `dst.part-NNN` files)."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    whole = not isinstance(src, list) and src.is_dir()
    if whole:
        shutil.copytree(src, tmp)
    else:
        tmp.mkdir(parents=True)
        for f in src if isinstance(src, list) else [src]:
            shutil.copy2(f, tmp / f.name.replace(f.name.split(".part-")[0], dst.name, 1))
    if convert:
        convert(tmp)
    shutil.rmtree(dst, ignore_errors=True) if dst.is_dir() else dst.unlink(missing_ok=True)
    for old in dst.parent.glob(f"{dst.name}.part-*"):
        old.unlink()
    if whole:
        tmp.replace(dst)
        return
    for f in tmp.iterdir():
        f.replace(dst.parent / f.name)
    tmp.rmdir()


def _files(path: Path) -> list[Path]:
    return [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]


def _pack(path: Path) -> None:
    """Milestone form: Adam moments in bf16, left-behind files dropped, large files in parts."""
    import torch

    for f in _files(path):
        if f.name in LEFT_BEHIND:
            f.unlink()
            continue
        if f.name == "optimizer.pt":
            state = torch.load(f, weights_only=True)  # our own checkpoint: tensors and numbers only
            for s in state["state"].values():
                for k in ("exp_avg", "exp_avg_sq"):
                    if k in s:
                        s[k] = s[k].to(torch.bfloat16)
            torch.save(state, f)
        if f.stat().st_size > PART:
            data = f.read_bytes()
            for i in range(0, len(data), PART):
                (f.parent / f"{f.name}.part-{i // PART:03d}").write_bytes(data[i: i + PART])
            f.unlink()


def _unpack(path: Path) -> None:
    """Back to what the Trainer wrote: parts joined, Adam moments in fp32 again."""
    import torch

    parts: dict[Path, list[Path]] = {}
    for f in _files(path):
        if ".part-" in f.name:
            parts.setdefault(f.with_name(f.name.split(".part-")[0]), []).append(f)
    for whole, pieces in parts.items():
        with open(whole, "wb") as out:
            for piece in sorted(pieces):
                out.write(piece.read_bytes())
                piece.unlink()
    for f in _files(path):
        if f.name == "optimizer.pt":
            state = torch.load(f, weights_only=True)
            for s in state["state"].values():
                for k in ("exp_avg", "exp_avg_sq"):
                    if k in s and s[k].dtype == torch.bfloat16:
                        s[k] = s[k].float()
            torch.save(state, f)


def _best(latest: Path) -> Path | None:
    """The earlier checkpoint the newest one names as its best epoch, when it is another one."""
    state = json.loads((latest / "trainer_state.json").read_text())
    best = latest.parent / Path(state.get("best_model_checkpoint") or latest.name).name
    return best if best != latest and best.is_dir() else None


def _weights_only(path: Path) -> None:
    """A best-epoch checkpoint as the Trainer reads it at the end: weights and configuration only (no
    optimiser, no trainer state, so it is never taken for the checkpoint to resume from)."""
    for f in _files(path):
        if f.suffix not in (".safetensors", ".json") or f.name == "trainer_state.json":
            f.unlink()
    _pack(path)


def _step(ckpts: Path) -> int:
    latest = latest_checkpoint(ckpts) if ckpts.is_dir() else None
    return int(latest.name.split("-")[-1]) if latest else -1


def save(run: Path, dest: Path) -> list[str]:
    """Copy the run's LLM progress into `dest` (replacing what `dest` held for those models)."""
    done = []
    for models in sorted(run.glob("*/models")):
        panel = models.parent
        for name, kind in _llm_models(models).items():
            out = dest / panel.name
            for ckpts in models.glob(f".{name}.checkpoints*"):
                latest = latest_checkpoint(ckpts)
                if latest is None:
                    continue
                target = out / "models" / ckpts.name
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                shutil.copy2(ckpts / "laborllm-run.json", target / "laborllm-run.json")
                _copy(latest, target / latest.name, _pack)
                done.append(f"{panel.name}/{name}: {ckpts.name}/{latest.name}")
                best = _best(latest)
                if best is not None:  # the best epoch, loaded at the end of the run: its weights travel
                    _copy(best, target / best.name, _weights_only)
                    done.append(f"{panel.name}/{name}: {ckpts.name}/{best.name} (best epoch, weights)")
            if (models / name / "model.json").is_file():
                _copy(models / name, out / "models" / name, _pack)
                for old in (out / "models").glob(f".{name}.checkpoints*"):  # fitted: checkpoints are spent
                    shutil.rmtree(old)
                done.append(f"{panel.name}/{name}: fitted model")
            # NAME-SPLIT, or NAME-SPLIT-Npeople-seedS for a sampled model (not llm-codes-head's for llm-codes)
            ours = re.compile(rf"{re.escape(name)}-(train|valid|test)(-\d+people-seed\d+)?\.(parquet|partial)")
            kept = [] if kind in SCORES_STAY else (panel / "logprobs").glob(f"{name}-*")
            for scores in (p for p in kept if ours.fullmatch(p.name)):
                _copy(scores, out / "logprobs" / scores.name, _pack)
                done.append(f"{panel.name}/{name}: {scores.name}")
                spent = out / "logprobs" / scores.name.replace(".parquet", ".partial")
                if scores.suffix == ".parquet" and spent.is_dir():  # finished: its parts are spent
                    shutil.rmtree(spent)
    return done


def restore(src: Path, run: Path) -> list[str]:
    """Copy milestone progress into the run folder where the run folder has less."""
    done = []
    if not run.exists() or not any(run.iterdir()):  # a fresh clone: the folder is a run folder of ours
        run.mkdir(parents=True, exist_ok=True)
        (run / MARKER).touch()
    for models in sorted(src.glob("*/models")):
        panel = run / models.parent.name
        for item in sorted(models.iterdir()):
            target = panel / "models" / item.name
            if item.name.startswith("."):  # checkpoints: the further one wins
                fitted = panel / "models" / item.name[1:].split(".checkpoints")[0] / "model.json"
                if not fitted.exists() and _step(item) > _step(target):
                    _copy(item, target, _unpack)
                    done.append(f"{panel.name}/{item.name} (step {_step(item)})")
            elif not (target / "model.json").exists():
                _copy(item, target, _unpack)
                done.append(f"{panel.name}/models/{item.name}")
        kept = models.parent / "logprobs"
        for name in sorted({p.name.split(".part-")[0] for p in kept.glob("*")}):
            scores, target = kept / name, panel / "logprobs" / name
            finished = panel / "logprobs" / (name.split(".partial")[0] + ".parquet")
            if name.endswith(".partial") and (finished.exists() or _parts(target) >= _parts(scores)):
                continue
            if not name.endswith(".partial") and target.exists():
                continue
            _copy(scores if scores.is_dir() else sorted(kept.glob(f"{name}*")), target, _unpack)
            done.append(f"{panel.name}/logprobs/{name}")
    return done


def _parts(folder: Path) -> int:
    """How many parts of finished people a scoring folder holds (a part cut in pieces counts once)."""
    return len({p.name.split(".part-")[0] for p in folder.glob("part-*.npz*")}) if folder.is_dir() else -1


def fail(message: str):
    """A misuse is one message and exit status 2, as in the CLI; never a traceback."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def is_run(folder: Path) -> bool:
    return (folder / MARKER).exists() or (folder / "config.json").is_file() and (folder / "metrics.json").is_file()


def is_milestone(folder: Path) -> bool:
    """A milestone holds PANEL/models or PANEL/logprobs and nothing that makes it a run folder."""
    return not is_run(folder) and (any(folder.glob("*/models")) or any(folder.glob("*/logprobs")))


def check(action: str, source: Path, dest: Path) -> bool:
    """Whether there is anything to do; a misuse (arguments swapped, a file, a mistyped folder) exits 2
    before anything is written."""
    if source.is_file() or dest.is_file():
        fail(f"{source if source.is_file() else dest}: a file; {action} takes folders "
             f"({'RUN_DIR MILESTONE_DIR' if action == 'save' else 'MILESTONE_DIR RUN_DIR'})")
    if action == "save":
        if not source.is_dir() or not is_run(source):
            fail(f"{source}: not a laborllm run folder (save RUN_DIR MILESTONE_DIR: arguments swapped?)")
        if dest.is_dir() and any(dest.iterdir()) and not is_milestone(dest):
            fail(f"{dest}: {'a run folder' if is_run(dest) else 'exists and is not a milestone'}; "
                 "save writes only into a milestone folder (save RUN_DIR MILESTONE_DIR)")
        return True
    if not source.is_dir():
        if source.parent.name == "milestones" and source.parent.is_dir():  # nothing committed yet: start afresh
            print(f"{source}: no milestone yet; nothing to restore")
            return False
        fail(f"{source}: no such milestone folder")
    if not is_milestone(source):
        fail(f"{source}: not a milestone (restore MILESTONE_DIR RUN_DIR: arguments swapped?)")
    if dest.is_dir() and any(dest.iterdir()) and not is_run(dest):
        fail(f"{dest}: exists and is not a laborllm run folder; restore writes only into a run folder")
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("save", "restore"))
    ap.add_argument("source", type=Path)
    ap.add_argument("dest", type=Path)
    a = ap.parse_args()
    if not check(a.action, a.source, a.dest):
        return
    for line in (save if a.action == "save" else restore)(a.source, a.dest) or ["nothing to carry"]:
        print(line)


if __name__ == "__main__":
    main()
