"""The workflow on a real SLURM cluster through ``profiles/slurm`` (issue #13).

The fixture starts a real single-node SLURM on this machine: ``munged`` with a generated key,
``slurmctld`` and ``slurmd`` (Debian packages ``slurm-wlm`` and ``munge``; installed here with
apt-get when missing and we are root) from a ``slurm.conf`` written into the test's temporary
folder: one node ``localhost`` with this machine's CPUs (and 64 GB of memory declared, so the
rules' requests fit on any machine: SLURM only accounts memory here), one GPU generic resource
(``Gres=gpu:1``) whose ``File=`` is a character device made with ``mknod`` (``Count=`` alone
leaves the node INVALID), ``select/cons_tres``, ``proctrack/linuxproc``, no accounting
(so no ``sacct``: the profile queries job status with ``squeue``, hence a generous
``MinJobAge``). The daemons run in the foreground as children of the test, on free ports,
with their own munge socket, so nothing of the machine's own SLURM or munge (if any) is used
or touched, and the finaliser stops every one of them and removes their state, also when a
test fails.

The tiny workflow (``tests/workflow/tiny.yaml``) is then submitted with
``snakemake --profile profiles/slurm --config use_gpu=True`` (use_gpu gives training, and SIFT
extraction and matching, the ``gpu`` resource). SLURM accounts the fake GPU to the training job
(``--gpus=1``, visible in ``scontrol show job``), but there is no real GPU behind it: the
training job still trains on the CPU, because ``train.device: auto`` resolves to the CPU when
CUDA is absent (torch is the CPU build in CI). That is the point of the test: the scheduler's
side (sbatch, the GPU request, squeue status, retries, resume) is real; the accelerator is not.

Skipped, with the reason, only where the test cannot be root or the packages cannot be installed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "workflow" / "tiny.yaml"
PACKAGES = ("slurm-wlm", "munge")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "srun", "sinfo")


# ---------------------------------------------------------------------------- the cluster
def missing_binaries() -> list[str]:
    """The SLURM/munge programs this test needs that are not on PATH (daemons are in /usr/sbin)."""
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [b for b in BINARIES if shutil.which(b, path=path) is None]


def ensure_slurm_installed() -> str | None:
    """Install ``slurm-wlm`` and ``munge`` with apt-get when missing; return why not, or None."""
    if not missing_binaries():
        return None
    if os.geteuid() != 0:
        return f"not root and {', '.join(missing_binaries())} missing (apt-get install {' '.join(PACKAGES)})"
    if shutil.which("apt-get") is None:
        return "apt-get not available to install " + " ".join(PACKAGES)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            return f"{' '.join(cmd)} failed: {(r.stderr or r.stdout).strip()[-500:]}"
    missing = missing_binaries()
    return f"installed {' '.join(PACKAGES)} but {', '.join(missing)} still missing" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    """Physical memory in MB (what slurmd reports as RealMemory is at least this minus a little)."""
    with open("/proc/meminfo") as f:
        kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return kb // 1024


class LocalSlurm:
    """A real one-node SLURM (munged + slurmctld + slurmd) whose whole state lives in ``root``.

    ``env`` is the environment for clients (``SLURM_CONF`` points at the generated config);
    :meth:`start` raises ``RuntimeError`` with the daemons' logs when the node does not come up
    idle; :meth:`stop` cancels every job, stops the daemons it started (and any job step daemon
    of this cluster) and removes ``root``.
    """

    def __init__(self, root: Path, min_job_age_s: int = 3600):
        self.root = Path(root)
        self.min_job_age_s = min_job_age_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.cpus = len(os.sched_getaffinity(0))
        # The node declares at least 64 GB (SlurmdParameters=config_overrides lets slurmd accept a
        # node description larger than the machine), so that the rules' real memory requests,
        # doubled on each retry, fit on any CI machine. Nothing enforces memory here (no cgroups):
        # SLURM only accounts it, which is what the test checks.
        self.mem_mb = max(int(_mem_mb() * 0.9), 65536)
        self.conf = self.root / "etc" / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        # bin/ holds an srun that knows this cluster's config: the executor's job step strips every
        # SLURM_* variable but the job's identity (SLURM_CONF too) from the environment of the srun
        # it starts inside the job, so srun would look for /etc/slurm/slurm.conf, which a real
        # cluster has and this test leaves alone.
        self.env["PATH"] = os.pathsep.join([str(self.root / "bin"), self.env.get("PATH", ""), "/usr/sbin", "/sbin"])

    # -- configuration
    def _write_config(self) -> None:
        r = self.root
        for d in ("etc", "munge", "state", "spool", "log", "run", "dev", "bin"):
            (r / d).mkdir(parents=True, exist_ok=True)
        srun = shutil.which("srun", path=os.environ.get("PATH", "") + ":/usr/bin")
        (r / "bin" / "srun").write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec "{srun}" "$@"\n')
        os.chmod(r / "bin" / "srun", 0o755)
        os.chmod(r / "munge", 0o711)  # munged wants the socket folder executable by all
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        # a device-like file for the fake GPU: slurmd stats File= and wants a character device
        self.gpu_dev = r / "dev" / "nvidia0"
        try:
            os.mknod(self.gpu_dev, 0o600 | 0o020000, os.makedev(195, 0))
        except OSError:  # no CAP_MKNOD: /dev/null is a character device too
            self.gpu_dev = Path("/dev/null")
        host = socket.gethostname().split(".")[0]
        self.munge_socket = r / "munge" / "munge.socket"
        self.conf.write_text("\n".join([
            "# generated by tests/test_slurm.py: a throw-away one-node cluster",
            "ClusterName=splatforge-test",
            f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SwitchType=switch/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "GresTypes=gpu",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            # finished jobs stay visible to squeue this long: the profile's status queries rely on it
            f"MinJobAge={self.min_job_age_s}",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} Gres=gpu:1 State=UNKNOWN",
            "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))
        (r / "etc" / "gres.conf").write_text(f"NodeName=localhost Name=gpu File={self.gpu_dev}\n")

    # -- daemons
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        log.close()

    def logs(self) -> str:
        """The tail of every daemon log (for failure messages)."""
        out = []
        for p in sorted((self.root / "log").glob("*")):
            out.append(f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:])
        return "\n".join(out)

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster."""
        r = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def start(self, timeout: float = 120) -> None:
        self._write_config()
        r = self.root
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={r / 'munge' / 'munge.key'}", f"--pid-file={r / 'run' / 'munged.pid'}",
                               f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munge' / 'munged.seed'}"])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged did not create its socket")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self.run("scontrol", "ping", check=False).stdout.count("UP") > 0, timeout,
                   "slurmctld did not answer scontrol ping")
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)])
        self._wait(lambda: self.node_state() in ("idle",), timeout, "the node did not become idle")

    def node_state(self) -> str:
        r = self.run("sinfo", "-h", "-N", "-o", "%T", check=False)
        return r.stdout.strip().lower()

    def _wait(self, ok, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}: {what}\n{self.logs()}")
            if ok():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} within {timeout:.0f} s\n{self.logs()}")

    def _step_daemons(self) -> list[int]:
        """PIDs of slurmstepd processes of this cluster (their environment names our SLURM_CONF)."""
        pids = []
        mark = f"SLURM_CONF={self.conf}".encode()
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                if not (d / "cmdline").read_bytes().startswith(b"slurmstepd"):
                    continue
                if mark in (d / "environ").read_bytes() or str(self.root).encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
        return pids

    def stop(self) -> None:
        """Cancel every job, stop the daemons started here, remove the cluster's state."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", "root", check=False)
            deadline = time.time() + 30
            while time.time() < deadline and self.run("squeue", "-h", "-t", "R,CG,PD", check=False).stdout.strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for pid in self._step_daemons():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------------------- fixtures and helpers
#: what a user's clone needs to run the workflow (the package itself is imported from PYTHONPATH)
WORKFLOW_FILES = ("Snakefile", "config.yaml", "rules", "scripts", "schemas", "envs", "profiles", "tests/workflow")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A running one-node SLURM; stopped (daemons and their state) after the module, also on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root to start slurmctld/slurmd/munged (and to apt-get install slurm-wlm munge)")
    why = ensure_slurm_installed()
    if why:
        pytest.skip(why)
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def copy_workflow(dest: Path) -> Path:
    """A copy of the workflow as a user's clone holds it, to run ``--profile profiles/slurm`` in."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in WORKFLOW_FILES:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, dest / rel, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / rel)
    return dest


def workflow_command(cluster: LocalSlurm, *extra: str) -> list[str]:
    """The README's SLURM command on the tiny config, with this node's core count as the thread cap.

    ``use_gpu=True`` gives training (and SIFT) the ``gpu`` resource, so the executor asks for
    ``--gpus=1``; status checks start after 5 s instead of the profile's 40 to keep the test short.
    """
    return [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--workflow-profile", "none",
            "--configfile", "tests/workflow/tiny.yaml", "--config", "use_gpu=True",
            "--max-threads", str(cluster.cpus), "--slurm-init-seconds-before-status-checks", "5",
            *extra, "results/scene.ply"]


def workflow_env(cluster: LocalSlurm) -> dict[str, str]:
    env = dict(cluster.env, GLOG_minloglevel="2")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def slurm_jobs(cluster: LocalSlurm) -> list[dict[str, str]]:
    """Every job the controller still knows (MinJobAge keeps finished ones): id, comment (the
    executor writes ``rule_RULE_wildcards_...``) and state."""
    r = cluster.run("squeue", "-h", "-t", "all", "-o", "%i|%k|%T", check=False)
    jobs = []
    for line in r.stdout.splitlines():
        jid, comment, state = (line.split("|") + ["", "", ""])[:3]
        jobs.append({"id": jid.strip(), "comment": comment.strip(), "state": state.strip()})
    return jobs


def rule_jobs(cluster: LocalSlurm, rule: str) -> list[dict[str, str]]:
    return [j for j in slurm_jobs(cluster) if re.match(rf"rule_{rule}(_wildcards|$)", j["comment"])]


def wait_for(what: str, ok, proc: subprocess.Popen, log: Path, timeout: float = 900):
    """Poll ``ok()`` until it returns something truthy; fail (with the run's log) if Snakemake exits first."""
    deadline = time.time() + timeout
    while True:
        value = ok()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {what}:\n" + log.read_text()[-6000:])
        if time.time() > deadline:
            pytest.fail(f"no {what} after {timeout:.0f} s:\n" + log.read_text()[-6000:])
        time.sleep(0.5)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# ---------------------------------------------------------------------------- the test
@pytest.mark.slow
def test_tiny_workflow_on_slurm_gpu_request_scancel_retry_and_rerun(slurm, tmp_path):
    """The tiny workflow through ``profiles/slurm`` on a real SLURM.

    1. The training job goes through sbatch with a GPU request (``--gpus=1``: ``TresPerJob=gres:gpu:1``
       in ``scontrol show job``), the rule's threads and memory; it is killed with
       ``scancel`` after its first checkpoint, and the executor resubmits it (retries: 2) with
       twice the memory, the retry resuming from that checkpoint.
    2. Snakemake itself is killed (SIGKILL, the login node going away) while the mesh export runs
       in SLURM, the orphaned job is cancelled, and the same command then completes: every output
       is valid, training is not redone (its metrics record the resume), the localrules ran
       outside SLURM.
    3. A third run has nothing to do.
    """
    from splatforge_core.io import read_json
    from splatforge_core.splat import read_splat_ply
    from splatforge_core.train.checkpoint import list_checkpoints

    wd = copy_workflow(tmp_path / "clone")
    env = workflow_env(slurm)
    cmd = workflow_command(slurm)
    ckpt_dir = wd / "work/scene/splat/checkpoints"
    log1 = tmp_path / "run1.log"

    # -- run 1: training through sbatch with a GPU, scancel'ed, retried; the run killed during export
    with open(log1, "w") as f:
        proc = subprocess.Popen(cmd, cwd=wd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        train = wait_for("training job running in SLURM",
                         lambda: next((j for j in rule_jobs(slurm, "train") if j["state"] == "RUNNING"), None),
                         proc, log1)
        show = slurm.run("scontrol", "show", "job", train["id"]).stdout
        assert re.search(r"TresPerJob=gres[:/]gpu:1", show), show
        assert re.search(r"NumCPUs=%d\b" % slurm.cpus, show), show  # threads -> --cpus-per-task (capped)
        assert re.search(r"MinMemoryNode=8000M", show), show  # the rule's mem_mb on attempt 1
        wait_for("training checkpoint", lambda: list_checkpoints(ckpt_dir), proc, log1)
        killed_at = int(list_checkpoints(ckpt_dir)[-1].stem.split("_")[1])
        slurm.run("scancel", train["id"])
        retry = wait_for("training job resubmitted after scancel",
                         lambda: next((j for j in rule_jobs(slurm, "train") if j["id"] != train["id"]), None),
                         proc, log1)
        retry_show = slurm.run("scontrol", "show", "job", retry["id"]).stdout
        assert re.search(r"MinMemoryNode=16000M", retry_show), retry_show  # attempt 2: twice the memory
        assert re.search(r"TresPerJob=gres[:/]gpu:1", retry_show), retry_show
        export = wait_for("mesh export running in SLURM",
                          lambda: next((j for j in rule_jobs(slurm, "export_mesh") if j["state"] == "RUNNING"), None),
                          proc, log1, timeout=1200)
    finally:
        _kill_group(proc)
    slurm.run("scancel", export["id"], check=False)  # what a user does for a run's orphaned jobs
    states = {j["id"]: j["state"] for j in slurm_jobs(slurm)}
    assert states[train["id"]] == "CANCELLED" and states[retry["id"]] == "COMPLETED", states
    assert not (wd / "results/scene.ply").exists()
    metrics = read_json(wd / "work/scene/splat/metrics.json")
    assert killed_at in metrics["resumed_from"], (killed_at, metrics["resumed_from"])

    # -- run 2: the same command completes what is left
    r = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=1800)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "rule train:" not in out and "localrule train:" not in out, "training ran again"
    # the cancelled export runs again (compress, submitted beside it, may have finished before the kill)
    assert "rule export_mesh:" in out
    for rule in ("report", "publish"):  # localrules: in the Snakemake process, not in SLURM
        assert f"localrule {rule}:" in out, rule
        assert not rule_jobs(slurm, rule)
    assert len([j for j in rule_jobs(slurm, "export_mesh") if j["state"] == "COMPLETED"]) == 1

    splat = read_splat_ply(wd / "results/scene.ply")
    assert splat["means"].shape[0] > 1000 and splat["means"].shape == (splat["means"].shape[0], 3)
    metrics = read_json(wd / "work/scene/splat/metrics.json")
    assert metrics["num_gaussians"] == splat["means"].shape[0]
    assert metrics["final_step"] == metrics["iterations"] and metrics["device"] == "cpu"  # no real GPU here
    comp = read_json(wd / "results/scene.compressed.json")
    assert comp["status"] == "ok" and comp["bitexact_roundtrip"] is True
    for suffix in ("_mesh.glb", "_mesh.obj", "_mesh.fbx", "_report/report.md"):
        assert (wd / f"results/scene{suffix}").stat().st_size > 0, suffix

    # -- run 3: nothing left to do
    again = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "Nothing to be done" in again.stdout + again.stderr
