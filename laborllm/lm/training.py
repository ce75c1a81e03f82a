"""Fine-tuning glue around the Hugging Face Trainer: the schedule, batches (padded or packed),
length-grouped sampling, when to validate and save, and the one progress bar. Which checkpoints a
run resumes from is `laborllm.lm.checkpoints`.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from tqdm.auto import tqdm

from laborllm.files import write_json_atomic
from laborllm.logs import TRAINER_LOG
from laborllm.distributed import is_main_process
from laborllm.lm.checkpoints import PROGRESS, WHOLE, resumable, set_aside, latest_checkpoint
from laborllm.text.store import lengths

log = logging.getLogger(TRAINER_LOG)  # the raw per-step figures: the run's log file
progress = logging.getLogger(__name__)  # resuming, checkpoints and time left: the console too


def run_trainer(lm, train, valid, ckpt: Path, stamp: dict, cfg, name: str, bf16: bool) -> dict:
    """One Trainer run over these resumes (lists of token ids or a ResumeTokens store), resumed from
    `ckpt` when it holds this run's checkpoints; its figures for the model card."""
    from transformers import EarlyStoppingCallback, TrainingArguments

    cuda = torch.cuda.is_available()
    world = stamp["world"]
    plan = training_schedule(lengths(train), cfg, world)
    if cfg.pack_tokens:
        train, valid = pack(train, cfg.pack_tokens), pack(valid, cfg.pack_tokens)
    when = _checkpointing(cfg)
    args = TrainingArguments(
        warmup_steps=plan["warmup_steps"],
        output_dir=str(ckpt), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=plan["per_device"], per_device_eval_batch_size=plan["per_device"],
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine", **when,
        metric_for_best_model="eval_loss", greater_is_better=False,
        save_total_limit=2, bf16=bf16, logging_steps=5, report_to="none", seed=cfg.seed,
        dataloader_num_workers=0, remove_unused_columns=False,
        use_cpu=not cuda, ddp_find_unused_parameters=False, disable_tqdm=True,
    )
    if cfg.gradient_checkpointing:
        lm.gradient_checkpointing_enable()
    speed = _Progress(plan["tokens_per_step"], name, 60 * cfg.checkpoint_minutes)
    callbacks = [speed]
    if when.get("load_best_model_at_end") and cfg.patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.patience))
    trainer = _Trainer(model=lm, args=args, train_dataset=_Resumes(train), eval_dataset=_Resumes(valid),
                       data_collator=_collate_packed if cfg.pack_tokens else _collate, callbacks=callbacks)
    trainer.length_grouped = not cfg.pack_tokens
    # our one progress bar (loss, tokens/s) replaces the Trainer's, which prints raw log dicts
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    resume = latest_checkpoint(ckpt) if resumable(ckpt, stamp, type(cfg)) else None
    t0 = time.time()
    while True:
        if resume:
            progress.info("%s: resuming training from %s", name, resume)
        speed.resume_totals(resume)
        try:
            result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
            break
        except Exception as e:
            if not resume or speed.began:  # failed while training, not while reading the checkpoint
                raise
            resume = set_aside(resume, e, name)
    save_whole(trainer, ckpt / WHOLE)
    curve = [{"epoch": round(h["epoch"], 2), "eval_loss": round(h["eval_loss"], 4), "step": h["step"]}
             for h in trainer.state.log_history if "eval_loss" in h]
    # the whole run's figures, also when it was resumed: busy seconds and tokens kept in the checkpoints
    total = speed.totals
    return dict(
        train_seconds=round(time.time() - t0, 1), train_seconds_earlier=speed.earlier_wall and round(speed.earlier_wall, 1),
        train_loss=round(float(result.training_loss), 4),
        world_size=world, train_tokens=total["tokens"], train_busy_seconds=total["seconds"] and round(total["seconds"], 1),
        # the whole run's rate; this piece's when an earlier piece's seconds are unknown
        tokens_per_second=round(total["tokens"] / total["seconds"], 1) if total["seconds"] else (
            round(speed.rate, 1) if speed.rate else None),
        best_eval_loss=trainer.state.best_metric, train_steps=trainer.state.global_step, valid_curve=curve,
        steps_this_run=speed.steps, planned_steps=plan["steps"], warmup_steps=plan["warmup_steps"],
        tokens_per_step=plan["tokens_per_step"], precision="bf16" if bf16 else "fp32",
        epochs_done=round(trainer.state.epoch or 0, 2), resumed=bool(resume),
    )


def save_whole(trainer, folder: Path) -> None:
    """The trained model, whole, as the Trainer saves it (rank 0 writes). Under FSDP every rank holds
    a shard, so the shards are gathered first -- a collective: every rank must call this."""
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(folder))


class _Trainer(Trainer):
    """Batches of resumes of similar length (little padding), in an order that depends on the seed
    and the epoch only, so a resumed epoch continues the same order it started."""

    length_grouped = True

    def _get_train_sampler(self, train_dataset=None):
        ds = train_dataset if train_dataset is not None else self.train_dataset
        if not self.length_grouped or ds is None:
            return super()._get_train_sampler(train_dataset)
        return LengthGroupedSampler(ds.lengths, self.args.train_batch_size
                                    * self.args.gradient_accumulation_steps * self.args.world_size, self.args.seed)


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Batches of resumes of similar length, in random order: a seeded shuffle cut into mega-batches
    of 50 batches, each sorted by length and cut into batches, and the batches shuffled (so training
    never runs from long to short resumes as a curriculum). A short last batch stays last, so the
    data loader cuts batches where these were cut."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch, self.seed, self.epoch = lengths, max(1, batch_size), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        mega = 50 * self.batch
        grouped = [j for i in range(0, len(order), mega) for j in sorted(order[i: i + mega], key=lambda j: -self.lengths[j])]
        batches = [grouped[i: i + self.batch] for i in range(0, len(grouped), self.batch)]
        full = [b for b in batches if len(b) == self.batch]
        for k in torch.randperm(len(full), generator=g).tolist():
            yield from full[k]
        yield from (j for b in batches if len(b) < self.batch for j in b)


def _checkpointing(cfg) -> dict:
    """When to evaluate and save. By epochs: validation loss and a checkpoint at each epoch's end (the
    validation curve), the best epoch kept when there are several; without validation (`validate`
    false) a checkpoint only, the last epoch kept. A step budget: no evaluation. Either way
    `_Progress` also saves every `checkpoint_minutes`, so a killed run loses no more."""
    if cfg.max_steps < 0 and not cfg.validate:
        return {"eval_strategy": "no", "save_strategy": "epoch", "load_best_model_at_end": False}
    if cfg.max_steps < 0:
        return {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": cfg.epochs > 1}
    return {"eval_strategy": "no", "save_strategy": "no", "load_best_model_at_end": False}


def best_checkpoint(recorded: str | None, folder: Path) -> str | None:
    """The best epoch's checkpoint a resumed run will load at its end, found in the run's checkpoint
    folder (the recorded path is relative to where the run began). Missing, the Trainer would keep
    the last epoch instead, silently: refused here, before any more training."""
    if not recorded or Path(recorded).is_dir():
        return recorded
    here = folder / Path(recorded).name
    if not here.is_dir():
        from laborllm.errors import UserError

        raise UserError(f"{folder}: the best epoch's checkpoint {Path(recorded).name} is missing, so the run "
                        "could not keep its best epoch; restore it (scripts/milestone.py restore) or start over")
    return str(here)


def training_schedule(lengths: list[int], cfg, world: int = 1) -> dict:
    """Rows per device and step, optimiser steps and warm-up, counted on what the Trainer will see.

    `batch_size` is in resumes. Packed rows of `pack_tokens` hold several resumes, so a step takes
    as many rows as carry about `batch_size` resumes' tokens: the same tokens per step, and the same
    learning rate per token, as the unpacked recipe; steps and warm-up are counted after packing."""
    n_tokens = sum(lengths)
    if cfg.pack_tokens:
        n_items = len(pack([[0] * n for n in lengths], cfg.pack_tokens))
        per_step = max(1, round(cfg.batch_size * n_tokens / max(len(lengths), 1) / cfg.pack_tokens))
    else:
        n_items, per_step = len(lengths), cfg.batch_size
    per_device = max(1, per_step // world)
    steps_per_epoch = -(-n_items // (per_device * world))
    steps = cfg.max_steps if cfg.max_steps > 0 else cfg.epochs * steps_per_epoch
    return {"items": n_items, "per_device": per_device, "steps": steps,
            "warmup_steps": max(1, round(cfg.warmup_ratio * steps)),
            "tokens_per_step": round(n_tokens / max(n_items, 1) * per_device * world)}


class _Resumes(torch.utils.data.Dataset):
    def __init__(self, ids):  # lists of token ids, or a memory-mapped ResumeTokens
        self.ids = ids
        self.lengths = lengths(ids)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i]}


def _collate(batch: list[dict]) -> dict:
    """Right-pad; padded positions are masked out of the loss by position, never by token id, so
    the EOS and line terminators (which may equal the pad id) are trained."""
    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.zeros(len(batch), n, dtype=torch.long)
    att = torch.zeros(len(batch), n, dtype=torch.long)
    for i, b in enumerate(batch):
        x = torch.tensor(b["input_ids"])
        ids[i, : len(x)], att[i, : len(x)] = x, 1
    return {"input_ids": ids, "attention_mask": att, "labels": ids.masked_fill(att == 0, -100)}


def pack(resumes: list[list[int]], max_tokens: int) -> list[list[list[int]]]:
    """Greedy first-fit packing of resumes into rows of at most max_tokens (longest first)."""
    rows: list[list[list[int]]] = []
    room: list[int] = []
    for r in sorted(resumes, key=len, reverse=True):
        r = r[:max_tokens]
        i = next((i for i, free in enumerate(room) if free >= len(r)), None)
        if i is None:
            rows.append([r])
            room.append(max_tokens - len(r))
        else:
            rows[i].append(r)
            room[i] -= len(r)
    return rows


def _collate_packed(batch: list[dict]) -> dict:
    """Rows of several resumes: positions restart at each resume and a block-diagonal causal
    mask keeps resumes from seeing each other, so the loss equals the unpacked one."""
    n = max(sum(len(r) for r in b["input_ids"]) for b in batch)
    ids = torch.zeros(len(batch), n, dtype=torch.long)
    pos = torch.zeros(len(batch), n, dtype=torch.long)
    labels = torch.full((len(batch), n), -100, dtype=torch.long)
    mask = torch.zeros(len(batch), 1, n, n, dtype=torch.bool)
    for i, b in enumerate(batch):
        t = 0
        for r in b["input_ids"]:
            L = len(r)
            ids[i, t: t + L] = torch.tensor(r)
            pos[i, t: t + L] = torch.arange(L)
            labels[i, t + 1: t + L] = ids[i, t + 1: t + L]  # a resume's first token is never a target
            mask[i, 0, t: t + L, t: t + L] = torch.tril(torch.ones(L, L, dtype=torch.bool))
            t += L
        mask[i, 0, t:, t:] |= torch.eye(n - t, dtype=torch.bool)  # padding attends to itself only
    return {"input_ids": ids, "position_ids": pos, "attention_mask": mask, "labels": labels}



FROM_SCRATCH = {"tokens": 0, "seconds": 0.0, "wall": 0.0}  # the figures of the pieces before the first


class _Progress(TrainerCallback):
    """One progress bar for training (rank 0), with the loss and the training tokens/s: real tokens
    only (the schedule's mean real tokens per step, no padding) over the time spent in optimiser
    steps only (no evaluation, no checkpointing). Asks for a checkpoint every `every` seconds and says
    where the run stands and how long it has left; keeps its totals in the trainer state so a resumed
    run reports the whole run's figures."""

    def __init__(self, tokens_per_step: int, name: str, every: float = 600):
        self.per_step, self.name, self.every = tokens_per_step, name, every
        self.steps, self.busy, self.bar, self.saved = 0, 0.0, None, time.time()
        self.before = dict(FROM_SCRATCH)
        self.begun_at: float | None = None
        self.began = False

    @property
    def tokens(self) -> int:
        return self.steps * self.per_step

    @property
    def rate(self) -> float | None:
        return self.tokens / self.busy if self.busy else None

    def on_train_begin(self, args, state, control, **kw):
        self.saved, self.began = time.time(), True  # the checkpoint (if any) was read
        self.begun_at = self.saved
        state.best_model_checkpoint = best_checkpoint(state.best_model_checkpoint, Path(args.output_dir))
        if is_main_process():
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=f"training {self.name}", unit="step")

    def on_step_begin(self, args, state, control, **kw):
        self.t = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.busy += time.perf_counter() - self.t
        self.steps += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(tok_s=f"{self.rate:,.0f}", refresh=False)
        if time.time() - self.saved >= self.every and state.global_step < state.max_steps:
            control.should_save = True

    def resume_totals(self, ckpt: Path | None) -> None:
        """Tokens and busy seconds of the pieces before this one, from the checkpoint resumed (a
        checkpoint killed before its figures were written: its steps' tokens, seconds unknown)."""
        f = ckpt / PROGRESS if ckpt else None
        self.before = dict(FROM_SCRATCH)  # no checkpoint, or one without figures (below)
        if f and f.is_file():
            self.before = json.loads(f.read_text())
        elif ckpt:
            step = json.loads((ckpt / "trainer_state.json").read_text())["global_step"]
            self.before = {"tokens": step * self.per_step, "seconds": None, "wall": None}

    @property
    def earlier_wall(self) -> float | None:
        """Seconds the pieces before this one spent training, evaluation and checkpoints included, up to
        their last checkpoint (checkpoints written before this was kept: their busy seconds)."""
        return self.before.get("wall", self.before["seconds"])

    @property
    def totals(self) -> dict:
        """The whole run's tokens, busy seconds and wall seconds (None when a piece's are unknown)."""
        s, w = self.before["seconds"], self.earlier_wall
        wall = time.time() - self.begun_at if self.begun_at else 0.0
        return {"tokens": self.before["tokens"] + self.tokens, "seconds": None if s is None else s + self.busy,
                "wall": None if w is None else w + wall}

    def on_save(self, args, state, control, **kw):
        self.saved = time.time()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if is_main_process() and folder.is_dir():
            write_json_atomic(folder / PROGRESS, self.totals)
        if is_main_process() and self.steps:
            left = (state.max_steps - state.global_step) * self.busy / self.steps
            progress.info("%s: checkpoint at step %d of %d (epoch %.2f); about %s of training left at %.0f tokens/s",
                        self.name, state.global_step, state.max_steps, state.epoch or 0, _duration(left),
                        self.rate or 0)

    def on_log(self, args, state, control, logs=None, **kw):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", tok_s=f"{self.rate or 0:,.0f}", refresh=False)
        log.info("%s: %s", self.name, logs)  # the raw figures go to the log file, not the console

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    m = int(seconds // 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min"

