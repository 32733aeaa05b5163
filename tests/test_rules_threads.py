"""Every rule's threads come from rules/common.smk's cluster_threads (or a constant): a rule with
``threads: workflow.cores`` breaks every remote executor (SLURM, the LAN farm), where Snakemake has
no total core count and stops at start (caught by the real SLURM test, minutes in; this is instant)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_no_rule_asks_for_workflow_cores():
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
                 for i, line in enumerate(p.read_text().splitlines(), 1)
                 if re.match(r"\s*threads:\s*.*workflow\.cores", line)]
    assert offenders == [], f"use cluster_threads(n) instead of workflow.cores: {offenders}"
