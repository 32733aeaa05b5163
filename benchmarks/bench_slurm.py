"""The tiny workflow through SLURM (profiles/slurm) against the same workflow run locally.

Starts the one-node SLURM of ``tests/test_slurm.py`` (munged + slurmctld + slurmd as children of
this process, state in a temporary folder; needs root and Debian's slurm-wlm and munge, which it
installs when missing), copies the workflow once per run and runs ``tests/workflow/tiny.yaml`` to
``results/scene.ply`` in each, one after the other:

* local: ``snakemake --profile profiles/local --workflow-profile none --cores N``
* SLURM: ``snakemake --profile profiles/slurm --workflow-profile none --config use_gpu=True
  --max-threads N``, once per ``--init-seconds`` value (the first status check after that many
  seconds; 40 is the profile's)

and writes ``benchmarks/results/slurm.md``: total wall time of each command, and per rule its own
run time (the rule's ``benchmark:`` TSV, ``s``) against the time Snakemake spent on it (from the
timestamps Snakemake logs when it starts a job and when it sees it finished), the difference being
the scheduling overhead; for SLURM jobs also the queue wait and run time SLURM itself recorded
(``scontrol show job``: SubmitTime, StartTime, EndTime; 1 s resolution).

Reproduce (root; about 15 minutes on 2 cores)::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_slurm.py --init-seconds 40 5
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_slurm import LocalSlurm, copy_workflow, ensure_slurm_installed  # noqa: E402

_LOG = logging.getLogger("bench_slurm")
RULES = ["demo", "ingest", "project", "sfm_extract", "sfm_pairs", "sfm_match", "sfm_map", "sfm_align", "train",
         "export_mesh", "compress", "report", "publish"]


def snakemake_spans(log_text: str) -> dict[str, dict]:
    """Per rule: when Snakemake started the job and when it saw it finished (its log's ``[date]`` lines).

    Returns ``{rule: {"start": datetime, "end": datetime, "local": bool}}``; 1 s resolution.
    """
    spans: dict[str, dict] = {}
    last = None
    for line in log_text.splitlines():
        m = re.match(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$", line.strip())
        if m:
            last = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        m = re.match(r"^(local)?rule (\w+):$", line.strip())
        if m and last is not None:
            spans.setdefault(m.group(2), {})["start"] = last
            spans[m.group(2)]["local"] = bool(m.group(1))
            continue
        m = re.match(r"^Finished jobid: \d+ \(Rule: (\w+)\)", line.strip())
        if m and last is not None:
            spans.setdefault(m.group(1), {})["end"] = last
    return spans


def rule_seconds(workdir: Path, rule: str) -> float | None:
    """The rule's own wall time (``s`` of its Snakemake benchmark TSV), None without one."""
    tsv = workdir / "work" / ("demo" if rule == "demo" else "scene") / "benchmarks" / f"{rule}.tsv"
    if not tsv.exists():
        return None
    with open(tsv) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return float(rows[-1]["s"]) if rows else None


def slurm_times(cluster: LocalSlurm, exclude: set[str] = frozenset()) -> dict[str, dict]:
    """Per rule (the executor's job comment ``rule_RULE_wildcards_...``): submit, start and end from
    scontrol, for the jobs the cluster knows except the ids in ``exclude`` (earlier runs')."""
    out = {}
    ids = cluster.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split()
    for jid in (i for i in ids if i not in exclude):
        show = cluster.run("scontrol", "show", "job", jid).stdout
        comment = re.search(r"Comment=(\S+)", show)
        rule = re.match(r"rule_(.+?)(_wildcards_.*)?$", comment.group(1)).group(1) if comment else None
        t = {k: dt.datetime.strptime(re.search(rf"{k}=(\S+)", show).group(1), "%Y-%m-%dT%H:%M:%S")
             for k in ("SubmitTime", "StartTime", "EndTime")}
        state = re.search(r"JobState=(\S+)", show).group(1)
        out[rule] = {**t, "state": state, "id": jid}
    return out


def run(cmd: list[str], cwd: Path, env: dict, log: Path) -> float:
    t0 = time.monotonic()
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=3600)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}); log: {log}\n" + log.read_text()[-4000:])
    return wall


def fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "slurm.md")
    ap.add_argument("--init-seconds", type=int, nargs="*", default=[40, 5],
                    help="one SLURM run per value of slurm-init-seconds-before-status-checks "
                         "(40 = the profile's; default: 40 5)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    why = "not root" if os.geteuid() != 0 else ensure_slurm_installed()
    if why:
        raise SystemExit(f"cannot start SLURM here: {why}")

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True).stdout
    load_before = os.getloadavg()
    runs: list[dict] = []  # name, cmd, wall, spans, own, slurm
    with tempfile.TemporaryDirectory(prefix="bench_slurm_") as tmp:
        tmp = Path(tmp)
        cluster = LocalSlurm(tmp / "slurm")
        try:
            cluster.start()
            env = dict(cluster.env, GLOG_minloglevel="2")
            env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
            n = str(cluster.cpus)
            base = [sys.executable, "-m", "snakemake", "--workflow-profile", "none",
                    "--configfile", "tests/workflow/tiny.yaml"]
            variants = [("local", [*base, "--profile", "profiles/local", "--cores", n, "results/scene.ply"])]
            for sec in a.init_seconds:
                variants.append((f"SLURM, status checks from {sec} s",
                                 [*base, "--profile", "profiles/slurm", "--config", "use_gpu=True", "--max-threads", n,
                                  "--slurm-init-seconds-before-status-checks", str(sec), "results/scene.ply"]))
            for i, (name, cmd) in enumerate(variants):
                wd = copy_workflow(tmp / f"run{i}")
                log = tmp / f"run{i}.log"
                _LOG.info("%s: %s", name, " ".join(cmd[1:]))
                before = set(cluster.run("squeue", "-h", "-t", "all", "-o", "%i").stdout.split())
                wall = run(cmd, wd, env, log)
                runs.append({"name": name, "cmd": cmd, "wall": wall, "spans": snakemake_spans(log.read_text()),
                             "own": {r: rule_seconds(wd, r) for r in RULES},
                             "slurm": slurm_times(cluster, exclude=before)})
                _LOG.info("%s: %.1f s", name, wall)
        finally:
            cluster.stop()
    load_after = os.getloadavg()
    a.out.write_text(render(runs, cluster.cpus, commit, dirty, load_before, load_after, a.init_seconds))
    _LOG.info("wrote %s", a.out)
    return 0


def render(runs, cpus, commit, dirty, load_before, load_after, init_seconds) -> str:
    """benchmarks/results/slurm.md from the runs (first = local)."""
    local = runs[0]
    lines = [
        "# The tiny workflow through SLURM vs locally (`benchmarks/bench_slurm.py`)",
        "",
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}{' (with uncommitted changes)' if dirty else ''}; "
        f"machine: {platform.node()}, {cpus} CPUs, no GPU; load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in load_before)}, after {'/'.join(f'{x:.2f}' for x in load_after)} "
        "(the machine is shared: above ~2, other jobs ran beside these and every time is an upper bound).",
        "",
        "SLURM: a real one-node cluster on this machine (Debian's slurm-wlm, started as in "
        "`tests/test_slurm.py`: node `localhost` with these CPUs and a fake GPU that SLURM only accounts, "
        f"no accounting database, job status from squeue), snakemake-executor-plugin-slurm {_plugin_version()}, "
        "profile `profiles/slurm`; the executor checks job status after the given number of seconds, then "
        "+10 s after each check that finds nothing finished (the profile's 40 s, and 5 s to show what the "
        "interval costs). Training runs on the CPU in every run; the runs went one after the other, each in "
        "a fresh copy of the workflow.",
        "",
        "Reproduce (root; installs slurm-wlm and munge when missing; about 15 minutes on 2 cores):",
        "",
        "```bash",
        "PYTHONPATH=. .venv/bin/python benchmarks/bench_slurm.py --init-seconds " + " ".join(map(str, init_seconds)),
        "```",
        "",
        "| run | command (in a copy of the workflow) | wall (s) | / local |",
        "|---|---|---:|---:|",
    ]
    for r in runs:
        lines.append(f"| {r['name']} | `snakemake {' '.join(r['cmd'][3:])}` | {r['wall']:.1f} | "
                     f"{r['wall'] / local['wall']:.2f}x |")
    trains = ", ".join(fmt(r["own"].get("train")) for r in runs)
    lines += [
        "",
        f"The rules' own run times moved with the load on this shared machine (training: {trains} s in the "
        "runs above, in this order), more than SLURM moves the walls: the scheduling overhead is in the "
        "*overhead* columns below, and in the summary after the table.",
    ]
    lines += [
        "",
        "Per rule: *own* = the rule's run time (`work/*/benchmarks/RULE.tsv`, `s`); *overhead* = from "
        "Snakemake starting the job to Snakemake seeing it finished (its log's timestamps, 1 s resolution) "
        "minus *own*. For jobs in SLURM, split by SLURM's own times (`scontrol show job`): *queued* = "
        "StartTime - SubmitTime, *in job* = EndTime - StartTime - own (the job's own Snakemake start-up, "
        "srun, the rule's Python imports), *seen* = Snakemake's finish - EndTime (the status-check delay). "
        "Rules marked local are `localrules`: they run in the Snakemake process in every run.",
        "",
    ]
    head = ["rule", "own, local (s)", "overhead, local (s)"]
    for r in runs[1:]:
        head += [f"own ({r['name']})", f"overhead ({r['name']})", "queued", "in job", "seen"]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    sums = [0.0] * len(runs)
    for rule in RULES:
        cells = [rule + (" (local)" if runs[-1]["spans"].get(rule, {}).get("local") else "")]
        for i, r in enumerate(runs):
            sp, own = r["spans"].get(rule, {}), r["own"].get(rule)
            ov = ((sp["end"] - sp["start"]).total_seconds() - own) if ("start" in sp and "end" in sp and own is not None) else None
            sums[i] += ov or 0.0
            cells += [fmt(own), fmt(ov)]
            if i == 0:
                continue
            j = r["slurm"].get(rule)
            if j and own is not None:
                end = sp.get("end")
                cells += [fmt((j["StartTime"] - j["SubmitTime"]).total_seconds(), 0),
                          fmt((j["EndTime"] - j["StartTime"]).total_seconds() - own, 0),
                          fmt((end - j["EndTime"]).total_seconds(), 0) if end else "–"]
            else:
                cells += ["–", "–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    total = ["**sum**", "", f"**{sums[0]:.1f}**"]
    for i in range(1, len(runs)):
        total += ["", f"**{sums[i]:.1f}**", "", "", ""]
    lines += ["| " + " | ".join(total) + " |", ""]
    lines.append(f"Summary: the local run's overhead over all rules {sums[0]:.1f} s.")
    for i, r in enumerate(runs[1:], start=1):
        jobs = [(rule, j) for rule, j in r["slurm"].items() if r["own"].get(rule) is not None]
        if not jobs:
            continue
        k = len(jobs)
        queued = sum((j["StartTime"] - j["SubmitTime"]).total_seconds() for _, j in jobs) / k
        in_job = sum((j["EndTime"] - j["StartTime"]).total_seconds() - r["own"][rule] for rule, j in jobs) / k
        seen = [(r["spans"][rule]["end"] - j["EndTime"]).total_seconds() for rule, j in jobs if "end" in r["spans"].get(rule, {})]
        lines.append(f"{r['name']}: {k} jobs through sbatch, overhead {sums[i]:.1f} s in all, {sums[i] / k:.1f} s per job "
                     f"(on average queued {queued:.1f} s, in the job around the rule {in_job:.1f} s, seen finished "
                     f"{sum(seen) / max(len(seen), 1):.1f} s after SLURM's end).")
    return "\n".join(lines) + "\n"


def _plugin_version() -> str:
    from importlib.metadata import version

    return version("snakemake-executor-plugin-slurm")


if __name__ == "__main__":
    raise SystemExit(main())
