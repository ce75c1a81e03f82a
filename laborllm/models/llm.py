"""Fine-tuned LLM (LABOR-LLM) and the in-context baseline, behind the common model interface.

`LLM.fit` fine-tunes a causal LM on the resume texts of the training people with the ordinary
next-token objective (Hugging Face Trainer: full or LoRA, bf16 on GPU, warm-up + cosine, validation
loss each epoch, best checkpoint kept, resumable, DDP under torchrun/accelerate). `log_probs`
scores every valid state after each history exactly (laborllm.scoring) and renormalises over the
state set; the mass that fell outside the set is kept and reported.
`ICL` is the base model without fine-tuning, prompted with a few training histories.
"""
from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from laborllm.data.events import Events, sample_ids
from laborllm.errors import UserError
from laborllm.io import write_json_atomic
from laborllm.models.base import Model, is_main_process
from laborllm.models.lm_loading import load_lm, resolve_base, use_bf16
from laborllm.scoring import MODES, ExactScorer
from laborllm.text import ResumeTemplate, SegmentEncoder

log = logging.getLogger(__name__)
POOL_MODES = ("joint", "sequential")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class LLM(Model):
    kind = "llm"
    language_model = True
    profiles = {
        # CPU-sized (the men panel's 382 training people in about 5 minutes on 2 cores, bf16 where native):
        # LoRA, one epoch, every training person; scored in the constrained normalisation, which agrees
        # with the renormalised one to 0.01% for a fine-tuned model (docs/benchmarks.md) at a third of the cost
        "quick": {"lora": True, "epochs": 1, "batch_size": 8, "lr": 1e-3, "scoring": "constrained"},
        "full": {"lora": False, "epochs": 3, "batch_size": 32, "lr": 2e-4, "pack_tokens": 2048},
    }

    @classmethod
    def default_config(cls) -> dict:
        return {"base": "smollm2", "variant": "titles", "birth_year": True, "lora": False, "lora_r": 16, "lora_layers": None,
                "lora_alpha": 32, "epochs": 3, "batch_size": 32, "lr": 2e-4, "warmup_ratio": 0.05,
                "weight_decay": 0.0, "max_steps": -1, "max_train_persons": None, "max_valid_persons": None,
                "score_max_tokens": None, "seed": 0, "gradient_checkpointing": False,
                "pack_tokens": 0,  # > 0: pack resumes into rows of this many tokens (no padding)
                "precision": "auto",  # auto: bf16 on GPUs and on CPUs with native bf16, else fp32
                "scoring": "renormalised",  # or "constrained" (see laborllm.scoring.exact)
                # other panels whose people join the training, each career in its own panel's words;
                # joint: one training; sequential: the pool, then the target
                "pool": None, "pool_mode": "joint",
                "pool_persons": None}  # at most this many people of each pooled panel, a seeded sample (None: all)

    def __init__(self, **config):
        super().__init__(**config)
        if self.config["scoring"] not in MODES:
            raise UserError(f"unknown scoring mode {self.config['scoring']!r}; choose {' or '.join(MODES)}")
        use_bf16(self.config["precision"])  # refuses an unknown precision now, not after training
        if isinstance(self.config["pool"], str):  # --set pool=a,b
            self.config["pool"] = [p.strip() for p in self.config["pool"].split(",") if p.strip()]
        if self.config["pool_mode"] not in POOL_MODES:
            raise UserError(f"unknown pool_mode {self.config['pool_mode']!r}; choose {' or '.join(POOL_MODES)}")

    @property
    def normalization(self) -> str:
        if self.config["scoring"] == "constrained":
            return "exact, constrained: next-token probabilities renormalised among the state texts' branches"
        return "exact, renormalised over all states (mass outside the state set reported)"

    @property
    def name(self) -> str:
        return self.config.get("name") or (f"{self.kind}-{self.config['variant']}")

    def base_label(self) -> str:
        b = self.config["base"]
        return "SmolLM2-135M" if b in (None, "", "smollm2") else Path(str(b)).name

    def describe(self) -> str:
        c, m = self.config, self.meta
        how = (f"LoRA r{c['lora_r']}" + (f" on the top {c['lora_layers']} layers" if c["lora_layers"] else "")
               if c["lora"] else "full fine-tune")
        pool = (f" + {m.get('pool_persons', '?')} pooled from {', '.join(map(str, c['pool']))} ({c['pool_mode']})"
                if c["pool"] else "")
        return (f"{self.name} ({self.base_label()}, {how}, {c['variant']}, {m.get('train_persons', '?')} training people"
                f"{pool}, {m.get('train_steps', '?')} steps, {m.get('precision', '?')}, {c['scoring']})")

    # -- text -------------------------------------------------------------------------------
    def _encoder(self, panel) -> SegmentEncoder:
        tpl = ResumeTemplate(self.config["variant"], self.config["birth_year"])
        return SegmentEncoder(self.tok, tpl, self.states, panel.scheme)

    def _resume_ids(self, events: Events, split: str, limit: int | None) -> list[list[int]]:
        f = events.panel.frame
        ids = events.subset(split).sample_persons(limit, self.config["seed"]).frame.person_id.unique()
        enc = self._encoder(events.panel)
        rows = f[f.person_id.isin(set(ids))]
        return [enc.person(g)[0] for _, g in rows.groupby("person_id")]

    # -- fitting ----------------------------------------------------------------------------
    def _load_base(self):
        self.base_dir = resolve_base(self.config["base"])
        self.lm, self.tok = load_lm(self.base_dir)
        self._score_lm = None

    def fit(self, events: Events) -> "LLM":
        self.states = list(events.states)
        pools = self._pool_panels(events)  # a bad pooled panel is refused before any model is loaded
        self._load_base()
        self._prepare_prompt(events)
        if self.config["epochs"] > 0:
            self._train(events, pools)
        self.meta["base_dir"] = str(self.base_dir)
        return self

    def _pool_panels(self, events: Events) -> list:
        from laborllm.data.loaders import load_panel

        panels = []
        for name in self.config["pool"] or []:
            try:
                p = load_panel(name)
            except UserError as e:
                raise UserError(f"pool {name!r}: {e}") from None
            if p.source == events.panel.source:
                raise UserError(f"pool {name!r} is the target panel itself: its validation and test people "
                                "would enter training")
            panels.append(p)
        return panels

    def _pooled_resumes(self, panels: list) -> list[list[int]]:
        """Every person of each pooled panel (or `pool_persons` of them), in that panel's own states
        and words."""
        tpl = ResumeTemplate(self.config["variant"], self.config["birth_year"])
        out = []
        for p in panels:
            enc = SegmentEncoder(self.tok, tpl, p.states, p.scheme)
            keep = sample_ids(p.frame.person_id, self.config["pool_persons"], self.config["seed"])
            frame = p.frame if keep is None else p.frame[p.frame.person_id.isin(keep)]
            out += [enc.person(g)[0] for _, g in frame.groupby("person_id")]
        return out

    def _prepare_prompt(self, events: Events) -> None:
        """Tokens put before every resume: none for a fine-tuned model (ICL adds examples)."""
        self.prompt_ids: list[int] = []

    def _train(self, events: Events, pools: list) -> None:
        cfg = self.config
        train = self._resume_ids(events, "train", cfg["max_train_persons"])
        valid = self._resume_ids(events, "valid", cfg["max_valid_persons"])
        pooled = self._pooled_resumes(pools)
        if cfg["lora"]:
            from peft import LoraConfig, get_peft_model

            # lora_layers=N adapts only the top N layers: the backward pass then stops there (faster on a CPU)
            n = self.lm.config.num_hidden_layers
            top = {"layers_to_transform": list(range(n - cfg["lora_layers"], n))} if cfg["lora_layers"] else {}
            self.lm = get_peft_model(self.lm, LoraConfig(r=cfg["lora_r"], lora_alpha=cfg["lora_alpha"],
                                                         target_modules=LORA_TARGETS, task_type="CAUSAL_LM", **top))
        out = Path(self.work_dir or Path.cwd() / "laborllm-llm")
        ckpt = out.parent / f".{out.name}.checkpoints"  # beside the model folder, removed once saved
        self._ckpts = [ckpt]
        run = {"config": cfg, "data": events.fingerprint()}
        if pooled and cfg["pool_mode"] == "sequential":  # first the pooled careers, then the target's
            self._ckpts.append(ckpt.with_name(ckpt.name + "-pool"))
            self.meta["pool_stage"] = self._run_trainer(pooled, valid, self._ckpts[-1], run | {"stage": "pool"})
            stage = train
        else:
            stage = train + pooled
        self.meta.update(self._run_trainer(stage, valid, ckpt, run), train_persons=len(train), valid_persons=len(valid),
                         pool_persons=len(pooled), subset="yes" if cfg["max_train_persons"] else "no")
        self.lm.eval()

    def _run_trainer(self, train: list[list[int]], valid: list[list[int]], ckpt: Path, run: dict) -> dict:
        """One Hugging Face Trainer run over these resumes; its figures for the model card."""
        from transformers import Trainer, TrainingArguments

        cfg = self.config
        cuda = torch.cuda.is_available()
        bf16 = use_bf16(cfg["precision"])
        world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun / accelerate launch
        plan = training_schedule([len(r) for r in train], cfg, world)
        if cfg["pack_tokens"]:
            train, valid = pack(train, cfg["pack_tokens"]), pack(valid, cfg["pack_tokens"])
        args = _training_args(
            TrainingArguments, warmup_steps=plan["warmup_steps"],
            output_dir=str(ckpt), num_train_epochs=cfg["epochs"], max_steps=cfg["max_steps"],
            per_device_train_batch_size=plan["per_device"], per_device_eval_batch_size=plan["per_device"],
            learning_rate=cfg["lr"], weight_decay=cfg["weight_decay"],
            lr_scheduler_type="cosine", **_checkpointing(cfg, plan["steps"]),
            metric_for_best_model="eval_loss", greater_is_better=False,
            save_total_limit=2, bf16=bf16, logging_steps=5, report_to="none", seed=cfg["seed"],
            group_by_length=not cfg["pack_tokens"], dataloader_num_workers=0, remove_unused_columns=False,
            use_cpu=not cuda, ddp_find_unused_parameters=False, disable_tqdm=True,
        )
        if cfg["gradient_checkpointing"]:
            self.lm.gradient_checkpointing_enable()
        trainer = Trainer(model=self.lm, args=args, train_dataset=_Resumes(train), eval_dataset=_Resumes(valid),
                          data_collator=_collate_packed if cfg["pack_tokens"] else _collate,
                          callbacks=[speed := _Progress(plan["tokens_per_step"], self.name)])
        # our one progress bar (loss, tokens/s) replaces the Trainer's, which prints raw log dicts
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        resume = _resumable(ckpt, run | {"world": world})
        if resume:
            log.warning("resuming training from %s", ckpt)
        t0 = time.time()
        result = trainer.train(resume_from_checkpoint=resume or None)
        return dict(
            train_seconds=round(time.time() - t0, 1), train_loss=round(float(result.training_loss), 4),
            world_size=world, train_tokens=speed.tokens, tokens_per_second=round(speed.rate, 1) if speed.rate else None,
            best_eval_loss=trainer.state.best_metric, train_steps=trainer.state.global_step,
            steps_this_run=speed.steps, planned_steps=plan["steps"], warmup_steps=plan["warmup_steps"],
            tokens_per_step=plan["tokens_per_step"], precision="bf16" if bf16 else "fp32",
        )

    # -- persistence ------------------------------------------------------------------------
    def save_extra(self, folder: Path) -> None:
        if not is_main_process():
            return
        lm = self.lm
        if hasattr(lm, "merge_and_unload") and self.config["epochs"] > 0:
            lm.save_pretrained(folder / "adapter")  # the adapter is the artefact of record
        elif self.config["epochs"] > 0:
            lm.save_pretrained(folder / "hf")
            self.tok.save_pretrained(folder / "hf")
        for ckpt in getattr(self, "_ckpts", []):
            shutil.rmtree(ckpt, ignore_errors=True)

    def tensors(self):
        return {"prompt_ids": torch.tensor(self.prompt_ids or [-1])}

    @classmethod
    def from_folder(cls, folder: Path, meta: dict) -> "LLM":
        m = super().from_folder(folder, meta)
        if (folder / "hf").exists():
            m.lm, m.tok = load_lm(folder / "hf")
        else:
            m.base_dir = resolve_base(m.config["base"])
            m.lm, m.tok = load_lm(m.base_dir)
            if (folder / "adapter").exists():
                from peft import PeftModel

                cls._check_adapter(folder / "adapter")
                m.lm = PeftModel.from_pretrained(m.lm, folder / "adapter").merge_and_unload()
        m.lm.eval()
        return m

    @staticmethod
    def _check_adapter(folder: Path) -> None:
        """Adapters load from safetensors only: a pickled adapter_model.bin is refused, never read."""
        if not (folder / "adapter_model.safetensors").is_file():
            raise UserError(f"{folder}: no adapter_model.safetensors (pickled .bin adapters are never loaded)")

    def load_tensors(self, t):
        ids = t["prompt_ids"].tolist()
        self.prompt_ids = [] if ids == [-1] else ids

    # -- scoring ----------------------------------------------------------------------------
    def _scoring_lm(self):
        """The LM the scorer reads: LoRA merged (faster) and cast to bf16 where it serves, on a copy,
        so the fitted LM, which `save` writes, stays as trained."""
        if getattr(self, "_score_lm", None) is None:
            lm, bf16 = self.lm, use_bf16(self.config["precision"])
            if hasattr(lm, "merge_and_unload") or bf16:
                lm = copy.deepcopy(lm)
                lm = lm.merge_and_unload() if hasattr(lm, "merge_and_unload") else lm
                lm = lm.to(torch.bfloat16) if bf16 else lm
            self._score_lm = lm.eval()
        return self._score_lm

    def _scoring(self, events: Events, desc: str):
        """The encoder, an exact scorer over the state texts, and per person of `events`: the event
        rows, the token ids (prompt + resume) and the start of each year's state text."""
        enc = self._encoder(events.panel)
        scorer = ExactScorer(self._scoring_lm(), enc.candidates, max_tokens=self.config["score_max_tokens"],
                             mode=self.config["scoring"])
        f, ev = events.panel.frame, events.frame
        groups = ev.groupby("person_id").indices
        pos = ev.pos.to_numpy()

        def people():
            with tqdm(total=len(ev), desc=desc, unit="event", disable=not is_main_process()) as bar:
                for pid, rows in f[f.person_id.isin(groups.keys())].groupby("person_id"):
                    idx = groups[pid]
                    ids, starts = enc.person(rows)
                    yield idx, self.prompt_ids + ids, [len(self.prompt_ids) + int(starts[p]) for p in pos[idx]]
                    bar.update(len(idx))

        return enc, scorer, people()

    def raw_log_probs(self, events: Events) -> np.ndarray:
        """The scorer's log-probabilities for every event and state: unrenormalised log P(state text |
        history) in the renormalised mode, already normalised in the constrained mode."""
        _, scorer, people = self._scoring(events, f"scoring {self.name}")
        out = np.zeros((len(events), len(self.states)))
        for idx, ids, ends in people:
            out[idx] = scorer.score(ids, ends)
        return out

    def true_log_probs(self, events: Events) -> np.ndarray:
        """The cheap unnormalised mode: log P(observed state text | history) only, every event of a
        person from one forward pass; mass on invalid text is not renormalised away."""
        enc, scorer, people = self._scoring(events, f"scoring {self.name} (observed state only)")
        y = events.frame.target.to_numpy()
        out = np.zeros(len(events))
        for idx, ids, ends in people:
            out[idx] = scorer.true_only(ids, [(a, a + len(enc.candidates[k])) for a, k in zip(ends, y[idx])])
        return out

    def log_probs(self, events: Events) -> np.ndarray:
        return self.log_probs_and_figures(events)[0]

    def log_probs_and_figures(self, events: Events) -> tuple[np.ndarray, dict]:
        """Renormalised: the figures say how much mass the LM put on the states' texts."""
        raw = self.raw_log_probs(events)
        if self.config["scoring"] == "constrained":
            return raw, {}
        mass = np.logaddexp.reduce(raw, axis=1)
        y = events.frame.target.to_numpy()
        return raw - mass[:, None], {
            "unnormalised_perplexity": float(np.exp(-raw[np.arange(len(y)), y].mean())),
            "valid_mass_mean": float(np.exp(mass).mean()),
            "valid_mass_min": float(np.exp(mass).min()),
        }


class ICL(LLM):
    """The base model without fine-tuning, prompted with example histories from the training split."""

    kind = "icl"
    profiles = {"quick": {"shots": 2}, "full": {"shots": 5}}

    @classmethod
    def default_config(cls) -> dict:
        return {**super().default_config(), "epochs": 0, "shots": 3, "max_shot_years": 8}

    def describe(self) -> str:
        return (f"{self.name} ({self.base_label()} not fine-tuned, {self.config['shots']} example histories "
                f"in the prompt, {self.config['scoring']})")

    def _prepare_prompt(self, events: Events) -> None:
        f = events.panel.frame
        shots = events.train.person_sample(self.config["shots"], self.config["seed"]) or []
        enc = self._encoder(events.panel)
        intro = enc.encode("Below are work histories of survey respondents, one year per line.\n\n")
        ids = list(intro)
        for pid in shots:
            rows = f[f.person_id == pid].head(self.config["max_shot_years"])
            ids += enc.person(rows)[0][:-1] + enc.encode("\n\n")
        self.prompt_ids = ids


def _training_args(cls, **kw):
    """TrainingArguments; only options named in OPTIONAL_ARGS may be missing from this transformers
    release (any other unknown option is a real error and raises)."""
    import inspect

    known = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in kw.items() if k in known or k not in OPTIONAL_ARGS})


# options that some transformers releases lack and that only affect speed (5.x dropped group_by_length)
OPTIONAL_ARGS = ("group_by_length",)


def _checkpointing(cfg: dict, steps: int) -> dict:
    """When to evaluate and save. Several epochs: each epoch, keeping the best. One epoch (or a step
    budget): a checkpoint halfway, so a killed run resumes, and no evaluation (nothing to choose)."""
    if cfg["max_steps"] < 0 and cfg["epochs"] > 1:
        return {"eval_strategy": "epoch", "save_strategy": "epoch", "load_best_model_at_end": True}
    return {"eval_strategy": "no", "save_strategy": "steps", "save_steps": max(1, steps // 2),
            "load_best_model_at_end": False}


def _resumable(ckpt: Path, run: dict) -> bool:
    """Whether `ckpt` holds checkpoints of this very run (same settings, events and processes);
    checkpoints of another run are removed (they are ours, never the user's) so training starts over."""
    stamp = ckpt / "laborllm-run.json"
    same = stamp.exists() and json.loads(stamp.read_text()) == json.loads(json.dumps(run, default=str))
    if same and any(ckpt.glob("checkpoint-*")):
        return True
    if ckpt.exists() and is_main_process():
        if any(ckpt.glob("checkpoint-*")):
            log.warning("%s: checkpoints of another run (other settings or data); starting over", ckpt)
        shutil.rmtree(ckpt, ignore_errors=True)
    if is_main_process():
        ckpt.mkdir(parents=True, exist_ok=True)
        write_json_atomic(stamp, run)
    return False


def training_schedule(lengths: list[int], cfg: dict, world: int = 1) -> dict:
    """Rows per device and step, optimiser steps and warm-up, counted on what the Trainer will see.

    `batch_size` is in resumes. Packed rows of `pack_tokens` hold several resumes, so a step takes
    as many rows as carry about `batch_size` resumes' tokens: the same tokens per step, and the same
    learning rate per token, as the unpacked recipe; steps and warm-up are counted after packing."""
    n_tokens = sum(lengths)
    if cfg["pack_tokens"]:
        n_items = len(pack([[0] * n for n in lengths], cfg["pack_tokens"]))
        per_step = max(1, round(cfg["batch_size"] * n_tokens / max(len(lengths), 1) / cfg["pack_tokens"]))
    else:
        n_items, per_step = len(lengths), cfg["batch_size"]
    per_device = max(1, per_step // world)
    steps_per_epoch = -(-n_items // (per_device * world))
    steps = cfg["max_steps"] if cfg["max_steps"] > 0 else cfg["epochs"] * steps_per_epoch
    return {"items": n_items, "per_device": per_device, "steps": steps,
            "warmup_steps": max(1, round(cfg["warmup_ratio"] * steps)),
            "tokens_per_step": round(n_tokens / max(n_items, 1) * per_device * world)}


class _Resumes(torch.utils.data.Dataset):
    def __init__(self, ids: list[list[int]]):
        self.ids = ids

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



class _Progress(TrainerCallback):
    """One progress bar for training (rank 0), with the loss and the training tokens/s: real tokens
    only (the schedule's mean real tokens per step, no padding) over the time spent in optimiser
    steps only (no evaluation, no checkpointing)."""

    def __init__(self, tokens_per_step: int, name: str):
        self.per_step, self.name, self.steps, self.busy, self.bar = tokens_per_step, name, 0, 0.0, None

    @property
    def tokens(self) -> int:
        return self.steps * self.per_step

    @property
    def rate(self) -> float | None:
        return self.tokens / self.busy if self.busy else None

    def on_train_begin(self, args, state, control, **kw):
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

    def on_log(self, args, state, control, logs=None, **kw):
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}", tok_s=f"{self.rate or 0:,.0f}", refresh=False)
        log.info("%s: %s", self.name, logs)  # the raw figures go to the log file, not the console

    def on_train_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.close()
