"""Farm wire protocol: every ZeroMQ message is one JSON header frame, plus one binary payload
frame for ``chunk`` messages. Headers are validated against :data:`SCHEMA` (types, sizes,
required keys, no unknown keys) before anything acts on them; nothing is unpickled or evaluated.

Message types (direction):

* ``hello`` (worker -> coordinator): name, package version, code and workflow hashes, capacity.
* ``welcome`` / ``refused`` (coordinator -> worker): the handshake's answer.
* ``heartbeat`` (both ways): liveness; the worker's says which job it is running.
* ``offer`` (coordinator -> worker): a job (id, attempt, rule, targets, cores, expected files, the
  job's checkpoint folder and how often to send it back) followed by ``chunk`` messages of its
  input archive.
* ``checkpoint`` (worker -> coordinator): while the job runs, the files of its checkpoint folder
  (when they changed), followed by ``chunk`` messages of their archive.
* ``result`` (worker -> coordinator): the job's outcome, followed by ``chunk`` messages of the
  result archive.
* ``chunk`` (both ways): one piece of an archive, with its sha256.
* ``cancel`` (coordinator -> worker): stop a job.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..errors import SplatForgeError

#: Protocol revision; a peer speaking another one is refused at the handshake.
PROTOCOL = 2
#: Archive chunk size (bytes). ZeroMQ drops a connection that sends a frame over MAXMSGSIZE.
CHUNK_BYTES = 1 << 20
#: Largest header frame accepted (bytes).
MAX_HEADER_BYTES = 64 << 10
#: ZMQ_MAXMSGSIZE set on every farm socket: one chunk plus slack (libzmq checks each frame).
MAX_MSG_BYTES = CHUNK_BYTES + MAX_HEADER_BYTES
#: Longest string value and list accepted in a header.
MAX_STR = 4096
MAX_LIST = 10000
#: Default UDP beacon port.
BEACON_PORT = 5557
#: ``refused`` reason for a message from a peer the coordinator has not welcomed: a worker that hears it
#: after it was welcomed talks to a restarted coordinator, and joins again.
HELLO_FIRST = "say hello first"

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_JOB_ID = re.compile(r"^[0-9a-f]{16}$")


class ProtocolError(SplatForgeError):
    """A message that breaks the farm protocol (malformed, oversized, unknown type or key)."""


def _capacity_ok(v) -> bool:
    return (isinstance(v, dict) and set(v) == {"gpu", "gpu_mem_gb", "cores", "speed"}
            and isinstance(v["gpu"], str) and len(v["gpu"]) <= 200
            and _is_num(v["gpu_mem_gb"]) and _is_int(v["cores"]) and v["cores"] >= 1
            and _is_num(v["speed"]) and v["speed"] > 0)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and -(1 << 53) < v < (1 << 53)


def _is_num(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and v == v and abs(v) < 1e300


def _str_list(v) -> bool:
    return isinstance(v, list) and len(v) <= MAX_LIST and all(isinstance(s, str) and 0 < len(s) <= MAX_STR for s in v)


_CHECKS = {
    "str": lambda v: isinstance(v, str) and len(v) <= MAX_STR,
    "int": lambda v: _is_int(v) and v >= 0,
    "num": _is_num,
    "bool": lambda v: isinstance(v, bool),
    "hex64": lambda v: isinstance(v, str) and bool(_HEX64.match(v)),
    "hash": lambda v: isinstance(v, str) and (v == "" or bool(_HEX64.match(v))),
    "job": lambda v: isinstance(v, str) and bool(_JOB_ID.match(v)),
    "job?": lambda v: v is None or (isinstance(v, str) and bool(_JOB_ID.match(v))),
    "strs": _str_list,
    "capacity": _capacity_ok,
}

#: Required keys and their kinds per message type (exactly these keys besides ``type``).
SCHEMA: dict[str, dict[str, str]] = {
    "hello": {"protocol": "int", "name": "str", "version": "str", "code_hash": "hex64", "workflow_hash": "hash",
              "capacity": "capacity"},
    "welcome": {"heartbeat_s": "num"},
    "refused": {"reason": "str"},
    "heartbeat": {"job": "job?"},
    "offer": {"job": "job", "attempt": "int", "rule": "str", "targets": "strs", "files": "strs", "cores": "int",
              "size": "int", "nchunks": "int", "sha256": "hex64", "checkpoints": "str", "checkpoint_s": "num"},
    "checkpoint": {"job": "job", "attempt": "int", "files": "strs", "size": "int", "nchunks": "int", "sha256": "hex64"},
    "result": {"job": "job", "attempt": "int", "ok": "bool", "returncode": "num", "message": "str", "files": "strs",
               "size": "int", "nchunks": "int", "sha256": "hex64"},
    "chunk": {"job": "job", "attempt": "int", "seq": "int", "sha256": "hex64"},
    "cancel": {"job": "job", "attempt": "int"},
}


def validate(header: dict) -> dict:
    """Check a decoded header against :data:`SCHEMA`; returns it.

    Raises:
        ProtocolError: unknown type, a missing or unknown key, or a value of the wrong kind.
    """
    if not isinstance(header, dict):
        raise ProtocolError("farm message: the header is not a JSON object")
    kind = header.get("type")
    if kind not in SCHEMA:
        raise ProtocolError(f"farm message: unknown type {str(kind)[:40]!r}")
    want = SCHEMA[kind]
    keys = set(header) - {"type"}
    if keys != set(want):
        missing, extra = sorted(set(want) - keys), sorted(keys - set(want))
        raise ProtocolError(f"farm message {kind!r}: missing keys {missing}, unknown keys {[k[:40] for k in extra][:5]}")
    for key, check in want.items():
        if not _CHECKS[check](header[key]):
            raise ProtocolError(f"farm message {kind!r}: key {key!r} is not a valid {check}")
    return header


def _reject_constant(name):
    raise ValueError(f"{name} is not allowed")


def encode(kind: str, payload: bytes | None = None, **fields) -> list[bytes]:
    """Frames of one message: the JSON header (validated) and, for chunks, the payload.

    Raises:
        ProtocolError: the fields do not match the schema of ``kind`` or the header is too big.
    """
    header = validate({"type": kind, **fields})
    raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"farm message {kind!r}: header of {len(raw)} bytes over {MAX_HEADER_BYTES}")
    if (kind == "chunk") != (payload is not None):
        raise ProtocolError(f"farm message {kind!r}: a payload goes with chunk messages only")
    return [raw] if payload is None else [raw, payload]


def decode(frames: list[bytes]) -> tuple[dict, bytes | None]:
    """Header and payload of a received message (frames without the ROUTER identity).

    Raises:
        ProtocolError: wrong frame count, header too big, not UTF-8 JSON, schema mismatch,
            or a chunk payload over :data:`CHUNK_BYTES` / whose sha256 differs from its header's.
    """
    if not 1 <= len(frames) <= 2:
        raise ProtocolError(f"farm message: {len(frames)} frames (1 header + at most 1 payload expected)")
    raw = bytes(frames[0])
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(f"farm message: header of {len(raw)} bytes over {MAX_HEADER_BYTES}")
    try:
        header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"farm message: header is not JSON ({str(e)[:80]})") from None
    validate(header)
    payload = bytes(frames[1]) if len(frames) == 2 else None
    if (header["type"] == "chunk") != (payload is not None):
        raise ProtocolError(f"farm message {header['type']!r}: payload frame where none belongs (or missing)")
    if payload is not None:
        if len(payload) > CHUNK_BYTES:
            raise ProtocolError(f"farm chunk of job {header['job']}: {len(payload)} bytes over {CHUNK_BYTES}")
        if hashlib.sha256(payload).hexdigest() != header["sha256"]:
            raise ProtocolError(f"farm chunk {header['seq']} of job {header['job']}: sha256 mismatch")
    return header, payload


# -- versions and source hashes ---------------------------------------------------------------

#: Workflow source files shipped with every job and hashed for the handshake (globs relative to
#: the workflow folder, the one holding the Snakefile).
WORKFLOW_GLOBS = ("Snakefile", "config.yaml", "rules/*.smk", "scripts/*.py", "schemas/*.yaml", "envs/*.yaml")


def workflow_files(root: str | Path) -> list[str]:
    """Relative paths (sorted, POSIX) of the workflow sources under ``root`` (see WORKFLOW_GLOBS)."""
    root = Path(root)
    out = set()
    for pattern in WORKFLOW_GLOBS:
        out.update(p.relative_to(root).as_posix() for p in root.glob(pattern) if p.is_file())
    return sorted(out)


def tree_hash(root: str | Path, relpaths: list[str]) -> str:
    """sha256 (hex) over the relative paths and contents of files under ``root``."""
    h = hashlib.sha256()
    for rel in relpaths:
        h.update(rel.encode() + b"\0")
        h.update(hashlib.sha256(Path(root, rel).read_bytes()).digest())
    return h.hexdigest()


def workflow_hash(root: str | Path | None) -> str:
    """Hash of the workflow sources under ``root`` ('' when ``root`` is None or has no Snakefile)."""
    if root is None or not Path(root, "Snakefile").is_file():
        return ""
    return tree_hash(root, workflow_files(root))


def code_hash() -> str:
    """Hash of the installed ``splatforge_core`` Python sources (what a worker would run)."""
    pkg = Path(__file__).resolve().parent.parent
    rel = sorted(p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    return tree_hash(pkg, rel)


def package_version() -> str:
    """``splatforge_core.__version__``."""
    from .. import __version__

    return str(__version__)


def check_hello(hello: dict, version: str, code: str, workflow: str) -> str | None:
    """Why a worker's ``hello`` is refused (None when accepted): protocol, package version,
    package code hash or, when the worker has a workflow of its own, workflow hash differ."""
    if hello["protocol"] != PROTOCOL:
        return f"farm protocol {hello['protocol']} != coordinator's {PROTOCOL}"
    if hello["version"] != version:
        return f"Splat Forge version {hello['version']!r} != coordinator's {version!r}: install the same version on both machines"
    if hello["code_hash"] != code:
        return "splatforge_core sources differ from the coordinator's (same version, other code): install the same commit"
    if hello["workflow_hash"] and workflow and hello["workflow_hash"] != workflow:
        return "workflow sources (Snakefile, rules/, scripts/) differ from the coordinator's: use the same checkout"
    return None
