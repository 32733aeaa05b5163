"""``splatforge worker``: a farm worker. Connects (CurveZMQ client, DEALER) to a coordinator
given by address or found by UDP beacon, says hello (version, code and workflow hashes, capacity),
then runs one job at a time: the offered input archive is extracted safely into a private folder
``<workdir>/jobs/<job>-<attempt>/``, Snakemake runs there for exactly the job's targets
(``--allowed-rules <rule>``, ``--cores`` as offered, the shipped workflow and config) and the
targets, log and benchmark file go back as a result archive. Heartbeats both ways; a coordinator
silent for ``--timeout`` seconds is reconnected to (beacon or address again).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import zmq

from ..errors import InputError, SplatForgeError
from . import archive, beacon, protocol
from .keys import load_public, load_secret

log = logging.getLogger("splatforge.farm.worker")


def measure_speed(seconds: float = 0.3) -> float:
    """A speed number (GFLOP/s of float32 matrix products; on the GPU when torch sees one)."""
    import numpy as np

    n = 256
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    t0, count = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        a @ a
        count += 1
    return round(2 * n**3 * count / (time.perf_counter() - t0) / 1e9, 3)


def capacity(cores: int | None = None) -> dict:
    """{"gpu": model or "", "gpu_mem_gb": float, "cores": int, "speed": GFLOP/s} of this machine."""
    gpu, mem = "", 0.0
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            gpu, mem = props.name, round(props.total_memory / 2**30, 1)
    except Exception as e:  # torch missing or broken CUDA: a CPU worker
        log.debug("no GPU: %s", e)
    n = cores or len(os.sched_getaffinity(0))
    return {"gpu": gpu, "gpu_mem_gb": mem, "cores": int(n), "speed": max(measure_speed(), 1e-3)}


class Worker:
    """One worker (see module docstring); :meth:`run` loops until stopped or refused."""

    def __init__(self, workdir: str | Path, key_secret: str | Path, server_key: str | Path, connect: list[str] | None = None,
                 beacon_port: int = protocol.BEACON_PORT, name: str | None = None, cores: int | None = None,
                 workflow_root: str | Path | None = None, heartbeat_s: float = 1.0, timeout_s: float = 6.0,
                 max_jobs: int | None = None):
        self.workdir = Path(workdir).resolve()
        self.pub, self.sec = load_secret(key_secret)
        self.server_key = load_public(server_key)
        self.connect = list(connect or [])
        self.beacon_port = beacon_port
        self.name = name or os.uname().nodename
        self.capacity = capacity(cores)
        self.workflow_hash = protocol.workflow_hash(workflow_root)
        self.heartbeat_s, self.timeout_s = heartbeat_s, timeout_s
        self.max_jobs = max_jobs
        self.jobs_done = 0
        self.ctx = zmq.Context.instance()
        self.sock = None
        self.job = None  # dict: header, folder, assembly, proc

    # -- connection --------------------------------------------------------------------------

    def _endpoints(self) -> list[str]:
        if self.connect:
            return self.connect
        log.info("worker %s: waiting for a coordinator beacon on UDP port %d", self.name, self.beacon_port)
        while True:
            found = beacon.wait_for_coordinator(self.beacon_port, self.server_key, 10.0)
            if found:
                log.info("worker %s: coordinator found by beacon at %s:%d", self.name, *found)
                return [f"tcp://{found[0]}:{found[1]}"]

    def _open(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
        s = self.ctx.socket(zmq.DEALER)
        s.curve_secretkey, s.curve_publickey, s.curve_serverkey = self.sec, self.pub, self.server_key
        s.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MSG_BYTES)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.LINGER, 2000)
        s.setsockopt(zmq.SNDTIMEO, 10000)  # a DEALER blocks on send while no connection is up
        for ep in self._endpoints():
            s.connect(ep)
        self.sock = s
        self._send("hello", protocol=protocol.PROTOCOL, name=self.name, version=protocol.package_version(),
                   code_hash=protocol.code_hash(), workflow_hash=self.workflow_hash, capacity=self.capacity)
        self.last_heard = time.monotonic()
        self.welcomed = False

    def _send(self, kind: str, payload: bytes | None = None, **fields) -> None:
        try:
            self.sock.send_multipart(protocol.encode(kind, payload, **fields), copy=False)
        except zmq.Again:
            log.warning("worker %s: %s not sent: no connection to the coordinator (wrong coordinator key, or it is down)",
                        self.name, kind)

    def run(self) -> int:
        """Serve jobs until ``max_jobs`` are done (None: forever); 1 when refused by the coordinator.

        Raises:
            SplatForgeError: refused at the handshake (the coordinator's reason).
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._open()
        last_hb = 0.0
        try:
            while self.max_jobs is None or self.jobs_done < self.max_jobs:
                if self.sock.poll(100):
                    while True:
                        try:
                            frames = self.sock.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.last_heard = time.monotonic()
                        self._on_message(frames)
                self._poll_job()
                now = time.monotonic()
                if now - last_hb >= self.heartbeat_s:
                    last_hb = now
                    self._send("heartbeat", job=self.job["header"]["job"] if self.job else None)
                if now - self.last_heard > self.timeout_s:
                    log.warning("worker %s: coordinator silent for %.1f s: reconnecting", self.name, now - self.last_heard)
                    self._abandon_job("coordinator lost")
                    self._open()
        finally:
            self._abandon_job("worker stopping")
            if self.sock is not None:
                self.sock.close()
        return 0

    # -- messages ----------------------------------------------------------------------------

    def _on_message(self, frames) -> None:
        try:
            header, payload = protocol.decode(frames)
        except protocol.ProtocolError as e:
            log.warning("worker %s: message from the coordinator refused: %s", self.name, e)
            return
        kind = header["type"]
        if kind == "refused":
            raise SplatForgeError(f"worker {self.name}: refused by the coordinator: {header['reason']}")
        if kind == "welcome":
            self.welcomed = True
            log.info("worker %s: joined the farm (capacity %s)", self.name, self.capacity)
        elif kind == "offer":
            self._on_offer(header)
        elif kind == "chunk":
            self._on_chunk(header, payload)
        elif kind == "cancel":
            if self.job and self.job["header"]["job"] == header["job"]:
                self._abandon_job("cancelled by the coordinator")

    def _on_offer(self, header: dict) -> None:
        if self.job is not None:
            log.warning("worker %s: offer of job %s while busy with %s: ignored", self.name, header["job"],
                        self.job["header"]["job"])
            return
        folder = self.workdir / "jobs" / f"{header['job']}-{header['attempt']}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            asm = archive.Assembly(folder / "inputs.tar", header["size"], header["nchunks"], header["sha256"])
        except archive.ArchiveError as e:
            self._fail(header, folder, str(e))
            return
        self.job = {"header": header, "folder": folder, "assembly": asm, "proc": None, "t0": time.monotonic()}
        log.info("worker %s: job %s (%s) attempt %d offered", self.name, header["job"], header["rule"], header["attempt"])

    def _on_chunk(self, header: dict, payload: bytes) -> None:
        job = self.job
        if not job or job["header"]["job"] != header["job"] or job["header"]["attempt"] != header["attempt"] or not job["assembly"]:
            return
        try:
            if not job["assembly"].add(header["seq"], payload):
                return
            job["assembly"] = None
            archive.safe_extract(job["folder"] / "inputs.tar", job["folder"] / "run")
            (job["folder"] / "inputs.tar").unlink()
        except archive.ArchiveError as e:
            self._fail(job["header"], job["folder"], str(e))
            return
        self._start(job)

    # -- running -----------------------------------------------------------------------------

    def _start(self, job: dict) -> None:
        h = job["header"]
        run = job["folder"] / "run"
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", "wf/Snakefile", "--directory", str(run),
               "--cores", str(max(1, min(h["cores"], self.capacity["cores"]))), "--allowed-rules", h["rule"],
               "--configfile", "farm_config.json", "--nolock", "--rerun-triggers", "mtime", "--", *h["targets"]]
        env = dict(os.environ)
        logf = open(job["folder"] / "snakemake.log", "wb")
        job["proc"] = subprocess.Popen(cmd, cwd=run, stdout=logf, stderr=subprocess.STDOUT, env=env)
        job["logf"] = logf
        log.info("worker %s: job %s running: %s", self.name, h["job"], " ".join(cmd[3:]))

    def _poll_job(self) -> None:
        job = self.job
        if not job or not job.get("proc") or job["proc"].poll() is None:
            return
        rc = job["proc"].returncode
        job["logf"].close()
        h = job["header"]
        run = job["folder"] / "run"
        present = [f for f in h["files"] if (run / f).exists()]
        tail = ""
        if rc != 0:
            lines = (job["folder"] / "snakemake.log").read_text(errors="replace").strip().splitlines()
            tail = " | ".join(lines[-5:])[-1500:]
        self._send_result(h, job["folder"], rc == 0, rc, tail, present)

    def _send_result(self, h: dict, folder: Path, ok: bool, rc: int, message: str, present: list[str]) -> None:
        tar = folder / "result.tar"
        try:
            size, sha = archive.pack(folder / "run", present, tar)
        except (OSError, archive.ArchiveError) as e:
            ok, message, present = False, f"result not packed: {e}", []
            size, sha = archive.pack(folder / "run", [], tar)
        self._send("result", job=h["job"], attempt=h["attempt"], ok=ok, returncode=rc, message=message[:4000],
                   files=present, size=size, nchunks=archive.n_chunks(size), sha256=sha)
        for seq, data, csha in archive.chunks(tar):
            self._send("chunk", data, job=h["job"], attempt=h["attempt"], seq=seq, sha256=csha)
        log.info("worker %s: job %s %s (exit %s, %d bytes back, %.1f s)", self.name, h["job"], "done" if ok else "FAILED",
                 rc, size, time.monotonic() - self.job["t0"] if self.job else 0)
        shutil.rmtree(folder, ignore_errors=True)
        self.job = None
        self.jobs_done += 1

    def _fail(self, header: dict, folder: Path, why: str) -> None:
        log.warning("worker %s: job %s refused: %s", self.name, header["job"], why)
        (folder / "run").mkdir(exist_ok=True)
        self.job = {"header": header, "folder": folder, "t0": time.monotonic()}
        self._send_result(header, folder, False, -1, why, [])

    def _abandon_job(self, why: str) -> None:
        job, self.job = self.job, None
        if not job:
            return
        proc = job.get("proc")
        if proc and proc.poll() is None:
            proc.terminate()  # Snakemake stops its running job on SIGTERM
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if job.get("logf"):
            job["logf"].close()
        shutil.rmtree(job["folder"], ignore_errors=True)
        log.warning("worker %s: job %s abandoned (%s)", self.name, job["header"]["job"], why)


def cli(argv: list[str]) -> int:
    """``splatforge worker``: serve farm jobs (see module docstring)."""
    ap = argparse.ArgumentParser(prog="splatforge worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", required=True, type=Path,
                    help="this worker's .key_secret file (made by `splatforge farm keys DIR --worker NAME`)")
    ap.add_argument("--server-key", required=True, type=Path, help="the coordinator's public coordinator.key")
    ap.add_argument("--connect", action="append", default=[],
                    help="coordinator address tcp://HOST:PORT (repeatable); without it: UDP beacon discovery")
    ap.add_argument("--beacon-port", type=int, default=protocol.BEACON_PORT, help="UDP beacon port (default %(default)s)")
    ap.add_argument("--workdir", type=Path, default=Path("farm-worker"), help="private folder for jobs (default %(default)s)")
    ap.add_argument("--name", help="name shown by `splatforge farm status` (default: host name)")
    ap.add_argument("--cores", type=int, help="cores this worker offers (default: all it may use)")
    ap.add_argument("--workflow", type=Path,
                    help="this machine's Splat Forge checkout; refused when its workflow differs from the coordinator's")
    ap.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds of coordinator silence before reconnecting (default %(default)s; it is silent while packing big inputs)")
    ap.add_argument("--max-jobs", type=int, help="exit after this many jobs (tests, benchmarks)")
    a = ap.parse_args(argv)
    for p in (a.keys, a.server_key):
        if not p.is_file():
            raise InputError(f"{p}: key file not found; make keys with `splatforge farm keys DIR --worker NAME`")
    w = Worker(a.workdir, a.keys, a.server_key, a.connect, a.beacon_port, a.name, a.cores, a.workflow, a.heartbeat,
               a.timeout, a.max_jobs)
    return w.run()
