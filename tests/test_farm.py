"""LAN farm (issue #14), loopback only: a real coordinator (in this process), real workers
(``splatforge worker`` sub-processes with their own folders) running a real Snakemake job, and
hostile peers (ZeroMQ clients written here) that try to connect without or with a wrong key,
send oversized messages, or return hostile result archives. Every wait is bounded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from splatforge_core.farm import archive, assign, beacon, protocol
from splatforge_core.farm.coordinator import Coordinator, JobSpec
from splatforge_core.farm.keys import make_keys

REPO = Path(__file__).resolve().parent.parent

SNAKEFILE = """
rule slow:
    input: "work/in/{name}.txt"
    output: "work/out/{name}.txt"
    log: "work/logs/{name}.log"
    benchmark: "work/bench/{name}.tsv"
    shell: "sleep {config[sleep]}; (cat {input}; echo farmed) > {output}; echo ran > {log}"
"""


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Farm:
    """A coordinator on 127.0.0.1 in this process, a workflow folder and worker launchers."""

    def __init__(self, root: Path, **coord_kw):
        self.root = root
        self.keys = root / "keys"
        make_keys(self.keys, ["w1", "w2", "evil"])
        self.wf = root / "wf"
        (self.wf / "work" / "in").mkdir(parents=True)
        (self.wf / "Snakefile").write_text(SNAKEFILE)
        for n in "abcd":
            (self.wf / "work" / "in" / f"{n}.txt").write_text(f"input {n}\n")
        kw = {"heartbeat_s": 0.5, "timeout_s": 4.0, "beacon_port": None, **coord_kw}
        self.coord = Coordinator(self.wf, self.keys, host="127.0.0.1", **kw)
        self.port = self.coord.start()
        self.procs: list[subprocess.Popen] = []

    def worker(self, name: str, *extra: str, connect: bool = True) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "splatforge_core.cli", "worker", "--keys", str(self.keys / "workers" / f"{name}.key_secret"),
               "--server-key", str(self.keys / "coordinator.key"), "--workdir", str(self.root / name), "--name", name,
               "--heartbeat", "0.5", "--timeout", "6", "--cores", "1", *extra]
        if connect:
            cmd += ["--connect", f"tcp://127.0.0.1:{self.port}"]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        p = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             start_new_session=True, text=True)
        self.procs.append(p)
        return p

    def spec(self, name: str, sleep: float = 0.0) -> JobSpec:
        return JobSpec("slow", [f"work/out/{name}.txt"], [f"work/in/{name}.txt"], [f"work/logs/{name}.log", f"work/bench/{name}.tsv"],
                       cores=1, cost=1.0, config={"sleep": sleep})

    def peers(self) -> list[str]:
        return [p["name"] for p in self.coord.status()["peers"]]

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
        self.coord.stop()


@pytest.fixture(autouse=True)
def farm_logs_through_logging():
    """The in-process coordinator's records reach pytest only through its logging capture (the
    "Captured log" section, ``caplog``): the project's stderr handler, which an in-process
    ``splatforge`` command of an earlier test leaves on the ``splatforge`` logger
    (:func:`splatforge_core.log.setup_logging`), is detached for the test, so the coordinator
    thread's INFO lines are not also written as raw stderr text."""
    logger = logging.getLogger("splatforge")
    own = [h for h in logger.handlers if getattr(h, "_sf", False)]
    for h in own:
        logger.removeHandler(h)
    yield
    for h in own:
        logger.addHandler(h)


@pytest.fixture
def farm(tmp_path):
    f = Farm(tmp_path)
    yield f
    f.close()


def client(farm: Farm, key: str | None = "evil", server_key: bytes | None = None) -> zmq.Socket:
    """A DEALER to the coordinator: with the worker key ``key`` (None: no CurveZMQ at all)."""
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    if key is not None:
        pub, sec = zmq.auth.load_certificate(farm.keys / "workers" / f"{key}.key_secret") if key != "unlisted" else \
            zmq.curve_keypair()
        s.curve_secretkey, s.curve_publickey = sec, pub
        s.curve_serverkey = server_key or zmq.auth.load_certificate(farm.keys / "coordinator.key")[0]
    s.connect(f"tcp://127.0.0.1:{farm.port}")
    return s


def hello(s: zmq.Socket, version: str | None = None) -> None:
    s.setsockopt(zmq.SNDTIMEO, 3000)  # a DEALER blocks on send while no connection is up (refused peers)
    try:
        _send_hello(s, version)
    except zmq.Again:
        pass


def _send_hello(s: zmq.Socket, version: str | None) -> None:
    s.send_multipart(protocol.encode("hello", protocol=protocol.PROTOCOL, name="evil", version=version or protocol.package_version(),
                                     code_hash=protocol.code_hash(), workflow_hash="",
                                     capacity={"gpu": "", "gpu_mem_gb": 0.0, "cores": 1, "speed": 100.0}))


def recv(s: zmq.Socket, timeout_s: float) -> tuple[dict, bytes | None] | None:
    """The next message other than a heartbeat (None after timeout_s)."""
    end = time.monotonic() + timeout_s
    while (left := end - time.monotonic()) > 0:
        if not s.poll(int(left * 1000)):
            return None
        msg = protocol.decode(s.recv_multipart())
        if msg[0]["type"] != "heartbeat":
            return msg
    return None


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_authenticated_round_trip_with_beacon_discovery_and_status(tmp_path):
    """A worker that finds the coordinator by a loopback beacon runs a job; outputs, log and
    benchmark come back; `splatforge farm status` lists the worker and the job."""
    bport = free_port(socket.SOCK_DGRAM)
    f = Farm(tmp_path, beacon_port=bport, beacon_addr="127.255.255.255")
    try:
        f.worker("w1", "--beacon-port", str(bport), connect=False)
        jid = f.coord.submit(f.spec("a"))
        assert f.coord.submit(f.spec("a")) == jid  # idempotent id
        wait_for(lambda: f.coord.state(jid)[0] in ("done", "failed"), 90, "the job")
        assert f.coord.state(jid) == ("done", "worker 'w1'")
        assert (f.wf / "work/out/a.txt").read_text() == "input a\nfarmed\n"
        assert (f.wf / "work/logs/a.log").read_text() == "ran\n"
        assert (f.wf / "work/bench/a.tsv").read_text().startswith("s\t")
        time.sleep(1.2)  # the status file is rewritten every second
        out = subprocess.run([sys.executable, "-m", "splatforge_core.cli", "farm", "status", "--dir", str(f.wf)],
                             capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "w1" in out.stdout and jid in out.stdout and "done" in out.stdout
        assert not list((tmp_path / "w1" / "jobs").iterdir())  # the worker cleaned its job folder
    finally:
        f.close()


def test_beacon_on_loopback_broadcast_is_received(farm, tmp_path):
    bport = free_port(socket.SOCK_DGRAM)
    c = Coordinator(farm.wf, farm.keys, host="127.0.0.1", beacon_port=bport, beacon_addr="127.255.255.255")
    port = c.start()
    try:
        key = zmq.auth.load_certificate(farm.keys / "coordinator.key")[0]
        assert beacon.wait_for_coordinator(bport, key, 10.0) == ("127.0.0.1", port)
        # a beacon carrying another key is not followed
        assert beacon.wait_for_coordinator(bport, zmq.curve_keypair()[0], 2.5) is None
    finally:
        c.stop()


@pytest.mark.slow
def test_two_workers_share_jobs_and_a_killed_workers_job_finishes_on_the_other(farm):
    farm.worker("w1")
    farm.worker("w2")
    wait_for(lambda: len(farm.peers()) == 2, 60, "two workers")
    ids = [farm.coord.submit(farm.spec(n, sleep=6)) for n in "ab"]
    running = wait_for(lambda: [j for j in farm.coord.status()["jobs"] if j["state"] == "running" and j["worker"]]
                       if sum(j["state"] == "running" for j in farm.coord.status()["jobs"]) == 2 else None, 30, "both jobs running")
    assert {j["worker"] for j in running} == {"w1", "w2"}  # spread over the workers
    victim = running[0]
    proc = farm.procs[0] if victim["worker"] == "w1" else farm.procs[1]
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)  # the worker and its Snakemake, mid-job
    for jid in ids:
        wait_for(lambda: farm.coord.state(jid)[0] in ("done", "failed"), 90, f"job {jid}")
        assert farm.coord.state(jid)[0] == "done"
    jobs = {j["id"]: j for j in farm.coord.status()["jobs"]}
    assert jobs[victim["id"]]["attempt"] == 2
    assert farm.peers() == ["w2" if victim["worker"] == "w1" else "w1"]
    for n in "ab":
        assert (farm.wf / f"work/out/{n}.txt").read_text() == f"input {n}\nfarmed\n"


# -- refused peers ------------------------------------------------------------------------------


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_unauthenticated_client_is_refused(farm, caplog):
    caplog.set_level(logging.INFO, logger="splatforge.farm")
    s = client(farm, key=None)
    hello(s)
    assert recv(s, 3) is None
    wait_for(lambda: "handshake failed" in caplog.text, 5, "the refusal log line")
    assert farm.peers() == []
    s.close()


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_client_with_an_unlisted_key_is_refused(farm, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    s = client(farm, key="unlisted")
    hello(s)
    assert recv(s, 3) is None
    wait_for(lambda: "authentication failed" in caplog.text, 5, "the refusal log line")
    assert farm.peers() == []
    s.close()


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_worker_with_a_wrong_coordinator_key_never_joins(farm, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    s = client(farm, key="evil", server_key=zmq.curve_keypair()[0])
    hello(s)
    assert recv(s, 3) is None
    wait_for(lambda: "handshake failed" in caplog.text, 5, "the refusal log line")
    assert farm.peers() == []
    s.close()


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_oversized_message_drops_the_connection_and_the_coordinator_carries_on(farm, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    s = client(farm)
    hello(s)
    assert recv(s, 5)[0]["type"] == "welcome"
    s.send_multipart([b"x" * (protocol.MAX_MSG_BYTES + 1)])
    wait_for(lambda: "MAXMSGSIZE" in caplog.text, 5, "the drop log line")
    s.close()
    s2 = client(farm)
    hello(s2)
    assert recv(s2, 5)[0]["type"] == "welcome"  # still serving
    s2.close()


@pytest.mark.hostile(cls="farm", expect="clear_error")
@pytest.mark.parametrize("header", [b"{not json", b'{"type": "hello"}', b'{"type": "exec", "code": "rm -rf /"}',
                                    b"\x80\x04\x95pickle"], ids=["not_json", "missing_keys", "unknown_type", "pickle"])
def test_malformed_header_is_refused_with_a_log_line(farm, caplog, header):
    caplog.set_level(logging.INFO, logger="splatforge")
    s = client(farm)
    s.send_multipart([header])
    reply = recv(s, 5)
    assert reply is not None and reply[0]["type"] == "refused"
    assert "farm message" in caplog.text and "refused" in caplog.text
    assert farm.peers() == []
    s.close()


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_wrong_version_is_refused_with_a_clear_message(farm, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    s = client(farm)
    hello(s, version="99.0.0")
    reply = recv(s, 5)
    assert reply[0]["type"] == "refused" and "version '99.0.0'" in reply[0]["reason"]
    assert "refused: Splat Forge version '99.0.0'" in caplog.text
    assert farm.peers() == []
    s.close()


@pytest.mark.slow
@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_worker_with_another_workflow_exits_with_a_one_line_message(farm, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "Snakefile").write_text(SNAKEFILE + "\n# changed\n")
    p = farm.worker("w1", "--workflow", str(other))
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 1
    assert "workflow sources (Snakefile, rules/, scripts/) differ" in out and "Traceback" not in out


# -- hostile result archives ---------------------------------------------------------------------


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.devmajor, info.devminor = kind, link, 1, 3
    return info, None


HOSTILE = {
    "dotdot": (lambda: _tar([_file("work/out/a.txt", b"ok"), _file("../../escape.txt", b"x")]), "'..'"),
    "absolute": (lambda: _tar([_file("work/out/a.txt", b"ok"), _file("/tmp/escape.txt", b"x")]), "absolute"),
    "symlink": (lambda: _tar([_special("work/out/a.txt", tarfile.SYMTYPE, "../../../../escape.txt")]), "is a link"),
    "hardlink": (lambda: _tar([_special("work/out/a.txt", tarfile.LNKTYPE, "/etc/passwd")]), "is a link"),
    "device": (lambda: _tar([_special("work/out/a.txt", tarfile.CHRTYPE)]), "device or special file"),
    "fifo": (lambda: _tar([_special("work/out/a.txt", tarfile.FIFOTYPE)]), "device or special file"),
    "bomb_size": (lambda: _tar([_file("work/out/a.txt", b"\0" * (3 << 20))]), "tar bomb"),
    "bomb_members": (lambda: _tar([_file("work/out/a.txt", b"ok")] + [_file(f"work/logs/a.log/{i}", b"") for i in range(300)]),
                     "tar bomb"),
    "undeclared_file": (lambda: _tar([_file("work/out/a.txt", b"ok"), _file("work/in/a.txt", b"overwritten")]),
                        "not a declared output"),
    "missing_output": (lambda: _tar([_file("work/logs/a.log", b"log")]), "declared outputs missing"),
    "not_a_tar": (lambda: b"this is not a tar archive" * 50, "not a readable tar"),
}


def _hostile_result(farm: Farm, s: zmq.Socket, data: bytes, sha: str | None = None, chunk_sha: str | None = None):
    offer = recv(s, 10)
    assert offer and offer[0]["type"] == "offer"
    h = offer[0]
    for _ in range(h["nchunks"]):
        assert recv(s, 10)[0]["type"] == "chunk"
    s.send_multipart(protocol.encode("result", job=h["job"], attempt=h["attempt"], ok=True, returncode=0, message="",
                                     files=h["files"], size=len(data), nchunks=archive.n_chunks(len(data)),
                                     sha256=sha or hashlib.sha256(data).hexdigest()))
    for seq in range(archive.n_chunks(len(data))):
        piece = data[seq * protocol.CHUNK_BYTES:(seq + 1) * protocol.CHUNK_BYTES]
        frames = protocol.encode("chunk", piece, job=h["job"], attempt=h["attempt"], seq=seq,
                                 sha256=hashlib.sha256(piece).hexdigest())
        if chunk_sha:
            frames[0] = frames[0].replace(hashlib.sha256(piece).hexdigest().encode(), chunk_sha.encode())
        s.send_multipart(frames)
    return h


def _assert_refused_and_reoffered(farm: Farm, tmp_path: Path, h: dict, caplog, reason: str):
    wait_for(lambda: farm.coord.state(h["job"])[0] != "running", 10, "the refusal")
    state, message = farm.coord.state(h["job"])
    assert state == "queued" and "result refused" in message
    assert reason in message
    assert f"result of job {h['job']}" in caplog.text and reason in caplog.text
    # nothing outside the job folder, and no output installed
    assert not (farm.wf / "work/out/a.txt").exists()
    assert (farm.wf / "work/in/a.txt").read_text() == "input a\n"
    for p in (tmp_path / "escape.txt", farm.wf / "escape.txt", Path("/tmp/escape.txt"), farm.wf.parent.parent / "escape.txt"):
        assert not p.exists(), p
    assert not (farm.coord.farm_dir / h["job"] / "1" / "result").exists()


@pytest.mark.hostile(cls="farm", expect="clear_error")
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_result_archive_is_refused_and_the_job_offered_again(tmp_path, caplog, case):
    caplog.set_level(logging.INFO, logger="splatforge")
    farm = Farm(tmp_path, max_members=100, max_bytes=1 << 20)
    try:
        s = client(farm)
        hello(s)
        assert recv(s, 5)[0]["type"] == "welcome"
        farm.coord.submit(farm.spec("a"))
        make, reason = HOSTILE[case]
        h = _hostile_result(farm, s, make())
        _assert_refused_and_reoffered(farm, tmp_path, h, caplog, reason)
        s.close()
    finally:
        farm.close()


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_result_with_a_wrong_archive_checksum_is_refused(farm, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    s = client(farm)
    hello(s)
    assert recv(s, 5)[0]["type"] == "welcome"
    farm.coord.submit(farm.spec("a"))
    h = _hostile_result(farm, s, _tar([_file("work/out/a.txt", b"ok")]), sha="0" * 64)
    _assert_refused_and_reoffered(farm, tmp_path, h, caplog, "sha256 or size differs")
    s.close()


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_result_chunk_with_a_wrong_checksum_drops_the_worker(farm, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    s = client(farm)
    hello(s)
    assert recv(s, 5)[0]["type"] == "welcome"
    jid = farm.coord.submit(farm.spec("a"))
    _hostile_result(farm, s, _tar([_file("work/out/a.txt", b"ok")]), chunk_sha="f" * 64)
    wait_for(lambda: farm.coord.state(jid)[0] == "queued", 10, "the re-offer")
    assert "sha256 mismatch" in caplog.text and farm.peers() == []
    assert not (farm.wf / "work/out/a.txt").exists()
    s.close()


@pytest.mark.slow
@pytest.mark.hostile(cls="farm", expect="correct")
def test_job_refused_from_a_hostile_worker_completes_on_an_honest_one(farm, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    s = client(farm)
    hello(s)
    assert recv(s, 5)[0]["type"] == "welcome"
    jid = farm.coord.submit(farm.spec("a"))
    _hostile_result(farm, s, HOSTILE["dotdot"][0]())
    s.close()
    farm.worker("w1")
    wait_for(lambda: farm.coord.state(jid)[0] in ("done", "failed"), 90, "the honest worker")
    assert farm.coord.state(jid)[0] == "done"
    assert (farm.wf / "work/out/a.txt").read_text() == "input a\nfarmed\n"
    assert not (tmp_path / "escape.txt").exists()


# -- pure parts ----------------------------------------------------------------------------------


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_safe_extract_refuses_unsafe_members_and_leaves_no_folder(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(_tar([_file("ok.txt", b"1"), _special("link", tarfile.SYMTYPE, "/etc/passwd")]))
    with pytest.raises(archive.ArchiveError, match=r"bad\.tar: member 'link' is a link"):
        archive.safe_extract(bad, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tar"]


def test_pack_chunks_and_assembly_round_trip(tmp_path):
    (tmp_path / "src" / "d").mkdir(parents=True)
    (tmp_path / "src" / "d" / "big.bin").write_bytes(os.urandom(int(2.5 * protocol.CHUNK_BYTES)))
    size, sha = archive.pack(tmp_path / "src", ["d"], tmp_path / "a.tar")
    asm = archive.Assembly(tmp_path / "b.tar", size, archive.n_chunks(size), sha)
    done = [asm.add(seq, data) for seq, data, _ in archive.chunks(tmp_path / "a.tar")]
    assert done == [False, False, True]
    assert archive.safe_extract(tmp_path / "b.tar", tmp_path / "x") == ["d/big.bin"]
    assert (tmp_path / "x/d/big.bin").read_bytes() == (tmp_path / "src/d/big.bin").read_bytes()


def test_protocol_rejects_unknown_keys_wrong_kinds_and_oversized_chunks():
    ok = protocol.encode("heartbeat", job=None)
    assert protocol.decode(ok)[0] == {"type": "heartbeat", "job": None}
    for raw in [b'{"type":"heartbeat","job":null,"x":1}', b'{"type":"heartbeat","job":"../../etc"}', b'{"type":"heartbeat"}',
                b'[1,2]', b'{"type":"welcome","heartbeat_s":NaN}']:
        with pytest.raises(protocol.ProtocolError):
            protocol.decode([raw])
    big = b"x" * (protocol.CHUNK_BYTES + 1)
    hdr = json.dumps({"type": "chunk", "job": "0" * 16, "attempt": 1, "seq": 0, "sha256": hashlib.sha256(big).hexdigest()})
    with pytest.raises(protocol.ProtocolError, match="over"):
        protocol.decode([hdr.encode(), big])


def test_assignment_spreads_equal_jobs_and_gives_the_big_job_to_the_fast_worker():
    plan = assign.assign({"j1": 1.0, "j2": 1.0}, {"w1": 1.0, "w2": 1.0})
    assert sorted(plan) == ["j1", "j2"] and sorted(plan.values()) == ["w1", "w2"]
    plan = assign.assign({"small": 1.0, "big": 4.0}, {"slow": 1.0, "fast": 4.0})
    assert plan == {"big": "fast", "small": "slow"}
    # one job ready: the first free worker, fastest first (no LP)
    assert assign.assign({"j": 1.0}, {"slow": 1.0, "fast": 2.0}) == {"j": "fast"}
    # more jobs than workers: as many start as there are free workers
    assert len(assign.assign({f"j{i}": 1.0 for i in range(5)}, {"w1": 1.0, "w2": 1.0})) == 2


@pytest.mark.hostile(cls="farm", expect="clear_error")
def test_job_fails_with_a_clear_message_after_max_attempts_of_bad_results(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="splatforge")
    farm = Farm(tmp_path, max_attempts=2)
    try:
        jid = farm.coord.submit(farm.spec("a"))
        for _ in range(2):  # a refused worker is dropped: it comes back on a new connection
            s = client(farm)
            hello(s)
            assert recv(s, 5)[0]["type"] == "welcome"
            _hostile_result(farm, s, HOSTILE["symlink"][0]())
            wait_for(lambda: farm.coord.state(jid)[0] != "running", 10, "the refusal")
            s.close()
        state, message = farm.coord.state(jid)
        assert state == "failed" and "gave up after 2 attempts" in message and "is a link" in message
        assert "failed: result refused" in caplog.text
        # Snakemake's own retry submits it again: new offers, attempt numbers keep counting
        assert farm.coord.submit(farm.spec("a")) == jid and farm.coord.state(jid)[0] == "queued"
    finally:
        farm.close()
