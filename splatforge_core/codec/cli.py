"""``splatforge compress | decompress | info | bundle``: command-line front ends of :mod:`splatforge_core.codec`."""

from __future__ import annotations

import argparse
import json
import sys

from . import PLANNED, PRESETS, decompress, info, main


def _preset_help() -> str:
    lines = [f"  {k:<14} {'lossless' if v.lossless else 'lossy':<9} {v.description}" for k, v in PRESETS.items()]
    lines += [f"  {k:<14} {'planned':<9} {v}" for k, v in PLANNED.items()]
    return "presets:\n" + "\n".join(lines)


def cli_compress(argv: list[str]) -> int:
    """``splatforge compress --preset NAME IN OUT [--report FILE] [--option k=v ...]``.

    Prints the JSON report on stdout; returns 0 on success (errors propagate as
    SplatForgeError and the dispatcher turns them into exit code 1).
    """
    ap = argparse.ArgumentParser(
        prog="splatforge compress",
        description="Compress a 3DGS splat PLY.",
        epilog=_preset_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--preset", required=True, help="codec preset (see below)")
    ap.add_argument("--report", help="also write the JSON report to this file")
    ap.add_argument(
        "--option", "-o", action="append", default=[], metavar="KEY=VALUE",
        help="codec option (JSON value), e.g. -o zstd_level=9 -o evaluate_psnr=false",
    )
    ap.add_argument("input", help="input splat PLY (a bundle for presets that retrain: see `splatforge bundle`)")
    ap.add_argument("output", help="output file (.ply for qat-3dgs, .sfz for the others)")
    a = ap.parse_args(argv)
    opts = {}
    for kv in a.option:
        if "=" not in kv:
            ap.error(f"--option {kv!r}: expected KEY=VALUE")
        k, v = kv.split("=", 1)
        try:
            opts[k] = json.loads(v)
        except json.JSONDecodeError:
            opts[k] = v
    report = main(a.input, a.output, a.report, a.preset, opts)
    print(json.dumps(report, indent=2))
    return 0


def cli_decompress(argv: list[str]) -> int:
    """``splatforge decompress IN OUT``: restore the PLY; prints a JSON summary."""
    ap = argparse.ArgumentParser(prog="splatforge decompress", description="Restore a PLY compressed by splatforge.")
    ap.add_argument("input")
    ap.add_argument("output")
    a = ap.parse_args(argv)
    print(json.dumps(decompress(a.input, a.output), indent=2))
    return 0


def cli_info(argv: list[str]) -> int:
    """``splatforge info FILE [--json]``: print a splat PLY's (or codec output's) layout."""
    ap = argparse.ArgumentParser(prog="splatforge info", description="Print the layout of a splat PLY or codec output.")
    ap.add_argument("file")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    a = ap.parse_args(argv)
    d = info(a.file)
    if a.json:
        print(json.dumps(d, indent=2))
        return 0
    out = [f"{d['path']}", f"  format: {d['format']}", f"  codec: {d['codec'] or 'none (plain PLY)'}"]
    for e in d["elements"]:
        out.append(f"  element {e['name']} x {e['count']}: {len(e['properties'])} properties")
        out.append("    " + ", ".join(e["properties"]))
    out.append(f"  SH degree: {d.get('sh_degree')}")
    if d.get("constant_fields"):
        out.append(f"  constant fields (stored in the header): {', '.join(d['constant_fields'])}")
    if "body" in d:
        out.append(f"  body: {d['body']}")
    if "layout_problem" in d:
        out.append(f"  layout problem: {d['layout_problem']}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


def cli_bundle(argv: list[str]) -> int:
    """``splatforge bundle SCENE_OR_WORKDIR OUT [--max-side N] [--no-sparse] [--scaffold DIR]`` packs a scene into a
    bundle; ``splatforge bundle --check BUNDLE`` validates one (nothing left behind) and prints a
    summary. Both print JSON; errors propagate as SplatForgeError (exit code 1, one line)."""
    import tempfile

    from .bundle import MAX_BUNDLE_BYTES, open_bundle, pack_scene

    ap = argparse.ArgumentParser(
        prog="splatforge bundle",
        description="Pack a scene's splat, cameras and images into a bundle (.tar or .tar.gz) for the codec's "
                    "retraining presets, or check a bundle (--check).",
        epilog="A scene name is looked up in work/ (--work-root); a folder path is taken as the scene's work folder. "
               "Layout and checks: docs/formats.md, section Bundle.",
    )
    ap.add_argument("source", nargs="?", help="scene name or work folder (work/<scene>)")
    ap.add_argument("output", nargs="?", help="bundle to write: .tar (PNGs are compressed already) or .tar.gz")
    ap.add_argument("--max-side", type=int, default=None, help="longer image side in pixels (default: keep)")
    ap.add_argument("--no-sparse", action="store_true", help="leave out sparse/0 (the aligned COLMAP model)")
    ap.add_argument("--work-root", default="work", help="where scene names are looked up (default: work)")
    ap.add_argument("--scaffold", metavar="DIR", default=None,
                    help="pack this Scaffold-GS output folder (trained on the scene) instead of the 3DGS splat, for the "
                         "qat-bundle preset")
    ap.add_argument("--check", metavar="BUNDLE", help="only validate BUNDLE (3DGS or Scaffold-GS) and print a summary")
    ap.add_argument("--max-bytes", type=int, default=MAX_BUNDLE_BYTES,
                    help=f"--check: cap on the archive's size in bytes (default {MAX_BUNDLE_BYTES})")
    ap.add_argument("--work-dir", default=None,
                    help="--check: folder for the temporary extraction (default: the system's temporary folder)")
    a = ap.parse_args(argv)
    if a.check:
        if a.source or a.output:
            ap.error("--check takes the bundle only")
        with tempfile.TemporaryDirectory(prefix="splatforge-bundle-check-", dir=a.work_dir) as work:
            summary = open_bundle(a.check, work, max_bytes=a.max_bytes, kind="auto").summary()
        print(json.dumps({"status": "ok", **summary}, indent=2))
        return 0
    if not (a.source and a.output):
        ap.error("expected SCENE_OR_WORKDIR OUT (or --check BUNDLE)")
    if a.max_side is not None and a.max_side < 16:
        ap.error("--max-side must be at least 16")
    print(json.dumps(pack_scene(a.source, a.output, max_side=a.max_side, with_sparse=not a.no_sparse,
                                work_root=a.work_root, scaffold=a.scaffold), indent=2))
    return 0
