"""The farm coordinator: one thread owning a CurveZMQ ROUTER socket (server key from the keys
folder, a ZAP authenticator accepting only ``workers/*.key``), the beacon sender, the job table
and the assignment. The executor plugin (``snakemake_executor_plugin_splatforge_farm``) and the
tests drive it through :meth:`Coordinator.submit`, :meth:`Coordinator.state` and
:meth:`Coordinator.cancel`; ``splatforge farm status`` reads the status file it keeps.

Job ids are idempotent: sha256 of the rule and its sorted targets, so submitting the same job
again returns the same id. Each offer carries an attempt counter; a result of an older attempt is
ignored. A worker silent for ``timeout_s`` is dropped and its job offered again (attempt + 1);
a result archive that fails a check is refused with a log line and the job offered again, up to
``max_attempts`` offers.

Checkpoints (resuming after a coordinator restart): a job may name a checkpoint folder
(:attr:`JobSpec.checkpoints`, relative to the working directory; the executor plugin uses the
folder ``checkpoints/`` beside the job's first output, where the trainer keeps its
``ckpt_*.pt``). While the job runs, the worker sends that folder's files back every
``checkpoint_s`` seconds when they changed (``checkpoint`` message: the names the folder holds
now, and an archive of those that are new or changed, chunks with sha256 like a result, the same
safe extraction; members must be announced files directly in that folder); the coordinator moves
each received file into the folder with an atomic rename, then removes the files no longer
named, so the folder always holds complete checkpoints. When the job is offered again (a restarted
Snakemake reruns the incomplete job, or another worker takes over) the folder's files go with its
inputs, and the trainer resumes from them (it checks their input fingerprint itself).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from ..errors import SplatForgeError
from . import archive, assign, beacon, protocol
from .keys import load_secret

log = logging.getLogger("splatforge.farm.coordinator")

STATUS_FILE = ".snakemake/farm/status.json"


def job_id(rule: str, targets: list[str]) -> str:
    """Idempotent id (16 hex digits) of a job: same rule and targets -> same id."""
    return hashlib.sha256(json.dumps([rule, sorted(targets)]).encode()).hexdigest()[:16]


@dataclass
class JobSpec:
    """What a worker needs to run one Snakemake job.

    rule: rule name (``--allowed-rules``); targets: declared outputs (relative paths, the
    Snakemake targets); extra: log and benchmark files (relative); inputs: input files or
    folders to ship (relative to the working directory); cores: ``--cores`` on the worker;
    cost: estimated work (units of a worker's measured speed x seconds); config: the run's
    config (shipped as JSON and given with ``--configfile``); checkpoints: the job's checkpoint
    folder (relative; "" for none), synced back while the job runs and shipped with its inputs.
    """

    rule: str
    targets: list[str]
    inputs: list[str]
    extra: list[str] = field(default_factory=list)
    cores: int = 1
    cost: float = 1.0
    config: dict = field(default_factory=dict)
    checkpoints: str = ""


@dataclass
class _Job:
    id: str
    spec: JobSpec
    state: str = "queued"  # queued | running | done | failed
    attempt: int = 0
    first_attempt: int = 1  # attempt of this submission's first offer (a resubmitted failed job keeps counting)
    worker: bytes | None = None
    message: str = ""
    assembly: archive.Assembly | None = None
    result: dict | None = None
    incoming: str = "result"  # what job.assembly receives: result | checkpoint
    checkpoint: dict | None = None  # header of the checkpoint being received
    started: float = 0.0
    t_result: float = 0.0
    t_submit: float = field(default_factory=time.monotonic)


@dataclass
class _Peer:
    ident: bytes
    key: str
    name: str = "?"
    capacity: dict = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    welcomed: bool = False
    job: str | None = None
    done: int = 0


def _rel_ok(p: str) -> bool:
    pp = PurePosixPath(p)
    return bool(p) and not pp.is_absolute() and ".." not in pp.parts


class Coordinator:
    """The coordinator thread (see module docstring). ``start()`` binds and returns the port."""

    def __init__(self, workdir: str | Path, keys_dir: str | Path, host: str = "*", port: int = 0,
                 workflow_root: str | Path | None = None, heartbeat_s: float = 1.0, timeout_s: float = 6.0,
                 max_attempts: int = 3, beacon_port: int | None = protocol.BEACON_PORT,
                 beacon_addr: str = "255.255.255.255", version: str | None = None,
                 max_members: int = archive.MAX_MEMBERS, max_bytes: int = archive.MAX_BYTES, checkpoint_s: float = 60.0):
        self.workdir = Path(workdir).resolve()
        self.keys_dir = Path(keys_dir)
        self.host, self.port = host, port
        self.workflow_root = Path(workflow_root).resolve() if workflow_root else self.workdir
        self.heartbeat_s, self.timeout_s, self.max_attempts = heartbeat_s, timeout_s, max_attempts
        self.beacon_port, self.beacon_addr = beacon_port, beacon_addr
        self.version = version or protocol.package_version()
        self.max_members, self.max_bytes = max_members, max_bytes
        self.checkpoint_s = float(checkpoint_s)
        self.code = protocol.code_hash()
        self.wf_files = protocol.workflow_files(self.workflow_root)
        if "Snakefile" not in self.wf_files:
            raise SplatForgeError(f"{self.workflow_root}: no Snakefile; the farm ships the workflow from this folder")
        self.wf_hash = protocol.tree_hash(self.workflow_root, self.wf_files)
        self.farm_dir = self.workdir / ".snakemake" / "farm"
        self._jobs: dict[str, _Job] = {}
        self._peers: dict[bytes, _Peer] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        #: coordinator-side seconds per job (packing + sending an offer; checking + installing a result), bytes and
        #: seconds of archive transfer
        self.stats = {"offer_s": [], "overhead_s": [], "bytes_in": 0, "bytes_out": 0, "transfer_s": 0.0, "checkpoints": 0}

    # -- public API (any thread) --------------------------------------------------------------

    def start(self) -> int:
        """Start the thread; returns the bound TCP port.

        Raises:
            SplatForgeError: the keys are missing or the socket cannot be bound.
        """
        load_secret(self.keys_dir / "coordinator.key_secret")
        if not (self.keys_dir / "workers").is_dir():
            raise SplatForgeError(f"{self.keys_dir}/workers: no worker keys folder; run `splatforge farm keys {self.keys_dir}`")
        self._thread = threading.Thread(target=self._run, name="farm-coordinator", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._error:
            raise SplatForgeError(f"farm coordinator could not start: {self._error}")
        return self.port

    def stop(self) -> None:
        """Stop the thread (running jobs are abandoned; workers see the coordinator go silent)."""
        self._stop.set()
        if self._thread:
            self._thread.join(10)

    def submit(self, spec: JobSpec) -> str:
        """Queue a job (idempotent: an already queued, running or done job is left as it is, a
        failed one is queued again); returns its id.

        Raises:
            SplatForgeError: a target, input or log path that is absolute or leaves the working directory.
        """
        for p in spec.targets + spec.inputs + spec.extra + ([spec.checkpoints] if spec.checkpoints else []):
            if not _rel_ok(p):
                raise SplatForgeError(f"{p}: farm jobs need paths relative to and inside the working directory {self.workdir}")
        jid = job_id(spec.rule, spec.targets)
        with self._lock:
            job = self._jobs.get(jid)
            if job is None or job.state == "failed":
                done = job.attempt if job else 0
                self._jobs[jid] = _Job(jid, spec, attempt=done, first_attempt=done + 1)
        return jid

    def state(self, jid: str) -> tuple[str, str]:
        """(state, message) of a job: queued, running, done or failed."""
        with self._lock:
            job = self._jobs[jid]
            return job.state, job.message

    def cancel(self, jid: str) -> None:
        """Forget a job; its worker is told to stop."""
        with self._lock:
            job = self._jobs.get(jid)
            if job and job.state in ("queued", "running"):
                job.state, job.message = "failed", "cancelled"

    def status(self) -> dict:
        """Snapshot: peers (name, capacity, job, jobs done, seconds since last heard) and jobs."""
        now = time.monotonic()
        with self._lock:
            return {
                "port": self.port,
                "peers": [{"name": p.name, "key": p.key[:8], "capacity": p.capacity, "job": p.job, "done": p.done,
                           "silent_s": round(now - p.last_seen, 1)} for p in self._peers.values() if p.welcomed],
                "jobs": [{"id": j.id, "rule": j.spec.rule, "targets": j.spec.targets, "state": j.state, "attempt": j.attempt,
                          "worker": self._peers[j.worker].name if j.worker in self._peers else None, "message": j.message}
                         for j in self._jobs.values()],
            }

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        ctx = zmq.Context()
        auth = None
        try:
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("splatforge.farm.auth"))
            auth.start()
            auth.configure_curve(domain="*", location=str(self.keys_dir / "workers"))
            pub, sec = load_secret(self.keys_dir / "coordinator.key_secret")
            sock = ctx.socket(zmq.ROUTER)
            sock.curve_secretkey, sock.curve_publickey, sock.curve_server = sec, pub, True
            sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_MSG_BYTES)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.SNDHWM, 0)
            sock.setsockopt(zmq.LINGER, 0)
            if self.port:
                sock.bind(f"tcp://{self.host}:{self.port}")
            else:
                self.port = sock.bind_to_random_port(f"tcp://{self.host}")
            mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                                          | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_DISCONNECTED)
            self._pub = pub
            bsock = beacon.sender(self.beacon_addr) if self.beacon_port else None
            log.info("farm coordinator on port %d (keys %s, workflow %s)", self.port, self.keys_dir, self.workflow_root)
        except Exception as e:  # reported by start()
            self._error = e
            self._ready.set()
            if auth:
                auth.stop()
            ctx.term()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(mon, zmq.POLLIN)
        last_hb = last_beacon = last_status = 0.0
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(100))
                if mon in events:
                    self._on_monitor(recv_monitor_message(mon))
                if sock in events:
                    for _ in range(256):
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_message(sock, frames)
                now = time.monotonic()
                if now - last_hb >= self.heartbeat_s:
                    last_hb = now
                    self._heartbeat(sock, now)
                if bsock and now - last_beacon >= 1.0:
                    last_beacon = now
                    try:
                        bsock.sendto(beacon.beacon_payload(self.port, pub), (self.beacon_addr, self.beacon_port))
                    except OSError as e:
                        log.debug("beacon not sent: %s", e)
                self._dispatch(sock)
                if now - last_status >= 1.0:
                    last_status = now
                    self._write_status()
        except Exception:
            log.exception("farm coordinator stopped by an error")
            raise
        finally:
            self._write_status()
            sock.disable_monitor()
            for s in (mon, sock):
                s.close(0)
            if bsock:
                bsock.close()
            auth.stop()
            ctx.term()

    def _write_status(self) -> None:
        try:
            self.farm_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.farm_dir / f".status.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({**self.status(), "written": time.time()}, indent=1))
            os.replace(tmp, self.farm_dir / "status.json")
        except OSError as e:
            log.debug("status file not written: %s", e)

    def _on_monitor(self, evt: dict) -> None:
        ev, addr = evt.get("event"), evt.get("endpoint", b"")
        addr = addr.decode(errors="replace") if isinstance(addr, bytes) else addr
        if ev == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            log.warning("farm: connection refused: CurveZMQ authentication failed (key not in %s/workers) [%s]",
                        self.keys_dir, addr)
        elif ev in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            log.warning("farm: connection refused: CurveZMQ handshake failed (not a farm worker, or a wrong "
                        "coordinator key) [%s]", addr)
        elif ev == zmq.EVENT_DISCONNECTED:
            log.info("farm: a connection closed (peer gone, or dropped for a message over MAXMSGSIZE=%d bytes) [%s]",
                     protocol.MAX_MSG_BYTES, addr)

    def _send(self, sock, ident: bytes, kind: str, payload: bytes | None = None, **fields) -> bool:
        try:
            sock.send_multipart([ident, *protocol.encode(kind, payload, **fields)], copy=False)
            return True
        except zmq.ZMQError as e:  # ROUTER_MANDATORY: the peer is gone
            log.info("farm: message %s to a gone peer not sent (%s)", kind, e)
            return False

    def _on_message(self, sock, frames) -> None:
        ident = bytes(frames[0].bytes)
        try:
            key = frames[-1].get("User-Id") or "?"
        except zmq.ZMQError:
            key = "?"
        peer = self._peers.get(ident)
        try:
            header, payload = protocol.decode([f.bytes for f in frames[1:]])
        except protocol.ProtocolError as e:
            log.warning("farm: message from %s refused: %s", peer.name if peer else f"key {key[:8]}", e)
            self._send(sock, ident, "refused", reason=f"protocol error: {str(e)[:300]}")
            if peer is not None:
                self._lose_peer(peer, f"protocol error: {e}")
            return
        kind = header["type"]
        if peer is None:
            if kind != "hello":
                log.warning("farm: %s message from key %s before hello: refused", kind, key[:8])
                self._send(sock, ident, "refused", reason=protocol.HELLO_FIRST)
                return
            reason = protocol.check_hello(header, self.version, self.code, self.wf_hash)
            if reason:
                log.warning("farm: worker %r (key %s) refused: %s", header["name"], key[:8], reason)
                self._send(sock, ident, "refused", reason=reason)
                return
            with self._lock:
                self._peers[ident] = _Peer(ident, key, header["name"], header["capacity"], welcomed=True)
            log.info("farm: worker %r joined (key %s, %s)", header["name"], key[:8], header["capacity"])
            self._send(sock, ident, "welcome", heartbeat_s=self.heartbeat_s)
            return
        peer.last_seen = time.monotonic()
        if kind == "heartbeat":
            return
        if kind == "result":
            self._on_result(sock, peer, header)
        elif kind == "checkpoint":
            self._on_checkpoint(sock, peer, header)
        elif kind == "chunk":
            self._on_chunk(sock, peer, header, payload)
        else:
            log.warning("farm: unexpected %s message from worker %r ignored", kind, peer.name)

    def _lose_peer(self, peer: _Peer, why: str) -> None:
        with self._lock:
            self._peers.pop(peer.ident, None)
            job = self._jobs.get(peer.job) if peer.job else None
            if job and job.state == "running" and job.worker == peer.ident:
                self._requeue(job, f"worker {peer.name!r} lost ({why})")

    def _requeue(self, job: _Job, why: str) -> None:
        """(lock held) Offer a job again, or fail it after max_attempts offers."""
        if job.assembly:
            job.assembly.close()
        job.assembly, job.worker = None, None
        if job.attempt - job.first_attempt + 1 >= self.max_attempts:
            job.state, job.message = "failed", f"{why}; gave up after {job.attempt - job.first_attempt + 1} attempts"
            log.error("farm: job %s (%s) failed: %s", job.id, job.spec.rule, job.message)
        else:
            job.state, job.message = "queued", why
            log.warning("farm: job %s (%s) attempt %d: %s; offered again", job.id, job.spec.rule, job.attempt, why)

    def _heartbeat(self, sock, now: float) -> None:
        for peer in list(self._peers.values()):
            if now - peer.last_seen > self.timeout_s:
                log.warning("farm: worker %r silent for %.1f s (timeout %.1f s): dropped", peer.name, now - peer.last_seen,
                            self.timeout_s)
                self._lose_peer(peer, f"silent for {now - peer.last_seen:.1f} s")
            else:
                self._send(sock, peer.ident, "heartbeat", job=peer.job)

    # -- offers ------------------------------------------------------------------------------

    def _dispatch(self, sock) -> None:
        with self._lock:
            for job in self._jobs.values():  # cancelled running jobs: tell the worker
                if job.state == "failed" and job.worker is not None:
                    peer = self._peers.get(job.worker)
                    if peer and peer.job == job.id:
                        self._send(sock, peer.ident, "cancel", job=job.id, attempt=job.attempt)
                        peer.job = None
                    job.worker = None
            queued = {j.id: max(j.spec.cost, 1e-6) for j in self._jobs.values() if j.state == "queued"}
            free = {p.ident: max(float(p.capacity.get("speed", 1.0)), 1e-6) for p in self._peers.values()
                    if p.welcomed and p.job is None}
        if not queued or not free:
            return
        plan = assign.assign(queued, free)
        for jid, ident in plan.items():
            self._offer(sock, self._jobs[jid], self._peers[ident])

    def _offer(self, sock, job: _Job, peer: _Peer) -> None:
        t0 = time.monotonic()
        with self._lock:
            job.attempt += 1
            job.state, job.worker, job.started, job.message = "running", peer.ident, t0, ""
            peer.job = job.id
        folder = self.farm_dir / job.id / str(job.attempt)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        try:
            stage = folder / "send"
            (stage / "wf").mkdir(parents=True)
            for rel in self.wf_files:
                dst = stage / "wf" / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(self.workflow_root / rel, dst)
            (stage / "farm_config.json").write_text(json.dumps(job.spec.config, default=str))
            tar = folder / "inputs.tar"
            # inputs are archived from the working directory, the workflow and config from the stage
            with tarfile.open(tar, "w", dereference=True) as t:
                for rel in ["wf", "farm_config.json"]:
                    t.add(stage / rel, arcname=rel)
                for rel in job.spec.inputs:
                    src = self.workdir / rel
                    if not src.exists():
                        raise SplatForgeError(f"{src}: input of job {job.id} ({job.spec.rule}) does not exist")
                    t.add(src, arcname=PurePosixPath(rel).as_posix())
                ckpts = archive.top_files(self.workdir / job.spec.checkpoints) if job.spec.checkpoints else []
                for name in ckpts:  # a restarted run resumes from what the last worker sent back
                    t.add(self.workdir / job.spec.checkpoints / name, arcname=f"{job.spec.checkpoints}/{name}")
            if ckpts:
                log.info("farm: job %s (%s): shipping checkpoint(s) %s with its inputs", job.id, job.spec.rule,
                         ", ".join(ckpts))
            shutil.rmtree(stage, ignore_errors=True)
            size, sha = os.path.getsize(tar), archive.file_sha256(tar)
        except (OSError, SplatForgeError) as e:
            with self._lock:
                job.state, job.message, job.worker, peer.job = "failed", f"inputs not packed: {e}", None, None
            log.error("farm: job %s: %s", job.id, job.message)
            return
        files = job.spec.targets + job.spec.extra
        ok = self._send(sock, peer.ident, "offer", job=job.id, attempt=job.attempt, rule=job.spec.rule,
                        targets=job.spec.targets, files=files, cores=int(job.spec.cores), size=size,
                        nchunks=archive.n_chunks(size), sha256=sha, checkpoints=job.spec.checkpoints,
                        checkpoint_s=self.checkpoint_s)
        t1 = time.monotonic()
        for seq, data, csha in archive.chunks(tar):
            ok = ok and self._send(sock, peer.ident, "chunk", data, job=job.id, attempt=job.attempt, seq=seq, sha256=csha)
        self.stats["bytes_out"] += size
        self.stats["transfer_s"] += time.monotonic() - t1
        tar.unlink()
        self.stats["offer_s"].append(time.monotonic() - t0)
        log.info("farm: job %s (%s %s) attempt %d -> worker %r (%d bytes in %.2f s)", job.id, job.spec.rule,
                 " ".join(job.spec.targets), job.attempt, peer.name, size, time.monotonic() - t0)
        if not ok:
            self._lose_peer(peer, "unreachable")

    # -- results -----------------------------------------------------------------------------

    def _current(self, peer: _Peer, header: dict) -> _Job | None:
        job = self._jobs.get(header["job"])
        if job is None or job.worker != peer.ident or job.attempt != header["attempt"] or job.state != "running":
            log.warning("farm: %s for job %s attempt %d from worker %r is stale or unknown: ignored", header["type"],
                        header["job"], header["attempt"], peer.name)
            return None
        return job

    def _on_result(self, sock, peer: _Peer, header: dict) -> None:
        job = self._current(peer, header)
        if job is None:
            return
        folder = self.farm_dir / job.id / str(job.attempt)
        if job.assembly:  # a checkpoint cut short (the worker sends each archive's chunks in a row)
            job.assembly.close()
        try:
            job.assembly = archive.Assembly(folder / "result.tar", header["size"], header["nchunks"], header["sha256"],
                                            max_bytes=self.max_bytes + (64 << 20))
            job.incoming = "result"
            job.result = header
            job.t_result = time.monotonic()
        except archive.ArchiveError as e:
            self._refuse_result(sock, peer, job, str(e))

    def _on_chunk(self, sock, peer: _Peer, header: dict, payload: bytes) -> None:
        job = self._current(peer, header)
        if job is None or job.assembly is None:
            if job is not None:
                log.warning("farm: chunk of job %s before its result header: ignored", job.id)
            return
        try:
            complete = job.assembly.add(header["seq"], payload)
        except archive.ArchiveError as e:
            self._refuse_result(sock, peer, job, str(e))
            return
        if complete:
            self.stats["bytes_in"] += job.assembly.size
            self.stats["transfer_s"] += time.monotonic() - job.t_result
            if job.incoming == "checkpoint":
                job.assembly = None
                self._install_checkpoint(sock, peer, job)
            else:
                self._install(sock, peer, job)

    def _on_checkpoint(self, sock, peer: _Peer, header: dict) -> None:
        job = self._current(peer, header)
        if job is None:
            return
        if not job.spec.checkpoints:
            self._refuse_result(sock, peer, job, "checkpoint sent for a job without a checkpoint folder")
            return
        if job.assembly:
            job.assembly.close()
        try:
            job.assembly = archive.Assembly(self.farm_dir / job.id / str(job.attempt) / "checkpoint.tar", header["size"],
                                            header["nchunks"], header["sha256"], max_bytes=self.max_bytes)
        except archive.ArchiveError as e:
            self._refuse_result(sock, peer, job, f"checkpoint: {e}")
            return
        job.incoming, job.checkpoint, job.t_result = "checkpoint", header, time.monotonic()

    def _install_checkpoint(self, sock, peer: _Peer, job: _Job) -> None:
        """Extract a complete checkpoint archive safely and mirror its files into the job's
        checkpoint folder (file by file with atomic renames; then the files no longer sent are removed)."""
        folder = self.farm_dir / job.id / str(job.attempt)
        tar, out = folder / "checkpoint.tar", folder / "checkpoint"
        rel = job.spec.checkpoints.rstrip("/")
        shutil.rmtree(out, ignore_errors=True)
        try:
            names = archive.safe_extract(tar, out, self.max_members, self.max_bytes)
            want = {f"{rel}/{n}" for n in job.checkpoint["files"]}
            if not names or not set(names) <= want or any("/" in n or n.startswith(".") for n in job.checkpoint["files"]):
                raise archive.ArchiveError(f"{tar}: members {names[:5]} are not the announced checkpoint files "
                                           f"{sorted(want)[:5]} directly in {rel}/")
        except archive.ArchiveError as e:
            self._refuse_result(sock, peer, job, f"checkpoint: {e}")
            return
        finally:
            tar.unlink(missing_ok=True)
        dest = self.workdir / rel
        dest.mkdir(parents=True, exist_ok=True)
        files = job.checkpoint["files"]
        received = [n.rsplit("/", 1)[1] for n in names]
        for name in received:
            os.replace(out / rel / name, dest / name)
        for name in archive.top_files(dest):
            if name not in files:
                (dest / name).unlink(missing_ok=True)
        shutil.rmtree(out, ignore_errors=True)
        self.stats["checkpoints"] += 1
        log.info("farm: job %s (%s): checkpoint %s from worker %r installed in %s (it holds %s)", job.id, job.spec.rule,
                 ", ".join(received), peer.name, dest, ", ".join(archive.top_files(dest)))

    def _refuse_result(self, sock, peer: _Peer, job: _Job, why: str) -> None:
        log.warning("farm: result of job %s (%s) attempt %d from worker %r refused: %s; worker dropped", job.id,
                    job.spec.rule, job.attempt, peer.name, why)
        if job.assembly:
            job.assembly.close()
        shutil.rmtree(self.farm_dir / job.id / str(job.attempt), ignore_errors=True)  # received archive and extraction
        with self._lock:  # a worker that sent a bad result is not trusted with the job again
            self._peers.pop(peer.ident, None)
            peer.job = None
            self._requeue(job, f"result refused: {why}")
        self._send(sock, peer.ident, "refused", reason=f"result of job {job.id} refused: {why[-300:]}")

    def _install(self, sock, peer: _Peer, job: _Job) -> None:
        """Extract a complete result safely and move the declared files into the working directory."""
        t0 = time.monotonic()
        folder = self.farm_dir / job.id / str(job.attempt)
        res = job.result
        try:
            names = archive.safe_extract(folder / "result.tar", folder / "result", self.max_members, self.max_bytes)
            allowed = job.spec.targets + job.spec.extra
            for n in names:
                if not any(n == a or n.startswith(a.rstrip("/") + "/") for a in allowed):
                    raise archive.ArchiveError(f"{folder / 'result.tar'}: member {n!r} is not a declared output, log or benchmark")
            if res["ok"]:
                missing = [t for t in job.spec.targets if not (folder / "result" / t).exists()]
                if missing:
                    raise archive.ArchiveError(f"{folder / 'result.tar'}: declared outputs missing: {missing}")
        except archive.ArchiveError as e:
            self._refuse_result(sock, peer, job, str(e))
            return
        for rel in allowed:
            src = folder / "result" / rel
            if not src.exists():
                continue
            dst = self.workdir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            os.replace(src, dst)
        shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            peer.job = None
            peer.done += 1
            job.worker = None
            if res["ok"]:
                job.state, job.message = "done", f"worker {peer.name!r}"
            else:
                job.state = "failed"
                job.message = f"worker {peer.name!r}: snakemake exit {res['returncode']}: {res['message']}"
        self.stats["overhead_s"].append(time.monotonic() - t0)
        log.info("farm: job %s (%s) %s on worker %r", job.id, job.spec.rule, job.state, peer.name)
