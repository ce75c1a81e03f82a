"""What `laborllm serve` offers: the models and runs named on its command line, each under a short
key. Requests name models and runs by these keys only, so no request can reach another file.

A run folder brings every model folder it holds (`PANEL/models/NAME`, keyed `PANEL/NAME`) and its
comparison (metrics.json); a model folder or a packaged model name brings that model. Models load
on first use and stay loaded; one lock per model, since a model scores one request at a time.
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from laborllm.errors import UserError
from laborllm.models.folder import is_model_folder, read_model_json
from laborllm.models.registry import KINDS, load_model, packaged_folder

# one model loads at a time, whichever asks: transformers' lazy imports are not thread-safe (two LLMs
# loading at once on a fresh server failed with "cannot import name 'AutoModelForCausalLM'")
LOADING = threading.Lock()


@dataclass
class Entry:
    key: str
    folder: Path
    meta: dict
    lock: threading.Lock = field(default_factory=threading.Lock)
    _model: object = None

    def model(self):
        """The fitted model, loaded once; LLMs read as `predict` reads them (for_forecast)."""
        with self.lock:
            if self._model is None:
                from laborllm.forecast import for_forecast

                with LOADING:
                    self._model = for_forecast(load_model(self.folder))
            return self._model

    def summary(self) -> dict:
        m = self.meta
        return {"key": self.key, "kind": m.get("kind"), "name": m.get("name"), "states": m.get("states", []),
                "data": (m.get("data") or {}).get("data"), "language_model": m.get("kind") in KINDS and KINDS[m["kind"]].runs_lm}


@dataclass
class Catalog:
    models: dict[str, Entry] = field(default_factory=dict)
    runs: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def from_sources(cls, sources: list[str]) -> "Catalog":
        """Run folders, model folders and packaged model names; a UserError names a source that is
        none of these."""
        cat = cls()
        for src in sources:
            packaged = packaged_folder(src)
            path = packaged or Path(src)
            if is_model_folder(path):
                cat._add(str(src) if packaged else path.name, path)
            elif path.is_dir() and (path / "metrics.json").is_file():
                run = path.name or str(path)
                cat.runs[run] = path
                for folder in sorted(path.glob("*/models/*")):
                    if is_model_folder(folder):
                        cat._add(f"{folder.parent.parent.name}/{folder.name}", folder)
            else:
                raise UserError(f"{src}: not a run folder (no metrics.json), a model folder (no model.json) "
                                "or a packaged model name")
        if not cat.models and not cat.runs:
            raise UserError("nothing to serve: the sources hold no fitted model and no run")
        return cat

    def _add(self, key: str, folder: Path) -> None:
        while key in self.models:  # two sources with the same name
            key += "'"
        self.models[key] = Entry(key, folder, read_model_json(folder))

    def entry(self, key: str) -> Entry:
        if key not in self.models:
            raise KeyError(f"unknown model {key!r}; served: {', '.join(self.models)}")
        return self.models[key]

    def run(self, key: str) -> Path:
        if key not in self.runs:
            raise KeyError(f"unknown run {key!r}; served: {', '.join(self.runs) or 'none'}")
        return self.runs[key]

    def metrics(self, key: str) -> list[dict]:
        return json.loads((self.run(key) / "metrics.json").read_text())
