"""UDP discovery beacons: the coordinator broadcasts ``SPLATFORGE-FARM 1 <port> <key z85>``
every second; a worker listening on the beacon port (5557 by default) connects to the sender's
address and port, but only if the key is the coordinator key it was given.
"""

from __future__ import annotations

import socket

MAGIC = b"SPLATFORGE-FARM"


def beacon_payload(port: int, server_key: bytes) -> bytes:
    """The datagram announcing a coordinator at ``port`` with CurveZMQ public key ``server_key``."""
    return b" ".join([MAGIC, b"1", str(int(port)).encode(), server_key])


def parse_beacon(data: bytes) -> tuple[int, bytes] | None:
    """(port, server key) of a beacon datagram, None for anything else."""
    parts = data.split(b" ")
    if len(parts) != 4 or parts[0] != MAGIC or parts[1] != b"1" or not parts[2].isdigit() or len(parts[3]) != 40:
        return None
    port = int(parts[2])
    return (port, parts[3]) if 0 < port < 65536 else None


def sender(broadcast: str) -> socket.socket:
    """A UDP socket allowed to broadcast (send to (``broadcast``, port) with sendto)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    return s


def listener(port: int, host: str = "") -> socket.socket:
    """A UDP socket bound to ``port`` (shared: several workers on one host all receive broadcasts)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    return s


def wait_for_coordinator(port: int, server_key: bytes, timeout_s: float, host: str = "") -> tuple[str, int] | None:
    """Listen for a beacon carrying ``server_key``; (address, zmq port) of its sender or None on timeout."""
    import time

    s = listener(port, host)
    try:
        end = time.monotonic() + timeout_s
        while (left := end - time.monotonic()) > 0:
            s.settimeout(min(left, 1.0))
            try:
                data, (addr, _) = s.recvfrom(512)
            except socket.timeout:
                continue
            parsed = parse_beacon(data)
            if parsed and parsed[1] == server_key:
                return addr, parsed[0]
        return None
    finally:
        s.close()
