"""LAN farm (issue #14): a coordinator killed mid-training and restarted with the same command
resumes from the checkpoint the worker sent back, and one worker process serves one job per
GPU slot with ``CUDA_VISIBLE_DEVICES`` set to its GPU.

Real processes on 127.0.0.1: ``snakemake --profile profiles/lan`` (the coordinator runs inside
it) and ``splatforge worker`` sub-processes with their own folders. Every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from splatforge_core.farm import archive, protocol
from splatforge_core.farm import worker as farm_worker
from splatforge_core.farm.coordinator import Coordinator
from splatforge_core.farm.keys import make_keys
from splatforge_core.train.synthetic import make_synthetic_scene

from test_farm import Farm, _file, _special, _tar, client, farm_logs_through_logging, free_port, hello, recv, wait_for

__all__ = ["farm_logs_through_logging"]  # the autouse fixture applies here too

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
TRAIN_CONFIG = {"train": {"iterations": 120, "checkpoint_every": 10, "keep_checkpoints": 2, "eval_steps": [],
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
    assert 0 < step < 120 and step == got[-1]  # the newest checkpoint the dead coordinator had received
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
    shell: "sleep {config[sleep]}; echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES-unset}} > {output}"
"""


@pytest.mark.slow
@pytest.mark.parametrize("option,slots,devices", [
    (["--gpus", "0,1"], ["w1/gpu0", "w1/gpu1"], {"CUDA_VISIBLE_DEVICES=0", "CUDA_VISIBLE_DEVICES=1"}),
    (["--slots", "2"], ["w1/s0", "w1/s1"], {"CUDA_VISIBLE_DEVICES=" + os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}),
], ids=["gpus", "cpu_slots"])
def test_worker_with_two_slots_runs_two_jobs_at_once_each_on_its_own_device(tmp_path, option, slots, devices):
    f = Farm(tmp_path)
    try:
        (f.wf / "Snakefile").write_text(ENV_SNAKEFILE)  # the coordinator ships the Snakefile as it is at offer time
        f.worker("w1", *option)
        wait_for(lambda: sorted(f.peers()) == slots, 60, "two slots of worker w1")
        ids = [f.coord.submit(f.spec(n, sleep=4)) for n in "ab"]
        both = wait_for(lambda: sum(j["state"] == "running" and j["worker"] is not None for j in f.coord.status()["jobs"]) == 2,
                        30, "both jobs running at once")
        assert both
        for jid in ids:
            wait_for(lambda: f.coord.state(jid)[0] in ("done", "failed"), 90, f"job {jid}")
            assert f.coord.state(jid)[0] == "done", f.coord.state(jid)
        seen = {(f.wf / f"work/out/{n}.txt").read_text().strip() for n in "ab"}
        assert seen == devices  # CPU slots leave the variable as the worker got it
        workers = {f.coord.state(jid)[1] for jid in ids}
        assert workers == {f"worker {s!r}" for s in slots}
        time.sleep(1.2)  # the status file is rewritten every second
        out = subprocess.run([sys.executable, "-m", "splatforge_core.cli", "farm", "status", "--dir", str(f.wf)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        assert out.returncode == 0, out.stderr
        assert all(s in out.stdout for s in slots)
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


# -- checkpoint messages (a hostile or honest worker written here) ----------------------------------

CKPT = "work/ckpt/a"


def _ckpt_spec(farm: Farm):
    return dataclasses.replace(farm.spec("a"), checkpoints=CKPT)


def _take_offer(s) -> tuple[dict, bytes]:
    offer = recv(s, 10)
    assert offer and offer[0]["type"] == "offer"
    h = offer[0]
    data = b"".join(recv(s, 10)[1] for _ in range(h["nchunks"]))
    return h, data


def _send_checkpoint(s, h: dict, data: bytes, files: list[str]) -> None:
    s.send_multipart(protocol.encode("checkpoint", job=h["job"], attempt=h["attempt"], files=files, size=len(data),
                                     nchunks=archive.n_chunks(len(data)), sha256=hashlib.sha256(data).hexdigest()))
    for seq in range(archive.n_chunks(len(data))):
        piece = data[seq * protocol.CHUNK_BYTES:(seq + 1) * protocol.CHUNK_BYTES]
        s.send_multipart(protocol.encode("chunk", piece, job=h["job"], attempt=h["attempt"], seq=seq,
                                         sha256=hashlib.sha256(piece).hexdigest()))


def _joined(farm: Farm):
    s = client(farm)
    hello(s)
    assert recv(s, 5)[0]["type"] == "welcome"
    return s


@pytest.mark.hostile(cls="farm", expect="correct")
def test_checkpoints_sent_back_are_mirrored_and_a_restarted_coordinator_ships_them_with_the_job(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    farm = Farm(tmp_path)
    try:
        s = _joined(farm)
        farm.coord.submit(_ckpt_spec(farm))
        h, _ = _take_offer(s)
        assert h["checkpoints"] == CKPT and h["checkpoint_s"] > 0
        _send_checkpoint(s, h, _tar([_file(f"{CKPT}/ckpt_0000010.pt", b"ten")]), ["ckpt_0000010.pt"])
        dest = farm.wf / CKPT
        wait_for(lambda: (dest / "ckpt_0000010.pt").is_file(), 10, "the first checkpoint installed")
        # only the new file travels; the names say what the folder holds
        _send_checkpoint(s, h, _tar([_file(f"{CKPT}/ckpt_0000020.pt", b"twenty")]), ["ckpt_0000010.pt", "ckpt_0000020.pt"])
        wait_for(lambda: archive.top_files(dest) == ["ckpt_0000010.pt", "ckpt_0000020.pt"], 10, "the second checkpoint")
        _send_checkpoint(s, h, _tar([_file(f"{CKPT}/ckpt_0000030.pt", b"thirty")]), ["ckpt_0000020.pt", "ckpt_0000030.pt"])
        wait_for(lambda: archive.top_files(dest) == ["ckpt_0000020.pt", "ckpt_0000030.pt"], 10, "step 10 pruned")
        assert (dest / "ckpt_0000020.pt").read_bytes() == b"twenty"
        # the files are renamed into place before the coordinator counts the checkpoint: wait for both
        wait_for(lambda: farm.coord.stats["checkpoints"] == 3, 10, "the third checkpoint counted")
        assert farm.coord.state(h["job"])[0] == "running"
        s.close()
        farm.coord.stop()  # the coordinator dies; a new one (the rerun) takes the same job
        farm.coord = Coordinator(farm.wf, farm.keys, host="127.0.0.1", heartbeat_s=0.5, timeout_s=4.0, beacon_port=None)
        farm.port = farm.coord.start()
        s2 = _joined(farm)
        farm.coord.submit(_ckpt_spec(farm))
        h2, data = _take_offer(s2)
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            members = {m.name: m for m in t.getmembers()}
            assert {n for n in members if n.startswith(CKPT)} == {f"{CKPT}/ckpt_0000020.pt", f"{CKPT}/ckpt_0000030.pt"}
            assert t.extractfile(members[f"{CKPT}/ckpt_0000030.pt"]).read() == b"thirty"
        assert "shipping checkpoint(s) ckpt_0000020.pt, ckpt_0000030.pt" in caplog.text
        s2.close()
    finally:
        farm.close()


HOSTILE_CKPT = {
    "outside_folder": (lambda: _tar([_file("work/in/a.txt", b"overwritten")]), ["a.txt"], "not the announced checkpoint files"),
    "sub_folder": (lambda: _tar([_file(f"{CKPT}/sub/ckpt_0000010.pt", b"x")]), ["sub/ckpt_0000010.pt"],
                   "not the announced checkpoint files"),
    "dotdot": (lambda: _tar([_file(f"{CKPT}/../../../escape.txt", b"x")]), ["ckpt_0000010.pt"], "'..'"),
    "symlink": (lambda: _tar([_special(f"{CKPT}/ckpt_0000010.pt", tarfile.SYMTYPE, "/etc/passwd")]), ["ckpt_0000010.pt"],
                "is a link"),
    "unannounced_file": (lambda: _tar([_file(f"{CKPT}/ckpt_0000010.pt", b"x"), _file(f"{CKPT}/evil.pt", b"x")]),
                         ["ckpt_0000010.pt"], "not the announced checkpoint files"),
    "empty": (lambda: _tar([]), [], "not the announced checkpoint files"),
}


@pytest.mark.hostile(cls="farm", expect="clear_error")
@pytest.mark.parametrize("case", sorted(HOSTILE_CKPT))
def test_hostile_checkpoint_archive_is_refused_and_the_job_offered_again(tmp_path, caplog, case):
    caplog.set_level(logging.INFO, logger="splatforge")
    farm = Farm(tmp_path)
    try:
        (farm.wf / CKPT).mkdir(parents=True)
        (farm.wf / CKPT / "ckpt_0000005.pt").write_bytes(b"five")
        s = _joined(farm)
        farm.coord.submit(_ckpt_spec(farm))
        h, _ = _take_offer(s)
        make, files, reason = HOSTILE_CKPT[case]
        _send_checkpoint(s, h, make(), files)
        wait_for(lambda: farm.coord.state(h["job"])[0] != "running", 10, "the refusal")
        state, message = farm.coord.state(h["job"])
        assert state == "queued" and "checkpoint" in message and reason in message
        assert f"result of job {h['job']}" in caplog.text and reason in caplog.text and farm.peers() == []
        assert archive.top_files(farm.wf / CKPT) == ["ckpt_0000005.pt"]  # the folder as it was
        assert (farm.wf / "work/in/a.txt").read_text() == "input a\n"
        for p in (tmp_path / "escape.txt", farm.wf / "escape.txt", farm.wf / "work" / "escape.txt"):
            assert not p.exists(), p
        s.close()
    finally:
        farm.close()


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_checkpoint_for_a_job_without_a_checkpoint_folder_is_refused(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    farm = Farm(tmp_path)
    try:
        s = _joined(farm)
        farm.coord.submit(farm.spec("a"))
        h, _ = _take_offer(s)
        assert h["checkpoints"] == ""
        _send_checkpoint(s, h, _tar([_file("ckpt_0000010.pt", b"x")]), ["ckpt_0000010.pt"])
        wait_for(lambda: farm.coord.state(h["job"])[0] != "running", 10, "the refusal")
        assert "without a checkpoint folder" in farm.coord.state(h["job"])[1]
        assert not (farm.wf / "ckpt_0000010.pt").exists()
        s.close()
    finally:
        farm.close()


def test_auto_detected_slots_follow_the_workers_own_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert [(s[0], s[2]) for s in farm_worker.slot_capacities(None, None, 2)] == [
        ("gpu3", {"CUDA_VISIBLE_DEVICES": "3"}), ("gpu5", {"CUDA_VISIBLE_DEVICES": "5"})]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU given to this worker: one CPU slot
    assert [(s[0], s[2]) for s in farm_worker.slot_capacities(None, None, 2)] == [("", {})]
