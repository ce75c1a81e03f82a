"""The checkpoints a killed LLM training resumes from: which run they belong to (`run_stamp`), the
newest complete one, one that cannot be read set aside, and the trained model saved whole beside them.
No Hugging Face import here, so tools that only look at checkpoint folders (scripts/milestone.py)
start in a second.

A run is identified by a stamp of the settings that change what is trained, never of settings that
only change how it is read or saved (scoring mode, checkpoint interval, patience), so checkpoints
survive those changes and a renamed setting elsewhere does not throw hours away.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from laborllm.io import write_json_atomic
from laborllm.logs import TRAINER_LOG
from laborllm.distributed import is_main_process

log = logging.getLogger(TRAINER_LOG)
PROGRESS = "laborllm-progress.json"  # in each checkpoint: tokens and busy seconds so far
WHOLE = "whole"  # the trained model (or adapter) as saved at the end of a run, beside its checkpoints


# the settings that define what training produces (with the data, the resolved precision and the
# number of processes); anything else may change between pieces of one run
TRAINING_KEYS = ("base", "variant", "birth_year", "year_covariates", "lora", "lora_r", "lora_layers", "lora_alpha", "epochs",
                 "batch_size", "lr", "warmup_ratio", "weight_decay", "max_steps", "max_train_persons",
                 "max_valid_persons", "seed", "pack_tokens", "pool", "pool_mode", "pool_persons")


def run_stamp(cfg: dict, data: str, bf16: bool, world: int, stage: str | None = None) -> dict:
    stamp = {"config": {k: cfg.get(k) for k in TRAINING_KEYS}, "data": data,
             "precision": "bf16" if bf16 else "fp32", "world": world}
    return stamp | ({"stage": stage} if stage else {})


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


def started_precision(ckpts: list[Path], run: dict) -> bool | None:
    """Whether a started run of these same settings and data trained in bf16 (None: none started).
    Precision "auto" continues in it, so a run moved between machines (with AMX and without) keeps
    one precision and its checkpoints instead of starting over."""
    def same(stamp: dict) -> dict:
        return {k: v for k, v in json.loads(json.dumps(stamp, default=str)).items() if k not in ("precision", "stage")}

    for ckpt in ckpts:
        f = ckpt / "laborllm-run.json"
        if f.exists() and latest_checkpoint(ckpt) is not None:
            old = json.loads(f.read_text())
            if same(old) == same(run):
                return old["precision"] == "bf16"
    return None


def resumable(ckpt: Path, run: dict) -> bool:
    """Whether `ckpt` holds checkpoints of this very run (same settings, events and processes);
    checkpoints of another run are removed (they are ours, never the user's) so training starts over."""
    stamp = ckpt / "laborllm-run.json"
    same = stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(run, default=str))
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
