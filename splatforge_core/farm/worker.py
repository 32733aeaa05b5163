"""``splatforge worker``: a farm worker. Connects (CurveZMQ client, DEALER) to a coordinator
given by address or found by UDP beacon, says hello (version, code and workflow hashes, capacity),
then runs one job at a time: the offered input archive is extracted safely into a private folder
``<workdir>/jobs/<job>-<attempt>/``, Snakemake runs there for exactly the job's targets
(``--allowed-rules <rule>``, ``--cores`` as offered, the shipped workflow and config) and the
targets, log and benchmark file go back as a result archive. Heartbeats both ways; a coordinator
silent for ``--timeout`` seconds is reconnected to (beacon or address again).

Slots: one worker process serves one job per GPU (``--gpus 0,1``, or every GPU that
``nvidia-smi`` / torch reports when neither ``--gpus`` nor ``--slots`` is given), each job with
``CUDA_VISIBLE_DEVICES`` set to its slot's GPU, or ``--slots N`` jobs at once on a CPU-only machine.
Each slot is its own connection to the coordinator, named ``NAME/gpuI`` (``NAME/sI`` for CPU slots;
plain ``NAME`` for a single slot), with its own capacity (that GPU's model and memory when known,
the machine's cores shared out between the slots), so ``splatforge farm status`` lists slots.

Checkpoints: while a job runs, the files of the checkpoint folder named in its offer (the
trainer's ``checkpoints/``) that are new or changed (size or time) are sent back every
``checkpoint_s`` seconds (from the offer), with the names the folder holds, so a restarted
coordinator can resume the job from them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import threading
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


def detect_gpus() -> list[tuple[str, str, float]]:
    """(index, model, memory GiB) of each GPU that ``nvidia-smi`` (or else torch) reports; [] when none."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=20, check=True).stdout
            gpus = []
            for line in out.strip().splitlines():
                idx, name, mem = (f.strip() for f in line.split(",", 2))
                gpus.append((idx, name, round(float(mem) / 1024, 1)))  # MiB -> GiB
            return gpus
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            log.debug("nvidia-smi unusable: %s", e)
    try:
        import torch

        if torch.cuda.is_available():
            return [(str(i), torch.cuda.get_device_properties(i).name,
                     round(torch.cuda.get_device_properties(i).total_memory / 2**30, 1)) for i in range(torch.cuda.device_count())]
    except Exception as e:  # torch missing or broken CUDA: no GPU
        log.debug("no GPU: %s", e)
    return []


def slot_capacities(gpus: list[str] | None, slots: int | None, cores: int | None) -> list[tuple[str, dict, dict]]:
    """The job slots of this machine: (name suffix, capacity, environment of its jobs) each.

    Args:
        gpus: GPU indices (``--gpus``; ``CUDA_VISIBLE_DEVICES`` of each slot's jobs), None: when
            ``slots`` is None too, the worker's own ``CUDA_VISIBLE_DEVICES`` entries if it is set
            (the GPUs it was given), else every GPU detected.
        slots: number of CPU slots (``--slots``); with ``gpus`` it must equal their count.
        cores: cores of the whole machine offered (default: the CPUs this process may use),
            shared out evenly (at least 1 per slot).

    Raises:
        InputError: ``slots`` < 1, an empty or repeated GPU index, or ``slots`` != number of ``gpus``.
    """
    if slots is not None and slots < 1:
        raise InputError(f"splatforge worker: --slots {slots}: give at least 1")
    found = {idx: (name, mem) for idx, name, mem in (detect_gpus() if gpus or slots is None else [])}
    if gpus is None and slots is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:  # torch numbers the visible GPUs from 0; a job's variable must name the real one
            gpus = [g.strip() for g in visible.split(",") if g.strip()] or None
        else:
            gpus = sorted(found, key=lambda i: (len(i), i)) or None
    if gpus is not None:
        if not gpus or any(not g or "," in g for g in gpus) or len(set(gpus)) != len(gpus):
            raise InputError(f"splatforge worker: --gpus {','.join(gpus)}: give distinct GPU indices like 0,1")
        if slots is not None and slots != len(gpus):
            raise InputError(f"splatforge worker: --slots {slots} but {len(gpus)} GPUs in --gpus: one slot per GPU")
    n = len(gpus) if gpus else (slots or 1)
    total = cores or len(os.sched_getaffinity(0))
    speed = max(measure_speed(), 1e-3)
    out = []
    for i in range(n):
        cap = {"gpu": "", "gpu_mem_gb": 0.0, "cores": max(1, total // n), "speed": speed}
        if gpus:
            name, mem = found.get(gpus[i], ("", 0.0))
            cap.update(gpu=name, gpu_mem_gb=mem)
            out.append((f"gpu{gpus[i]}" if n > 1 else "", cap, {"CUDA_VISIBLE_DEVICES": gpus[i]}))
        else:
            out.append((f"s{i}" if n > 1 else "", cap, {}))
    return out


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
                 max_jobs: int | None = None, slot_capacity: dict | None = None, env: dict | None = None,
                 stop: threading.Event | None = None):
        self.workdir = Path(workdir).resolve()
        self.pub, self.sec = load_secret(key_secret)
        self.server_key = load_public(server_key)
        self.connect = list(connect or [])
        self.beacon_port = beacon_port
        self.name = name or os.uname().nodename
        self.capacity = slot_capacity or capacity(cores)
        self.env = dict(env or {})  # set for every job of this slot (CUDA_VISIBLE_DEVICES)
        self.stop = stop or threading.Event()
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
        while not self.stop.is_set():
            found = beacon.wait_for_coordinator(self.beacon_port, self.server_key, 10.0)
            if found:
                log.info("worker %s: coordinator found by beacon at %s:%d", self.name, *found)
                return [f"tcp://{found[0]}:{found[1]}"]
        raise _Stopped()

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
            while (self.max_jobs is None or self.jobs_done < self.max_jobs) and not self.stop.is_set():
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
        if kind == "refused" and header["reason"] == protocol.HELLO_FIRST and self.welcomed:
            log.warning("worker %s: the coordinator does not know this worker (restarted): joining again", self.name)
            self._abandon_job("coordinator restarted")
            self._open()
            return
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
        env = {**os.environ, **self.env}
        logf = open(job["folder"] / "snakemake.log", "wb")
        job["proc"] = subprocess.Popen(cmd, cwd=run, stdout=logf, stderr=subprocess.STDOUT, env=env)
        job["logf"] = logf
        try:  # checkpoints shipped with the job (a resumed run) are not sent back unchanged
            job["ckpt_sig"] = _signature(run / h["checkpoints"]) if h["checkpoints"] else None
        except OSError:
            job["ckpt_sig"] = None
        job["ckpt_t"] = time.monotonic()
        log.info("worker %s: job %s running%s: %s", self.name, h["job"],
                 "".join(f" {k}={v}" for k, v in self.env.items()), " ".join(cmd[3:]))

    def _poll_job(self) -> None:
        job = self.job
        if not job or not job.get("proc"):
            return
        if job["proc"].poll() is None:
            self._sync_checkpoint(job)
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

    def _sync_checkpoint(self, job: dict) -> None:
        """Send the job's checkpoint folder back when ``checkpoint_s`` passed and its files changed."""
        h = job["header"]
        now = time.monotonic()
        if not h["checkpoints"] or now - job["ckpt_t"] < h["checkpoint_s"]:
            return
        job["ckpt_t"] = now
        folder = job["folder"] / "run" / h["checkpoints"]
        try:
            sig = _signature(folder)
            names = [n for n, _, _ in sig]
            new = [n for n, size, mtime in sig if (n, size, mtime) not in (job["ckpt_sig"] or [])]
            if not new:  # nothing new (files only removed: the coordinator learns it with the next new one)
                return
            tar = job["folder"] / "checkpoint.tar"
            size, sha = archive.pack(job["folder"] / "run", [f"{h['checkpoints'].rstrip('/')}/{n}" for n in new], tar)
        except (OSError, archive.ArchiveError) as e:  # a checkpoint pruned while packing: next time
            log.info("worker %s: job %s: checkpoint not sent this time (%s)", self.name, h["job"], e)
            return
        self._send("checkpoint", job=h["job"], attempt=h["attempt"], files=names, size=size, nchunks=archive.n_chunks(size),
                   sha256=sha)
        for seq, data, csha in archive.chunks(tar):
            self._send("chunk", data, job=h["job"], attempt=h["attempt"], seq=seq, sha256=csha)
        tar.unlink()
        job["ckpt_sig"] = sig
        log.info("worker %s: job %s: checkpoint %s sent (%d bytes)", self.name, h["job"], ", ".join(new), size)

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


def _signature(folder: Path) -> list[tuple[str, int, int]]:
    """(name, size, mtime ns) of the files of a checkpoint folder (see archive.top_files)."""
    return [(n, (st := (folder / n).stat()).st_size, st.st_mtime_ns) for n in archive.top_files(folder)]


class _Stopped(Exception):
    """Another slot of this worker stopped (refused): this one stops too."""


def run_slots(workers: list[Worker]) -> int:
    """Run the slots' loops in threads until all end; the first refusal stops every slot.

    Raises:
        SplatForgeError: a slot was refused by the coordinator (its reason).
    """
    if len(workers) == 1:
        return workers[0].run()
    errors: list[BaseException] = []

    def serve(w: Worker) -> None:
        try:
            w.run()
        except _Stopped:
            pass
        except BaseException as e:  # reported by the main thread
            errors.append(e)
            for other in workers:
                other.stop.set()

    threads = [threading.Thread(target=serve, args=(w,), name=f"slot-{w.name}", daemon=True) for w in workers]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        for w in workers:
            w.stop.set()
        for t in threads:
            t.join(15)
        raise
    if errors:
        raise errors[0]
    return 0


def _gpu_list(text: str) -> list[str]:
    return [g.strip() for g in text.split(",")]


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
    ap.add_argument("--cores", type=int, help="cores this worker offers, shared out between its slots (default: all it may use)")
    ap.add_argument("--gpus", type=_gpu_list,
                    help="GPU indices, one job slot each with CUDA_VISIBLE_DEVICES set to it, e.g. 0,1 "
                         "(default: every GPU nvidia-smi or torch reports; none: one CPU slot)")
    ap.add_argument("--slots", type=int, help="jobs run at once on a CPU-only machine (default 1, or one per GPU)")
    ap.add_argument("--workflow", type=Path,
                    help="this machine's Splat Forge checkout; refused when its workflow differs from the coordinator's")
    ap.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats (default %(default)s)")
    ap.add_argument("--timeout", type=float, default=30.0,
                    help="seconds of coordinator silence before reconnecting (default %(default)s; it is silent while packing big inputs)")
    ap.add_argument("--max-jobs", type=int, help="each slot exits after this many jobs (tests, benchmarks)")
    a = ap.parse_args(argv)
    for p in (a.keys, a.server_key):
        if not p.is_file():
            raise InputError(f"{p}: key file not found; make keys with `splatforge farm keys DIR --worker NAME`")
    name = a.name or os.uname().nodename
    workers = [Worker(a.workdir, a.keys, a.server_key, a.connect, a.beacon_port, f"{name}/{suffix}" if suffix else name,
                      cap["cores"], a.workflow, a.heartbeat, a.timeout, a.max_jobs, slot_capacity=cap, env=env)
               for suffix, cap, env in slot_capacities(a.gpus, a.slots, a.cores)]
    return run_slots(workers)
