"""Model folders on disk: what a folder of ours holds, reading its model.json, the atomic swap that
replaces one, the lock that keeps two processes out of one, recovery after a kill, and the card.

A model folder holds ``model.json`` (kind, config, the data it was fitted on), ``weights.safetensors``
and a ``README.md`` model card; no pickle is ever written or read.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from laborllm.errors import UserError

FORMAT_VERSION = 1


def read_model_json(folder: Path) -> dict | None:
    """A folder's model.json as a dict, or None when it is missing or not a JSON object."""
    try:
        meta = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


# what a model folder of ours holds (anything else in it is the user's and is kept)
OURS = ("model.json", "weights.safetensors", "README.md", "hf", "adapter", "lm", "logprobs-*.parquet", "metrics-*.json")


def is_model_folder(folder: Path) -> bool:
    """A folder counts as ours only when its model.json is one of ours: a JSON object with our
    format, a known kind, and the weights beside it."""
    meta = read_model_json(folder)
    return (meta is not None and meta.get("format") == FORMAT_VERSION and isinstance(meta.get("kind"), str)
            and (folder / "weights.safetensors").is_file())


def check_output_folder(out: Path) -> None:
    """Refuse, before any work, an output path that is a file or a non-empty folder not ours."""
    if Path(out).name in ("", ".", ".."):  # the model is written beside its folder and swapped in: it needs a name
        raise UserError(f"--out {str(out)!r}: name the model folder to create (e.g. models/markov), not the current "
                        "or parent folder")
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


def replace_dir(tmp: Path, out: Path) -> None:
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
        target = self.path.with_name(self.path.name[1:-5])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # the lock appears with its pid already in it (a hard link of a written temp file), so no
            # other process ever sees an empty lock and takes it for a dead one
            fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", dir=self.path.parent)
        except PermissionError as e:  # named by the folder the user asked for, not by our lock file
            raise UserError(f"{target}: cannot write in {e.filename or self.path.parent} ({e.strerror}); "
                            "choose a folder you can write") from None
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        try:
            for _ in range(2):
                try:
                    os.link(tmp, self.path)
                except FileExistsError:
                    if self.held():
                        raise UserError(f"{target}: being written by process "
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


def model_card(meta: dict, settings: list[str] = ()) -> str:
    """The README.md of a model folder; `settings`: one line per setting (value and what it does)."""
    d = meta.get("data", {})
    lines = [
        "---", "library_name: laborllm", f"model_type: {meta['kind']}", "metrics: [perplexity]", "---", "",
        f"# {meta['name']} ({meta['kind']})", "",
        "Next-state model for career panels, fitted by laborllm.", "",
        f"- data: `{d.get('data', '?')}` (scheme {d.get('scheme') or 'default'}, split seed {d.get('seed', 0)})",
        f"- states: {len(meta['states'])}; probabilities are {meta['normalization']}",
    ]
    lines += ["- settings:", *(f"  - {line}" for line in settings)] if settings else [
        f"- config: `{json.dumps(meta['config'], default=str)}`"]
    for k in ("fit_seconds", "fit_machine", "valid_perplexity", "train_events", "train_persons", "pool_persons", "train_tokens",
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
