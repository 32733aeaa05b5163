"""LAN farm (issue #14): a coordinator killed mid-training and restarted with the same command
resumes from the checkpoint the worker sent back, and one worker process serves one job per
GPU slot with ``CUDA_VISIBLE_DEVICES`` set to its GPU.

Real processes on 127.0.0.1: ``snakemake --profile profiles/lan`` (the coordinator runs inside
it) and ``splatforge worker`` sub-processes with their own folders. Every wait is bounded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from splatforge_core.farm import worker as farm_worker
from splatforge_core.farm.keys import make_keys
from splatforge_core.train.synthetic import make_synthetic_scene

from test_farm import Farm, free_port, wait_for

REPO = Path(__file__).resolve().parent.parent

#: The train rule of rules/train.smk reduced to the tiny synthetic scene's inputs (no masks).
TRAIN_SNAKEFILE = """
rule train:
    input:
        aligned="work/scene/aligned",
        images="work/scene/images",
        views="work/scene/views.json",
    output:
        splat="work/scene/splat/splat.ply",
        metrics="work/scene/splat/metrics.json",
    params:
        out_dir="work/scene/splat",
        options=lambda wildcards: config["train"],
    threads: 1
    log:
        "work/scene/logs/train.log",
    script:
        "scripts/train.py"
"""

#: Few Gaussians and small images, many steps with a checkpoint every 10 steps: the run lasts long
#: enough to be killed after the first checkpoint came back, and a resumed run has steps left.
TRAIN_CONFIG = {"train": {"iterations": 600, "checkpoint_every": 10, "keep_checkpoints": 2, "eval_steps": [],
                          "progress": False, "sky_points": 0}}


def _ckpt_steps(folder: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in folder.glob("ckpt_*.pt") if (m := re.match(r"ckpt_(\d+)\.pt$", p.name)))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_coordinator_restarted_resumes_training_from_the_checkpoint_the_worker_sent(tmp_path):
    make_synthetic_scene(tmp_path / "work" / "scene", n_cameras=16, width=64, height=48, n_gaussians=3000, n_points=500)
    (tmp_path / "Snakefile").write_text(TRAIN_SNAKEFILE)
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "train.py", tmp_path / "scripts" / "train.py")
    (tmp_path / "config.json").write_text(json.dumps(TRAIN_CONFIG))
    make_keys(tmp_path / "farm-keys", ["w1"])
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    worker = subprocess.Popen([sys.executable, "-m", "splatforge_core.cli", "worker", "--keys",
                               str(tmp_path / "farm-keys" / "workers" / "w1.key_secret"), "--server-key",
                               str(tmp_path / "farm-keys" / "coordinator.key"), "--connect", f"tcp://127.0.0.1:{port}",
                               "--workdir", str(tmp_path / "w1"), "--name", "w1", "--cores", "1", "--timeout", "8"],
                              env=env, start_new_session=True, stdout=open(tmp_path / "w1.log", "w"), stderr=subprocess.STDOUT)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(tmp_path / "Snakefile"), "-d", str(tmp_path),
           "--profile", str(REPO / "profiles" / "lan"), "--splatforge-farm-port", str(port), "--splatforge-farm-beacon-port", "0",
           "--splatforge-farm-timeout", "60", "--splatforge-farm-checkpoint-interval", "1", "--jobs", "1",
           "--configfile", str(tmp_path / "config.json"), "--", "work/scene/splat/splat.ply"]
    ckpt = tmp_path / "work" / "scene" / "splat" / "checkpoints"
    try:
        first = subprocess.Popen(cmd, cwd=tmp_path, env=env, start_new_session=True, stdout=open(tmp_path / "run1.log", "w"),
                                 stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _ckpt_steps(ckpt) or first.poll() is not None, 400, "the first checkpoint from the worker")
        finally:
            os.killpg(first.pid, signal.SIGKILL)  # Snakemake and the coordinator thread in it, mid-job
            first.wait(30)
        run1 = (tmp_path / "run1.log").read_text()
        assert not (tmp_path / "work/scene/splat/splat.ply").exists(), run1[-3000:]
        got = _ckpt_steps(ckpt)
        assert got and got[-1] > 0
        r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-4000:]
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    assert "shipping checkpoint(s)" in r.stderr
    train_log = (tmp_path / "work/scene/logs/train.log").read_text()
    m = re.search(r"resumed from checkpoint \S+ at step (\d+) of (\d+)", train_log)
    assert m, train_log[-3000:]
    step = int(m.group(1))
    assert 0 < step < 600 and step >= got[-1]  # from a checkpoint sent back at or after the one seen at the kill
    metrics = json.loads((tmp_path / "work/scene/splat/metrics.json").read_text())
    assert metrics["resumed_from"] == [step]
    assert (tmp_path / "work/scene/splat/splat.ply").stat().st_size > 1000
    wlog = (tmp_path / "w1.log").read_text()
    assert "joining again" in wlog or "reconnecting" in wlog  # the worker dropped the dead coordinator's job


# -- per-GPU slots ---------------------------------------------------------------------------------

ENV_SNAKEFILE = """
rule slow:
    input: "work/in/{name}.txt"
    output: "work/out/{name}.txt"
    shell: "sleep {config[sleep]}; echo CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES > {output}"
"""


@pytest.mark.slow
def test_worker_with_two_gpu_slots_runs_two_jobs_at_once_each_on_its_own_device(tmp_path):
    f = Farm(tmp_path)
    try:
        (f.wf / "Snakefile").write_text(ENV_SNAKEFILE)  # the coordinator ships the Snakefile as it is at offer time
        f.worker("w1", "--gpus", "0,1")
        wait_for(lambda: sorted(f.peers()) == ["w1/gpu0", "w1/gpu1"], 60, "two slots of worker w1")
        ids = [f.coord.submit(f.spec(n, sleep=4)) for n in "ab"]
        both = wait_for(lambda: sum(j["state"] == "running" and j["worker"] is not None for j in f.coord.status()["jobs"]) == 2,
                        30, "both jobs running at once")
        assert both
        for jid in ids:
            wait_for(lambda: f.coord.state(jid)[0] in ("done", "failed"), 90, f"job {jid}")
            assert f.coord.state(jid)[0] == "done", f.coord.state(jid)
        seen = {(f.wf / f"work/out/{n}.txt").read_text().strip() for n in "ab"}
        assert seen == {"CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"}
        workers = {f.coord.state(jid)[1] for jid in ids}
        assert workers == {"worker 'w1/gpu0'", "worker 'w1/gpu1'"}
        time.sleep(1.2)  # the status file is rewritten every second
        out = subprocess.run([sys.executable, "-m", "splatforge_core.cli", "farm", "status", "--dir", str(f.wf)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "w1/gpu0" in out.stdout and "w1/gpu1" in out.stdout
    finally:
        f.close()


def test_slot_capacities_share_cores_and_set_each_gpu(caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    slots = farm_worker.slot_capacities(["0", "1"], None, 4)
    assert [s[0] for s in slots] == ["gpu0", "gpu1"]
    assert [s[2] for s in slots] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    assert all(s[1]["cores"] == 2 for s in slots)
    cpu = farm_worker.slot_capacities(None, 3, 2)
    assert [s[0] for s in cpu] == ["s0", "s1", "s2"] and all(s[2] == {} and s[1]["cores"] == 1 for s in cpu)
    one = farm_worker.slot_capacities(None, 1, 2)
    assert [s[0] for s in one] == [""] and one[0][1]["cores"] == 2


@pytest.mark.parametrize("gpus,slots,words", [(["0", "0"], None, "distinct GPU indices"), (None, 0, "at least 1"),
                                              (["0", "1"], 3, "one slot per GPU")], ids=["repeated", "zero_slots", "mismatch"])
def test_bad_slot_options_are_refused_with_a_clear_message(gpus, slots, words):
    from splatforge_core.errors import InputError

    with pytest.raises(InputError, match=words):
        farm_worker.slot_capacities(gpus, slots, 2)
