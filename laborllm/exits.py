"""How a command ends: its exit status and one line for the user. 0 done, 1 internal error (the
traceback in a log file under the cache folder), 2 bad input (a UserError, a usage error, a file that
cannot be read or written), 130 interrupted (saying what the interruption kept)."""
from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import typer
from rich.markup import escape

from laborllm.errors import UserError
from laborllm.files import cache_dir


def run_app(app: typer.Typer, console, on_broken_pipe) -> None:
    """Run the command line and exit with its status; `console` gets the one line."""
    try:
        rc = app(standalone_mode=False)
    except UserError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        sys.exit(2)
    except aborts():
        console.print(interrupted_message(sys.argv[1:]), highlight=False, markup=False)
        sys.exit(130)
    except BrokenPipeError:  # written past rich (print_json, progress): as the console's on_broken_pipe
        on_broken_pipe()
    except usage_errors() as e:
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        if not msg:  # no arguments at all: show the commands
            app(["--help"], standalone_mode=False)
            sys.exit(2)
        console.print(f"[bold red]error:[/] {escape(msg)} (see laborllm --help)", highlight=False)
        sys.exit(2)
    except OSError as e:  # a file or folder the user named: missing, read-only, a folder for a file...
        where = e.filename or ""
        console.print(f"[bold red]error:[/] {escape(str(where))}: {escape(str(e.strerror or e))}", highlight=False)
        sys.exit(2)
    except Exception as e:
        log_path = write_traceback(e)
        console.print(f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e)[:300])}"
                      + (f" (traceback in {escape(str(log_path))})" if log_path else ""), highlight=False)
        sys.exit(1)
    if isinstance(rc, int) and rc:
        if rc == 130:
            console.print(interrupted_message(sys.argv[1:]), highlight=False, markup=False)
        sys.exit(rc)


def interrupted_message(argv: list[str]) -> str:
    """What an interruption kept, for the command that was running: only what is really kept."""
    cmd = next((a for a in argv if not a.startswith("-")), "")
    if cmd == "run":
        return ("interrupted: finished models and scores, LLM training checkpoints (every 10 minutes) and LLM "
                "scores so far are kept; run the same command again to continue")
    if cmd == "fit" and any(a in ("llm", "icl") for a in argv):
        return "interrupted: LLM training checkpoints (every 10 minutes) are kept; run the same command again to resume"
    if cmd == "fit" and "career" in argv:
        return "interrupted: CAREER's checkpoint of its last finished epoch is kept; run the same command again to resume"
    if cmd == "fit" and "llm-head" in argv:
        return "interrupted: the LLM features computed so far are kept; run the same command again to continue"
    if cmd == "evaluate":
        return "interrupted: LLM scores so far are kept; run the same command again to continue"
    return "interrupted: nothing was written"


def usage_errors() -> tuple:
    """Click's usage exceptions, and typer's bundled copies (not subclasses of click's)."""
    import click

    kinds = [click.exceptions.ClickException]
    try:
        from typer._click import exceptions as bundled

        kinds.append(bundled.ClickException)
    except ImportError:  # typer releases that use click itself
        pass
    return tuple(kinds)


def aborts() -> tuple:
    import click

    return (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)


def write_traceback(e: BaseException) -> Path | None:
    """Write the traceback to a log file; the terminal gets one line pointing to it."""
    for folder in (cache_dir() / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # one file per error, even for two in the same second: time, process and a counter
            stem = f"laborllm-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
            for n in range(100):
                path = folder / f"{stem}{'-' + str(n) if n else ''}.log"
                try:
                    with open(path, "x") as f:
                        f.write("".join(traceback.format_exception(e)))
                    return path
                except FileExistsError:
                    continue
        except OSError:
            continue
    return None
