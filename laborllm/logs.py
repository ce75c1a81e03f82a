"""Where a run's messages go: laborllm's own lines and one progress bar per stage on the console,
library warnings and the trainer's raw figures in the run folder's log file."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

TRAINER_LOG = "laborllm.training"  # the trainer's per-step figures: the run log file, not the console


class ConsoleFormat(logging.Formatter):
    """Progress and results as plain lines; a warning or an error says so."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname}: {text}"


def ours(record: logging.LogRecord) -> bool:
    """What the console shows: laborllm's own lines (not the trainer's raw figures), and any warning."""
    return record.levelno >= logging.WARNING or (record.name.startswith("laborllm")
                                                 and not record.name.startswith(TRAINER_LOG))


def console_logging() -> None:
    """The command line's console: laborllm's lines plain, warnings and errors marked."""
    handler = logging.StreamHandler()
    handler.setFormatter(ConsoleFormat())
    handler.addFilter(ours)
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


@contextmanager
def run_log(path: Path):
    """Library warnings and the trainer's raw figures go to the run folder's log file; the console
    keeps laborllm's own messages and one progress bar per stage."""
    import warnings

    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root, pywarn = logging.getLogger(), logging.getLogger("py.warnings")
    libs = [logging.getLogger(n) for n in ("transformers", "peft", "accelerate", "torch")]
    llm_log = logging.getLogger(TRAINER_LOG)
    saved = (root.level, pywarn.propagate, [(lg.propagate, lg.handlers[:]) for lg in libs], llm_log.level)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_default_handler()
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # "Loading weights" bars: the console keeps one bar per stage
    except ImportError:  # pragma: no cover
        hf_logging = None
    root.addHandler(handler)
    root.setLevel(min(root.level, logging.INFO))
    llm_log.setLevel(logging.INFO)  # the trainer's figures, for the file
    quieted = [h for h in root.handlers if h is not handler and ours not in h.filters]
    for h in quieted:  # the console shows laborllm's lines and warnings, not the libraries' chatter
        h.addFilter(ours)
    logging.captureWarnings(True)
    pywarn.propagate = False
    pywarn.addHandler(handler)
    for lg in libs:
        lg.propagate = False
        lg.handlers = [handler]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        try:
            yield
        finally:
            logging.captureWarnings(False)
            root.removeHandler(handler)
            pywarn.removeHandler(handler)
            root.setLevel(saved[0])
            llm_log.setLevel(saved[3])
            for h in quieted:
                h.removeFilter(ours)
            pywarn.propagate = saved[1]
            for lg, (prop, handlers) in zip(libs, saved[2]):
                lg.propagate, lg.handlers = prop, handlers
            if hf_logging is not None:
                hf_logging.enable_default_handler()
                if bars:
                    hf_logging.enable_progress_bar()
            handler.close()
