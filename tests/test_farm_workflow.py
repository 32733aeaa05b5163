"""LAN farm end to end (issue #14): the tiny clustered workflow (tests/workflow/tiny.yaml with
two clusters) through ``profiles/lan`` on 127.0.0.1, both ``train_cluster`` jobs on two local
``splatforge worker`` processes (each with its own folder), everything else local.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from splatforge_core.farm.keys import make_keys

from test_farm import free_port

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_tiny_clustered_workflow_through_profiles_lan_spreads_train_cluster_over_two_workers(tmp_path):
    make_keys(tmp_path / "farm-keys", ["w1", "w2"])
    (tmp_path / "two.yaml").write_text("cluster:\n  n_clusters: 2\n")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, "-m", "splatforge_core.cli", "worker", "--keys",
                                 str(tmp_path / "farm-keys" / "workers" / f"{w}.key_secret"), "--server-key",
                                 str(tmp_path / "farm-keys" / "coordinator.key"), "--connect", f"tcp://127.0.0.1:{port}",
                                 "--workdir", str(tmp_path / w), "--name", w, "--cores", "1", "--timeout", "60"],
                                env=env, start_new_session=True, stdout=open(tmp_path / f"{w}.log", "w"), stderr=subprocess.STDOUT)
               for w in ("w1", "w2")]
    try:
        r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(tmp_path),
                            "--profile", str(REPO / "profiles" / "lan"), "--splatforge-farm-port", str(port),
                            "--splatforge-farm-beacon-port", "0", "--splatforge-farm-timeout", "120", "--jobs", "2",
                            "--configfile", str(REPO / "tests" / "workflow" / "tiny.yaml"), str(tmp_path / "two.yaml"),
                            "--", "work/scene/splat/splat.ply"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1400)
        assert r.returncode == 0, r.stderr[-4000:]
    finally:
        for p in workers:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
    logs = {w: (tmp_path / f"{w}.log").read_text() for w in ("w1", "w2")}
    # each worker ran exactly one train_cluster job (the farm rules), nothing else came to them
    for w, text in logs.items():
        assert text.count("(train_cluster) attempt 1 offered") == 1, (w, text[-2000:])
        assert " done (exit 0" in text
    for c in ("c0", "c1"):
        assert (tmp_path / f"work/scene/clusters/{c}/splat/splat.ply").stat().st_size > 1000
        assert (tmp_path / f"work/scene/clusters/{c}/logs/train.log").is_file()
        assert (tmp_path / f"work/scene/clusters/{c}/benchmarks/train.tsv").is_file()
    assert (tmp_path / "work/scene/splat/splat.ply").is_file()
