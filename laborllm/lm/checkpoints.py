"""The checkpoints a killed LLM training resumes from: which run they belong to (`run_stamp`), the
newest complete one, one that cannot be read set aside, and the trained model saved whole beside them.
No Hugging Face import here, so tools that only look at checkpoint folders (scripts/milestone.py)
start in a second.

A run is identified by a stamp of its fit settings (the settings whose role is "fit"), never of those
that only change how it is read or how the work goes (scoring mode, precision, checkpoint interval),
so checkpoints survive those changes; stamps are compared as every fit is (a setting a stamp predates
counts as equal at its default), so a setting added later does not throw hours away.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from laborllm.files import write_json_atomic
from laborllm.logs import TRAINER_LOG
from laborllm.distributed import is_main_process
from laborllm.settings import fit_differences

log = logging.getLogger(TRAINER_LOG)
PROGRESS = "laborllm-progress.json"  # in each checkpoint: tokens and busy seconds so far
WHOLE = "whole"  # the trained model (or adapter) as saved at the end of a run, beside its checkpoints


def run_stamp(fit: dict, data: str, bf16: bool | None, world: int, stage: str | None = None) -> dict:
    """What a training run is: the fit settings (laborllm.settings.fit_settings), the data, the
    resolved precision (None: not chosen yet) and the number of processes; anything else may change
    between its pieces."""
    stamp = {"config": fit, "data": data, "world": world}
    return stamp | ({"precision": "bf16" if bf16 else "fp32"} if bf16 is not None else {}) | (
        {"stage": stage} if stage else {})


def same_run(old: dict, new: dict, settings_cls, ignore: tuple = ()) -> bool:
    """Whether a stored stamp is of the run `new` describes: its settings compared as every fit is."""
    def rest(stamp):
        return {k: v for k, v in json.loads(json.dumps(stamp, default=str)).items() if k not in ("config", *ignore)}

    return rest(old) == rest(new) and not fit_differences(old.get("config", {}), new["config"], settings_cls)


def copy_whole(src: Path, dest: Path) -> None:
    """The weights and configuration `save_whole` wrote, without the Trainer's pickled arguments;
    hard-linked where the file system allows (a full model's weights are not written twice)."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix in (".safetensors", ".json") and f.name != "trainer_state.json":
            try:
                os.link(f, dest / f.name)
            except OSError:  # another file system
                shutil.copy2(f, dest / f.name)


def started_precision(ckpts: list[Path], run: dict, settings_cls) -> bool | None:
    """Whether a started run of these same settings and data trained in bf16 (None: none started).
    Precision "auto" continues in it, so a run moved between machines (with AMX and without) keeps
    one precision and its checkpoints instead of starting over."""
    for ckpt in ckpts:
        f = ckpt / "laborllm-run.json"
        if f.exists() and latest_checkpoint(ckpt) is not None:
            old = json.loads(f.read_text())
            if same_run(old, run, settings_cls, ignore=("precision", "stage")):
                return old["precision"] == "bf16"
    return None


def resumable(ckpt: Path, run: dict, settings_cls) -> bool:
    """Whether `ckpt` holds checkpoints of this very run (same settings, events and processes);
    checkpoints of another run are removed (they are ours, never the user's) so training starts over."""
    stamp = ckpt / "laborllm-run.json"
    same = stamp.exists() and same_run(json.loads(stamp.read_text()), run, settings_cls)
    if same and latest_checkpoint(ckpt) is not None:
        return True
    if ckpt.exists() and is_main_process():
        if any(ckpt.glob("checkpoint-*")):
            log.warning("%s: checkpoints of another run (other settings or data); starting over", ckpt)
        shutil.rmtree(ckpt, ignore_errors=True)
    if is_main_process():
        ckpt.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stamp, run)
    return False


def set_aside(bad: Path, error: Exception, name: str) -> Path:
    """A checkpoint that cannot be read (truncated by a kill or a full disk, or holding a file that
    is not plain tensors) is moved aside, never deleted, and the one before it is used instead."""
    aside = bad.with_name(f"damaged-{bad.name}")
    shutil.rmtree(aside, ignore_errors=True)
    bad.rename(aside)
    previous = latest_checkpoint(bad.parent)
    log.warning("%s: checkpoint %s cannot be read (%s: %s); moved to %s, %s", name, bad.name, type(error).__name__,
                str(error).splitlines()[0][:160] if str(error) else "", aside.name,
                f"resuming from {previous.name}" if previous else "no other checkpoint")
    if previous is None:
        from laborllm.errors import UserError

        raise UserError(f"{bad.parent}: its only checkpoint cannot be read and was moved to {aside.name}; "
                        "run the same command again to train from the start") from None
    return previous


def latest_checkpoint(ckpt: Path) -> Path | None:
    """The newest complete checkpoint (its trainer state written last), or None."""
    done = [p for p in ckpt.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)
