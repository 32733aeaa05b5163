"""``splatforge farm keys DIR [--worker NAME ...]`` and ``splatforge farm status [--dir DIR]``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import InputError
from .coordinator import STATUS_FILE
from .keys import make_keys


def format_status(doc: dict, age_s: float) -> str:
    """Human-readable text of a coordinator status document (see Coordinator.status)."""
    lines = [f"coordinator port {doc.get('port')} (status written {age_s:.0f} s ago)", "peers:"]
    for p in doc.get("peers", []):
        c = p.get("capacity", {})
        gpu = f"{c.get('gpu')} {c.get('gpu_mem_gb')} GB" if c.get("gpu") else "no GPU"
        lines.append(f"  {p['name']:<16} key {p['key']}  {gpu}, {c.get('cores')} cores, speed {c.get('speed')}  "
                     f"running {p.get('job') or '-'}  done {p.get('done')}  heard {p.get('silent_s')} s ago")
    if not doc.get("peers"):
        lines.append("  (none)")
    lines.append("jobs:")
    for j in doc.get("jobs", []):
        lines.append(f"  {j['id']} {j['rule']:<14} {j['state']:<8} attempt {j['attempt']} worker {j.get('worker') or '-'}"
                     f"  {' '.join(j['targets'])}  {j.get('message') or ''}")
    if not doc.get("jobs"):
        lines.append("  (none)")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    """``splatforge farm``: keys and status sub-commands."""
    ap = argparse.ArgumentParser(prog="splatforge farm", description="LAN farm keys and status")
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("keys", help="make CurveZMQ certificates: DIR/coordinator.key(_secret), DIR/workers/NAME.key(_secret)")
    k.add_argument("dir", type=Path)
    k.add_argument("--worker", action="append", default=[], help="worker name (repeatable; default: worker1)")
    s = sub.add_parser("status", help="peers, their capacity and jobs of the coordinator running in DIR")
    s.add_argument("--dir", type=Path, default=Path("."), help="the coordinator's working directory (default: .)")
    s.add_argument("--json", action="store_true", help="print the status document as JSON")
    a = ap.parse_args(argv)
    if a.cmd == "keys":
        written = make_keys(a.dir, a.worker or ["worker1"])
        for p in written:
            print(p)
        print(f"give each worker its workers/NAME.key_secret and {a.dir}/coordinator.key; keep coordinator.key_secret here")
        return 0
    path = a.dir / STATUS_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: no farm status ({e.__class__.__name__}); "
                         f"is a run with --profile profiles/lan going in {a.dir}?") from None
    print(json.dumps(doc, indent=1) if a.json else format_status(doc, time.time() - doc.get("written", time.time())))
    return 0
