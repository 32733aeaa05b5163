"""``splatforge sfm {extract,pairs,match,map,align} ...``: command line of the SfM stages.

Each sub-command calls its stage's ``main`` and prints the returned stats as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json

from . import align, extract, mapping, match, pairs

STAGES = {
    "extract": (extract, "SIFT features of views.json images -> colmap/features.db"),
    "pairs": (pairs, "pairs.txt from GPS (K nearest), sequential or exhaustive"),
    "match": (match, "match + verify the pairs -> colmap/database.db"),
    "map": (mapping, "incremental | global | hierarchical mapping -> sparse/0 + summary.json"),
    "align": (align, "Sim3 to ENU GPS positions -> aligned/ + alignment.json"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="splatforge sfm", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="stage", required=True)
    for name, (mod, help_) in STAGES.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        mod.add_arguments(sp)
    return p


def cli(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (the arguments after ``splatforge sfm``), run the stage, return 0.

    Errors a user can act on raise :class:`~splatforge_core.errors.InputError`, which the
    ``splatforge`` dispatcher reports (exit code 1).
    """
    a = build_parser().parse_args(argv)
    stats = STAGES[a.stage][0].run_args(a)
    print(json.dumps({k: v for k, v in stats.items() if k != "residuals"}, indent=2, default=str))
    return 0
