"""Command-line interface: a thin layer over the Python API. User mistakes exit with status 2."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from laborllm.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(no_args_is_help=True, help="Inspect panels.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)
out = Console()

DataOpt = typer.Option("nlsy97", "--data", help="embedded data set name (nlsy97, nlswork, nlsy79-males) or a CSV/Parquet/Stata file")
ColumnsOpt = typer.Option(None, "--columns", help="map your column names: old=new,... (new in person_id, year, occupation, gender, race, birth_year, education, region, enrolled, weight)")
SchemeOpt = typer.Option(None, "--scheme", help="occupation codes: occ1990dd, census (2002/2010 codes) or titles")
UnknownOpt = typer.Option("error", "--unknown", help="unknown occupation codes: error, or missing (counted in a warning)")
SeedOpt = typer.Option(0, "--seed", help="seed of the 70/15/15 person split")


def load_events(data: str, columns: Optional[str], scheme: Optional[str], unknown: str, seed: int):
    from laborllm.data import load_panel, make_events

    return make_events(load_panel(data, columns=columns, scheme=scheme, unknown=unknown), seed=seed)


@data_app.command("describe")
def data_describe(data: str = DataOpt, columns: Optional[str] = ColumnsOpt, scheme: Optional[str] = SchemeOpt,
                  unknown: str = UnknownOpt, seed: int = SeedOpt,
                  as_json: bool = typer.Option(False, "--json", help="print a JSON object")):
    """Persons, person-years, states, events per split, move rate and top occupations."""
    from laborllm.data.summary import describe

    d = describe(load_events(data, columns, scheme, unknown, seed))
    if as_json:
        out.print_json(json.dumps(d))
        return
    t = Table(title=f"{d['source']} ({d['scheme']})", show_header=False)
    for k in ("persons", "person_years", "missing_person_years", "states"):
        t.add_row(k.replace("_", " "), f"{d[k]:,}")
    t.add_row("years", f"{d['years'][0]}-{d['years'][1]}")
    t.add_row("move rate", f"{d['move_rate']:.1%}")
    for s, n in d["events"].items():
        t.add_row(f"events {s}", f"{n:,} ({d['persons_by_split'][s]:,} persons)")
    t.add_row("covariates", ", ".join(d["covariates"]) or "-")
    out.print(t)
    top = Table(title="Top states")
    top.add_column("state"), top.add_column("person-years", justify="right"), top.add_column("share", justify="right")
    for r in d["top_states"]:
        top.add_row(r["state"], f"{r['person_years']:,}", f"{r['share']:.1%}")
    out.print(top)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        app(standalone_mode=False)
    except UserError as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        console.print("interrupted")
        sys.exit(130)
    except Exception as e:
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
