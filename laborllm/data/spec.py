"""A data spec: how to rebuild the exact events a model was fitted on (stored in its model folder),
and the events of a spec, cached while its files are unchanged."""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from laborllm.data.events import Events, make_events
from laborllm.data.loaders import load_panel


def data_spec(data="nlsy97", columns=None, scheme=None, unknown="error", seed=0, codebook=None, century=None) -> dict:
    """How to rebuild the exact events a model was fitted on (stored in the model folder)."""
    data = str(data)
    if Path(data).exists():
        data = str(Path(data).resolve())
    spec = {"data": data, "columns": columns, "scheme": scheme, "unknown": unknown, "seed": seed}
    if codebook:
        spec["codebook"] = str(Path(codebook).resolve())
    if century is not None:
        spec["century"] = century
    return spec


@lru_cache(maxsize=4)
def _events_cached(spec_json: str, files: str = "") -> Events:
    s = json.loads(spec_json)
    return make_events(load_panel(s["data"], columns=s["columns"], scheme=s["scheme"], unknown=s["unknown"],
                                  codebook=s.get("codebook"), century=s.get("century")), seed=s["seed"])


def events_for(spec: dict) -> Events:
    """The events of a data spec, cached while its files are unchanged (size and modification time)."""
    stamps = {k: _file_stamp(spec.get(k)) for k in ("data", "codebook") if spec.get(k)}
    return _events_cached(json.dumps(spec, sort_keys=True), json.dumps(stamps))


def _file_stamp(path) -> list | None:
    try:
        st = Path(str(path)).stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]
