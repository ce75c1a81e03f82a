"""The one interface every model shares: fit, log-probabilities, settings apart from learned state,
and saving to / loading from a model folder (whose transactions live in laborllm.models.folder).

A model is fitted on ``events.train`` (``events.valid`` for tuning and early stopping) and returns,
for any event set of the same panel, an (n_events, n_states) matrix of log-probabilities over the
panel's full state set. A model folder holds ``model.json`` (kind, config, the data it was fitted
on), ``weights.safetensors`` and a ``README.md`` model card; no pickle is ever written or read.
"""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from laborllm.data.events import Events
from laborllm.errors import UserError
from laborllm.files import folder_mode
from laborllm.models.folder import FORMAT_VERSION, replace_dir, check_output_folder, model_card
from laborllm.settings import check_settings, defaults, fit_settings, settings_card, with_role


def states_key(states: list[str]) -> str:
    """The state list, in order, as the weights' row and column order: kept in the weights' file."""
    return hashlib.sha256(json.dumps(list(states)).encode()).hexdigest()[:16]


class Model(ABC):
    kind: ClassVar[str]
    #: what the log-probabilities mean; every model here is renormalised over the state set
    normalization: str = "exact, over all states"
    #: a causal language model over resume texts (takes a pretrained `base`, has the LLM scoring modes)
    language_model: ClassVar[bool] = False
    #: reading it runs a language model: scored in resumable pieces, simulated only where the profile asks
    runs_lm: ClassVar[bool] = False
    #: settings naming other panels the fit reads (pooled, pretrained on): their content is part of the fit
    data_settings: ClassVar[tuple] = ()

    #: the model's typed settings (laborllm.settings): type, default, help and range per field
    Settings: ClassVar[type]
    #: settings over the defaults for each preset (quick: a 2-core CPU, full: one GPU)
    presets: ClassVar[dict] = {}

    def __init__(self, **config):
        checked = check_settings(self.kind, self.Settings, config)
        self.label: str | None = checked.pop("name", None)  # the name given (a run's model name), if any
        self.settings = self.Settings(**checked)  # typed, checked; read as model.settings.lr
        self.states: list[str] = []
        self.meta: dict = {}  # what fitting measured (timings, steps, validation figures), for the model card
        self.work_dir: Path | None = None  # where training checkpoints go, so a killed fit resumes there

    @classmethod
    def default_config(cls) -> dict:
        return defaults(cls.Settings)

    @property
    def config(self) -> dict:
        """The settings as a plain dict, with the name given: what model.json and the card hold."""
        return asdict(self.settings) | ({"name": self.label} if self.label else {})

    @property
    def name(self) -> str:
        return self.label or self.kind

    def describe(self) -> str:
        """A short label saying what the model is and how it was trained (for tables)."""
        return self.name

    @abstractmethod
    def fit(self, events: Events) -> "Model":
        """Fit on events.train, tuning on events.valid."""

    @abstractmethod
    def log_probs(self, events: Events) -> np.ndarray:
        """(n_events, n_states) log-probabilities, each row summing to one in probability."""

    @classmethod
    def read_keys(cls) -> tuple[str, ...]:
        """The settings that change how a fitted model is read: with its fingerprint, they key cached scores."""
        return with_role(cls.Settings, "read")

    def read_as(self, **read) -> "Model":
        """This fitted model read another way (an LLM's scoring mode, precision, tokens per pass): a
        copy sharing the learned state, so the fitted model and its settings stay as fitted."""
        allowed = set(with_role(self.Settings, "read", "run"))
        if set(read) - allowed:
            raise UserError(f"{self.kind}: {', '.join(sorted(set(read) - allowed))} cannot change after fitting; "
                            f"a fitted {self.kind} can be read with other {', '.join(sorted(allowed)) or 'nothing'}")
        other = copy.copy(self)
        other.settings = self.Settings(**check_settings(self.kind, self.Settings, {**asdict(self.settings), **read}))
        other.forget_reading()
        return other

    def forget_reading(self) -> None:
        """Drop what was prepared for reading under the old settings (an LLM's scoring copy)."""

    def identity_inputs(self) -> dict:
        """Other artefacts the fit reads, by content (a frozen LLM's saved id), for `api.fit_identity`."""
        return {}

    def resumed_seconds(self) -> float:
        """Seconds that earlier, interrupted invocations spent on this fit before it resumed: the fit
        time reported is the whole fit's, not only the last piece's."""
        return 0.0

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
                      str(tmp / "weights.safetensors"), metadata={"format": "pt", "states": states_key(self.states)})
            (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=str))
            (tmp / "README.md").write_text(model_card(meta, settings_card(self.Settings, self.config)))
            folder_mode(tmp)  # every file as the umask asks (safetensors writes 0600)
            replace_dir(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return out

    def save_extra(self, folder: Path) -> None:
        """Extra files (e.g. a Hugging Face model folder)."""

    def fit_settings(self) -> dict:
        """The settings that define the fit (their role is "fit"), as saved and compared."""
        return fit_settings(self.Settings, self.config)

    def score_key(self) -> str:
        """What cached scores of this model are keyed by: the fitted model and how it is read."""
        keys = self.read_keys()
        read = json.dumps({k: getattr(self.settings, k) for k in keys}, sort_keys=True, default=str)
        return self.fingerprint() + ("-" + hashlib.sha256(read.encode()).hexdigest()[:8] if keys else "")

    def fingerprint(self) -> str:
        """This fitted model: the id given when it was saved (a model never saved: a hash of its kind,
        settings, states and events)."""
        if self.meta.get("model_id"):
            return self.meta["model_id"]
        key = {"kind": self.kind, "config": self.meta.get("config", self.config), "states": self.states,
               "events": self.meta.get("events_fingerprint"), "saved": self.meta.get("saved")}
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_folder(cls, folder: Path, meta: dict) -> "Model":
        m = cls(**meta["config"])
        m.states, m.meta = meta["states"], meta
        m.load_learned(meta.get("learned") or {})
        weights = folder / "weights.safetensors"
        with safe_open(str(weights), "pt") as f:
            saved = (f.metadata() or {}).get("states")
        if saved is not None and saved != states_key(m.states):  # edited or reordered: labels would be permuted
            raise UserError(f"{folder / 'model.json'}: its states are not those the weights were saved with "
                            "(reordered or edited?); restore the model.json written with the weights")
        m.load_tensors(load_file(str(weights)))
        return m
