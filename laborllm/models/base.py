"""The one interface every model shares, and saving/loading model folders.

A model is fitted on ``events.train`` (``events.valid`` for tuning and early stopping) and returns,
for any event set of the same panel, an (n_events, n_states) matrix of log-probabilities over the
panel's full state set. A model folder holds ``model.json`` (kind, config, the data it was fitted
on), ``weights.safetensors`` and a ``README.md`` model card; no pickle is ever written or read.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from laborllm.data.events import Events
from laborllm.errors import UserError
from laborllm.io import folder_mode
from laborllm.models.settings import check_settings

FORMAT_VERSION = 1


def is_main_process() -> bool:
    """False on the non-zero ranks of a torchrun/accelerate job (only rank 0 writes files)."""
    if torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


class Model(ABC):
    kind: ClassVar[str]
    #: what the log-probabilities mean; every model here is renormalised over the state set
    normalization: str = "exact, over all states"
    #: a causal language model over resume texts (takes a pretrained `base`, has the LLM scoring modes)
    language_model: ClassVar[bool] = False
    #: settings that do not change the fitted model (how it is scored, how often it checkpoints)
    fit_exempt: ClassVar[tuple] = ()
    #: settings that change the scores of a fitted model: with its fingerprint, they key cached scores
    read_settings: ClassVar[tuple] = ()
    #: settings naming other panels the fit reads (pooled, pretrained on): their content is part of the fit
    data_settings: ClassVar[tuple] = ()

    def __init__(self, **config):
        unknown = set(config) - set(self.default_config()) - {"name"}
        if unknown:  # checked here, so every way of building a model refuses a misspelt setting
            raise UserError(f"unknown setting(s) for {self.kind}: {', '.join(sorted(unknown))}; "
                            f"known: {', '.join(sorted(self.default_config()))}")
        self.config = check_settings(self.kind, {**self.default_config(), **config}, self.default_config())
        self.states: list[str] = []
        self.meta: dict = {}  # what fitting measured (timings, steps, validation figures), for the model card
        self.work_dir: Path | None = None  # where training checkpoints go, so a killed fit resumes there

    @classmethod
    def default_config(cls) -> dict:
        return {}

    @property
    def name(self) -> str:
        return self.config.get("name") or self.kind

    def describe(self) -> str:
        """A short label saying what the model is and how it was trained (for tables)."""
        return self.name

    @abstractmethod
    def fit(self, events: Events) -> "Model":
        """Fit on events.train, tuning on events.valid."""

    @abstractmethod
    def log_probs(self, events: Events) -> np.ndarray:
        """(n_events, n_states) log-probabilities, each row summing to one in probability."""

    def log_probs_and_figures(self, events: Events) -> tuple[np.ndarray, dict]:
        """`log_probs` and the figures the scoring measured on the way (an LLM's mass on the states)."""
        return self.log_probs(events), {}

    # -- persistence ---------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def learned(self) -> dict:
        """Learned state that is not a tensor (vocabularies), saved in model.json beside the settings."""
        return {}

    def load_learned(self, learned: dict) -> None:
        pass

    def save(self, out: str | Path, data_spec: dict | None = None) -> Path:
        """Write the model folder atomically: a temp folder swapped into place. Over an existing model
        folder, files that are not ours are kept; any other non-empty folder is refused."""
        out = Path(out)
        check_output_folder(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = folder_mode(Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent)))
        try:
            # this saved artefact's identity: cached scores are keyed by it, so a refit never reads old ones
            self.meta.update(model_id=uuid.uuid4().hex, saved=time.strftime("%Y-%m-%dT%H:%M:%S"))
            meta = {"format": FORMAT_VERSION, "kind": self.kind, "name": self.name, "config": self.config,
                    "states": self.states, "normalization": self.normalization, "data": data_spec or {},
                    "learned": self.learned(), **{k: v for k, v in self.meta.items() if k != "data"}}
            self.save_extra(tmp)
            save_file({k: v.detach().cpu().contiguous() for k, v in self.tensors().items()} or {"_": torch.zeros(1)},
                      str(tmp / "weights.safetensors"))
            (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=str))
            (tmp / "README.md").write_text(model_card(meta))
            _replace_dir(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return out

    def save_extra(self, folder: Path) -> None:
        """Extra files (e.g. a Hugging Face model folder)."""

    def fit_settings(self) -> dict:
        """The settings that define the fit (for reuse checks): all but `fit_exempt` and the name."""
        return {k: v for k, v in self.config.items() if k not in self.fit_exempt and k != "name"}

    def score_key(self) -> str:
        """What cached scores of this model are keyed by: the fitted model and how it is read."""
        read = json.dumps({k: self.config.get(k) for k in self.read_settings}, sort_keys=True, default=str)
        return self.fingerprint() + ("-" + hashlib.sha256(read.encode()).hexdigest()[:8] if self.read_settings else "")

    def fingerprint(self) -> str:
        """This fitted model: the id given when it was saved (a model never saved, or saved before ids
        existed: a hash of its kind, settings, states, events and save time)."""
        if self.meta.get("model_id"):
            return self.meta["model_id"]
        key = {"kind": self.kind, "config": self.meta.get("config", self.config), "states": self.states,
               "events": self.meta.get("events_fingerprint"), "saved": self.meta.get("saved")}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_folder(cls, folder: Path, meta: dict) -> "Model":
        m = cls(**meta["config"])
        m.states, m.meta = meta["states"], meta
        m.load_learned(meta.get("learned") or meta)  # older model folders kept it among the meta
        m.load_tensors(load_file(str(folder / "weights.safetensors")))
        return m


# what a model folder of ours holds (anything else in it is the user's and is kept)
OURS = ("model.json", "weights.safetensors", "README.md", "hf", "adapter", "logprobs-*.parquet", "metrics-*.json")


def is_model_folder(folder: Path) -> bool:
    """A folder counts as ours only when its model.json is one of ours: a JSON object with our
    format, a known kind, and the weights beside it."""
    try:
        meta = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(meta, dict) and meta.get("format") == FORMAT_VERSION and isinstance(meta.get("kind"), str)
            and (folder / "weights.safetensors").is_file())


def check_output_folder(out: Path) -> None:
    """Refuse, before any work, an output path that is a file or a non-empty folder not ours."""
    recover(out)
    if out.is_file():
        raise UserError(f"{out}: is a file; give a folder for the model")
    if out.is_dir() and any(out.iterdir()) and not is_model_folder(out):
        raise UserError(f"{out}: exists and is not a laborllm model folder; refusing to overwrite it")


def _aside(out: Path) -> Path:
    return out.with_name(f".{out.name}.old")


def recover(out: Path) -> None:
    """Put back a model folder left aside by a replacement that was killed between its two renames;
    never while a live process holds the folder's lock (its replacement is under way, not killed)."""
    old = _aside(out)
    if old.is_dir() and not out.exists() and not OutputLock(out).held():
        os.replace(old, out)


def _replace_dir(tmp: Path, out: Path) -> None:
    """Swap `tmp` into `out`. The user's files in an old `out` are hard-linked (copied where links
    are impossible) into `tmp` first; the old folder waits aside until the swap is done, and
    `recover` puts it back if the process dies in between."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for entry in out.iterdir():
        if not any(entry.match(p) for p in OURS) and not (tmp / entry.name).exists():
            if entry.is_dir():
                shutil.copytree(entry, tmp / entry.name, copy_function=_link_or_copy)
            else:
                _link_or_copy(entry, tmp / entry.name)
    old = _aside(out)
    if old.exists():
        shutil.rmtree(old)
    os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class OutputLock:
    """An exclusive lock on an output path (a `.NAME.lock` file beside it holding the owner's pid),
    so two processes never write one folder; a lock whose process is gone is taken over."""

    def __init__(self, out: Path):
        self.path = Path(out).with_name(f".{Path(out).name}.lock")

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the lock appears with its pid already in it (a hard link of a written temp file), so no
        # other process ever sees an empty lock and takes it for a dead one
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            for _ in range(2):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    if self.held():
                        raise UserError(f"{self.path.with_name(self.path.name[1:-5])}: being written by process "
                                        f"{self._owner()} (lock {self.path}); wait for it or stop it") from None
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                return self
        finally:
            os.unlink(tmp)
        raise UserError(f"{self.path}: cannot take the output lock")

    def held(self) -> bool:
        """Whether a live process holds the lock (an unreadable or empty lock younger than a minute,
        written by an older laborllm, counts as held)."""
        if not self.path.exists():
            return False
        pid = self._owner()
        if pid is None:
            try:
                return time.time() - self.path.stat().st_mtime < 60
            except OSError:
                return False
        return pid != os.getpid() and _alive(pid)

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text().strip()) or None
        except (OSError, ValueError):
            return None

    def __exit__(self, *exc) -> None:
        if self._owner() == os.getpid():
            self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def model_card(meta: dict) -> str:
    d = meta.get("data", {})
    lines = [
        "---", "library_name: laborllm", f"model_type: {meta['kind']}", "metrics: [perplexity]", "---", "",
        f"# {meta['name']} ({meta['kind']})", "",
        "Next-state model for career panels, fitted by laborllm.", "",
        f"- data: `{d.get('data', '?')}` (scheme {d.get('scheme') or 'default'}, split seed {d.get('seed', 0)})",
        f"- states: {len(meta['states'])}; probabilities are {meta['normalization']}",
        f"- config: `{json.dumps(meta['config'], default=str)}`",
    ]
    for k in ("fit_seconds", "valid_perplexity", "train_events", "train_persons", "pool_persons", "train_tokens",
              "train_busy_seconds", "tokens_per_second", "train_steps", "epochs_done"):
        if k in meta:
            lines.append(f"- {k.replace('_', ' ')}: {meta[k]}")
    if meta.get("valid_curve"):
        lines.append("- validation loss by epoch: " + ", ".join(f"{c['epoch']:g}: {c['eval_loss']}" for c in meta["valid_curve"]))
    for purpose, why in (meta.get("precision_choice") or {}).items():
        lines.append(f"- precision ({purpose}): {why}")
    pool = meta["config"].get("pool")
    if pool:
        who = (f"a seeded sample of {meta['config']['pool_persons']} people from each of"
               if meta["config"].get("pool_persons") else "every person of")
        lines.append(f"- pooled into training: {who} {', '.join(map(str, pool))} "
                     f"({meta['config'].get('pool_mode')}); only the target's training people joined them. "
                     "The surveys' person ids are not linked, so a person appearing in two panels cannot be "
                     "detected; the embedded panels are distinct samples.")
    lines += ["", "Data terms: NLSY microdata are public-use (BLS); check your own panel's licence before sharing."]
    return "\n".join(lines) + "\n"
