"""The one interface every model shares, and saving/loading model folders.

A model is fitted on ``events.train`` (``events.valid`` for tuning and early stopping) and returns,
for any event set of the same panel, an (n_events, n_states) matrix of log-probabilities over the
panel's full state set. A model folder holds ``model.json`` (kind, config, the data it was fitted
on), ``weights.safetensors`` and a ``README.md`` model card; no pickle is ever written or read.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from laborllm.data.events import Events
from laborllm.errors import UserError

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

    def __init__(self, **config):
        self.config = {**self.default_config(), **config}
        self.states: list[str] = []
        self.meta: dict = {}

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

    # -- persistence ---------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def save(self, out: str | Path, data_spec: dict | None = None) -> Path:
        """Write the model folder atomically: a temp folder renamed into place."""
        out = Path(out)
        if out.exists() and not (out / "model.json").exists() and (out.is_file() or any(out.iterdir())):
            raise UserError(f"{out}: exists and is not a laborllm model folder; refusing to overwrite it")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        meta = {"format": FORMAT_VERSION, "kind": self.kind, "name": self.name, "config": self.config,
                "states": self.states, "normalization": self.normalization, "data": data_spec or {},
                "saved": time.strftime("%Y-%m-%dT%H:%M:%S"), **{k: v for k, v in self.meta.items() if k != "data"}}
        self.save_extra(tmp)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.tensors().items()} or {"_": torch.zeros(1)},
                  str(tmp / "weights.safetensors"))
        (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=str))
        (tmp / "README.md").write_text(model_card(meta))
        _replace_dir(tmp, out)
        return out

    def save_extra(self, folder: Path) -> None:
        """Extra files (e.g. a Hugging Face model folder)."""

    @classmethod
    def from_folder(cls, folder: Path, meta: dict) -> "Model":
        m = cls(**meta["config"])
        m.states, m.meta = meta["states"], meta
        m.load_tensors(load_file(str(folder / "weights.safetensors")))
        return m


def _replace_dir(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        import shutil

        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


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
    for k in ("fit_seconds", "valid_perplexity", "train_events"):
        if k in meta:
            lines.append(f"- {k.replace('_', ' ')}: {meta[k]}")
    lines += ["", "Data terms: NLSY microdata are public-use (BLS); check your own panel's licence before sharing."]
    return "\n".join(lines) + "\n"


def load_model(folder: str | Path) -> Model:
    from laborllm.models.registry import MODELS

    folder = Path(folder)
    meta_path = folder / "model.json"
    if not meta_path.exists():
        raise UserError(f"{folder}: not a laborllm model folder (no model.json)")
    try:
        meta = json.loads(meta_path.read_text())
        kind = meta["kind"]
    except (json.JSONDecodeError, KeyError) as e:
        raise UserError(f"{meta_path}: corrupt model description ({e})") from None
    if kind not in MODELS:
        raise UserError(f"{meta_path}: unknown model kind {kind!r}")
    try:
        return MODELS[kind].from_folder(folder, meta)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{folder}: cannot load the model ({type(e).__name__}: {str(e)[:200]})") from None
