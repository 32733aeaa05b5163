"""CurveZMQ certificates of a farm (``splatforge farm keys DIR``).

Layout of DIR:

* ``coordinator.key`` / ``coordinator.key_secret``: the coordinator's pair. Every worker needs
  the public ``coordinator.key``; only the coordinator machine keeps the secret.
* ``workers/<name>.key`` / ``workers/<name>.key_secret``: one pair per worker. The coordinator
  accepts exactly the public keys in ``workers/`` (``*.key``); each worker machine gets its own
  ``.key_secret`` (which holds both halves).

Files are made by :func:`zmq.auth.create_certificates` (ZPL certificate format).
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq.auth

from ..errors import InputError


def make_keys(directory: str | Path, workers: list[str]) -> list[Path]:
    """Create the coordinator pair (if absent) and one pair per worker name (if absent);
    returns the files written. Secret files get mode 0600.

    Raises:
        InputError: a worker name that is not a plain file name.
    """
    d = Path(directory)
    (d / "workers").mkdir(parents=True, exist_ok=True)
    written = []
    todo = [(d, "coordinator")] + [(d / "workers", w) for w in workers]
    for folder, name in todo:
        if not name or "/" in name or name.startswith(".") or name != os.path.basename(name):
            raise InputError(f"{folder}: worker name {name!r} is not a plain file name")
        if (folder / f"{name}.key_secret").exists():
            continue
        pub, sec = zmq.auth.create_certificates(folder, name)
        os.chmod(sec, 0o600)
        written += [Path(pub), Path(sec)]
    return written


def load_secret(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) z85 keys of a ``.key_secret`` file.

    Raises:
        InputError: the file is missing or holds no secret key.
    """
    try:
        pub, sec = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read a CurveZMQ secret key ({e}); make one with `splatforge farm keys DIR`") from None
    if not sec:
        raise InputError(f"{path}: holds no secret key (a .key_secret file is needed)")
    return pub, sec


def load_public(path: str | Path) -> bytes:
    """The z85 public key of a ``.key`` (or ``.key_secret``) file.

    Raises:
        InputError: the file is missing or unreadable.
    """
    try:
        pub, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read a CurveZMQ public key ({e}); make one with `splatforge farm keys DIR`") from None
    return pub
