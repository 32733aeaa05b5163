"""LAN farm benchmark (issue #14) on loopback -> benchmarks/results/farm.md.

* makespan of 4 equal jobs on 1 and on 2 local workers (each worker runs one job at a time with
  ``--cores 1``); the job is ``sleep S`` in a Snakemake rule, so the ratio measures the farm's
  parallelism and overheads, not CPU scaling (this machine's 2 cores are shared with other work);
* the coordinator's own time per job (packing and sending the offer, checking and installing the
  result) and the end-to-end latency of an empty job (submit -> outputs installed, including the
  worker's Snakemake start);
* loopback transfer: a job whose input and output are a file of SIZE_MB random bytes.

    PYTHONPATH=. python benchmarks/bench_farm.py [--sleep 8] [--size-mb 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from splatforge_core.farm.coordinator import Coordinator, JobSpec
from splatforge_core.farm.keys import make_keys

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = """
rule work:
    input: "work/in/{name}.bin"
    output: "work/out/{name}.bin"
    log: "work/logs/{name}.log"
    shell: "sleep {config[sleep]}; cp {input} {output}; echo ok > {log}"
"""


def run_farm(root: Path, n_workers: int, jobs: dict[str, float], size: int = 16) -> dict:
    """Run ``jobs`` (name -> sleep seconds) on ``n_workers`` fresh workers; returns timings."""
    root.mkdir(parents=True)
    make_keys(root / "keys", [f"w{i}" for i in range(n_workers)])
    wf = root / "wf"
    (wf / "work" / "in").mkdir(parents=True)
    (wf / "Snakefile").write_text(SNAKEFILE)
    for name in jobs:
        (wf / "work" / "in" / f"{name}.bin").write_bytes(os.urandom(size))
    coord = Coordinator(wf, root / "keys", host="127.0.0.1", beacon_port=None, timeout_s=30)
    port = coord.start()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-m", "splatforge_core.cli", "worker", "--keys",
                               str(root / "keys" / "workers" / f"w{i}.key_secret"), "--server-key", str(root / "keys" / "coordinator.key"),
                               "--connect", f"tcp://127.0.0.1:{port}", "--workdir", str(root / f"w{i}"), "--name", f"w{i}",
                               "--cores", "1", "--timeout", "60"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(n_workers)]
    try:
        while len(coord.status()["peers"]) < n_workers:
            time.sleep(0.1)
        t0 = time.monotonic()
        ids = {coord.submit(JobSpec("work", [f"work/out/{n}.bin"], [f"work/in/{n}.bin"], [f"work/logs/{n}.log"], 1, 1.0,
                                    {"sleep": s})): n for n, s in jobs.items()}
        done = {}
        while len(done) < len(ids):
            for jid in ids:
                st = coord.state(jid)[0]
                if st == "failed":
                    raise RuntimeError(f"job {ids[jid]} failed: {coord.state(jid)[1]}")
                if st == "done" and jid not in done:
                    done[jid] = time.monotonic() - t0
            time.sleep(0.05)
        return {"makespan_s": time.monotonic() - t0, "latency_s": list(done.values()), **coord.stats}
    finally:
        for p in procs:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        coord.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sleep", type=float, default=8.0)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "farm.md")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        equal = {f"j{i}": a.sleep for i in range(4)}
        one = run_farm(tmp / "one", 1, equal)
        two = run_farm(tmp / "two", 2, equal)
        empty = run_farm(tmp / "empty", 1, {f"e{i}": 0.0 for i in range(3)})
        big = run_farm(tmp / "big", 1, {"big": 0.0}, size=a.size_mb << 20)
    ratio = one["makespan_s"] / two["makespan_s"]
    coord_s = [o + i for o, i in zip(empty["offer_s"], empty["overhead_s"])]
    first = min(empty["latency_s"])  # the 3 empty jobs run one after the other on one worker
    mb = (big["bytes_in"] + big["bytes_out"]) / 2**20  # input and output archives each hold the file
    lines = [
        "# LAN farm benchmark (issue #14)",
        "",
        f"`PYTHONPATH=. python benchmarks/bench_farm.py --sleep {a.sleep} --size-mb {a.size_mb}` on {platform.node()} "
        f"({os.cpu_count()} cores, shared with other work), loopback 127.0.0.1, CurveZMQ on, {time.strftime('%Y-%m-%d')}.",
        "",
        "Jobs are Snakemake rules `sleep S; cp input output` run by `splatforge worker` processes (one job at a time each,",
        "`--cores 1`): the makespan ratio measures the farm's parallelism and overheads, not compute scaling; per-cluster",
        "training on 1 vs 2 real GPU machines was not measured (one 2-core machine here).",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| makespan, 4 jobs of {a.sleep:.0f} s, 1 worker | {one['makespan_s']:.1f} s | |",
        f"| makespan, 4 jobs of {a.sleep:.0f} s, 2 workers | {two['makespan_s']:.1f} s | |",
        f"| speed-up 2 workers vs 1 | {ratio:.2f}x | >= 1.7x ({'pass' if ratio >= 1.7 else 'FAIL'}) |",
        f"| coordinator time per job (pack + send offer, check + install result), median of 3 | "
        f"{statistics.median(coord_s) * 1000:.0f} ms | < 2 s ({'pass' if statistics.median(coord_s) < 2 else 'FAIL'}) |",
        f"| empty job, submit -> outputs installed (incl. the worker's Snakemake start): first / mean of 3 in a row | "
        f"{first:.2f} s / {empty['makespan_s'] / 3:.2f} s | |",
        f"| loopback transfer, {a.size_mb} MB file in and back out ({mb:.0f} MB of archives) | "
        f"{mb / big['transfer_s']:.0f} MB/s over {big['transfer_s']:.2f} s | >= 100 MB/s "
        f"({'pass' if mb / big['transfer_s'] >= 100 else 'FAIL'}) |",
        f"| same job, submit -> installed; coordinator time (tar of the input, offer; check, install) | "
        f"{big['latency_s'][0]:.1f} s; {big['offer_s'][0] + big['overhead_s'][0]:.2f} s | |",
        "",
        "Transfer time: sending = packing done, chunks handed to ZeroMQ; receiving = result header to last chunk written",
        "and checked (sha256 per chunk and whole). Packing (tar of the inputs) is in the coordinator time, not the transfer.",
    ]
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
