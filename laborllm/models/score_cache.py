"""A model's log-probabilities on an event set, cached as Parquet and reused while the model and
the events are the same, and where those caches are kept: `evaluate` writes FOLDER/logprobs-SPLIT.parquet
beside a model folder, `laborllm run` RUN/PANEL/logprobs/NAME-SPLIT.parquet beside RUN/PANEL/models/NAME."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from laborllm.data import Events
from laborllm.errors import UserError
from laborllm.files import log_probs_meta, read_log_probs, write_log_probs
from laborllm.distributed import is_main_process
from laborllm.models.base import Model

log = logging.getLogger(__name__)


def kept_scores(folder: Path, split: str) -> list[Path]:
    """Where scores of the model in `folder` on `split` may already be kept (checked before use)."""
    folder = Path(folder)
    return [folder / f"logprobs-{split}.parquet", folder.parent.parent / "logprobs" / f"{folder.name}-{split}.parquet"]


def cached_log_probs(model: Model, cache: Path | None, events: Events) -> tuple[np.ndarray, dict] | None:
    """What `model_log_probs` kept at `cache`, if it is of this very model (as read) and these events."""
    if cache and cache.exists():
        try:  # the stamp first: another model's or events' matrix is never read
            meta = log_probs_meta(cache)
            if meta.get("events_fingerprint") == events.fingerprint() and meta.get("model_fingerprint") == model.score_key():
                lp, meta = read_log_probs(cache)
                if lp.shape == (len(events), len(events.states)) and np.isfinite(lp).all():
                    return lp, json.loads(meta.get("extra", "{}"))
        except Exception as e:  # a damaged cache is recomputed, never fatal
            log.warning("%s: unreadable log-probability cache, recomputing (%s)", cache, type(e).__name__)
    return None


def kept_log_probs(model: Model, folder: Path, events: Events) -> tuple[np.ndarray, dict] | None:
    """The scores of the model in `folder` on these very events, where they are already kept (beside
    the folder by `evaluate`, in its run's logprobs/ by `laborllm run`); None where they are not."""
    split = str(events.frame.split.iloc[0]) if len(events) else "none"
    return next(filter(None, (cached_log_probs(model, c, events) for c in kept_scores(folder, split))), None)


def model_log_probs(model: Model, cache: Path | None, events: Events) -> tuple[np.ndarray, dict]:
    """Log-probabilities on an event set and the model's extra figures (LLMs: unnormalised
    perplexity, mass on the state set), cached as Parquet at `cache` and reused while the event
    set is unchanged."""
    kept = cached_log_probs(model, cache, events)
    if kept is not None:
        return kept
    t0 = time.time()
    # an LLM keeps finished people beside the cache while scoring, so a killed run continues there
    partial = cache.with_name(cache.stem + ".partial") if cache and model.runs_lm else None
    lp, figures = model.log_probs_and_figures(events, partial) if partial else model.log_probs_and_figures(events)
    if not np.isfinite(lp).all():
        raise UserError(f"{model.name}: the model gives non-finite log-probabilities (corrupt weights?)")
    # the scoring time travels with the cache, so a resumed run still reports it (the whole scoring's:
    # one resumed from finished people adds its earlier pieces' time)
    extra = figures | {"score_seconds": round(time.time() - t0 + (figures.get("score_seconds_earlier") or 0), 1)}
    if cache and is_main_process():  # under torchrun every process holds the whole matrix; one writes it
        try:
            write_log_probs(cache, events, lp, model.name, model.normalization, extra, model.score_key())
            for done in cache.parent.glob(f"{partial.name}*") if partial else ():  # and each process's parts
                shutil.rmtree(done, ignore_errors=True)
        except OSError as e:  # a read-only model folder: evaluate anyway, without the cache
            log.warning("%s: cannot write the log-probability cache (%s)", cache, e.strerror or e)
    return lp, extra
