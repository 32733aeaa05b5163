"""The console of a rule: our log records on the console, native libraries' output in the log file."""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import pytest

from splatforge_core.errors import InputError
from splatforge_core.workflow import native_stderr_to, run_stage


def test_native_stderr_goes_to_the_log_file(tmp_path, capfd):
    """COLMAP's glog (fd 2) lands in the log file; Python's stderr stays on the console."""
    import pycolmap

    log = tmp_path / "rule.log"
    with native_stderr_to(log):
        pycolmap.logging.warning("glog line from COLMAP")
        os.write(2, b"raw fd-2 line\n")
        print("python stderr line", file=sys.stderr)
    print("after the context", file=sys.stderr)
    os.write(2, b"fd 2 restored\n")
    _, err = capfd.readouterr()
    text = log.read_text()
    assert "glog line from COLMAP" in text and "raw fd-2 line" in text
    assert "glog line from COLMAP" not in err and "raw fd-2 line" not in err
    assert "python stderr line" in err and "python stderr line" not in text
    assert "after the context" in err and "fd 2 restored" in err


def _smk(tmp_path, monkeypatch, rule="demo_rule"):
    """A rule's ``snakemake`` object as run_stage reads it, in a working directory of its own
    (run_stage refuses log and output paths outside work/ and results/)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir(exist_ok=True)
    return SimpleNamespace(output=[], log=["work/rule.log"], rule=rule)


def test_stage_error_is_one_line_without_traceback(tmp_path, capfd, monkeypatch):
    """A SplatForgeError ends the rule with exit status 1: its message on the console and in the log."""

    def fail(_module):
        raise InputError("/photos/a.jpg: not a JPEG file; remove it or convert it")

    with pytest.raises(SystemExit) as e:
        run_stage(_smk(tmp_path, monkeypatch), sys.modules[__name__], fail)
    assert e.value.code == 1
    _, err = capfd.readouterr()
    assert "/photos/a.jpg: not a JPEG file" in err and "Traceback" not in err
    assert "/photos/a.jpg: not a JPEG file" in (tmp_path / "work" / "rule.log").read_text()


def test_bug_keeps_its_traceback_in_the_log_file(tmp_path, capfd, monkeypatch):
    """An unexpected exception (a bug) propagates; its traceback is kept in the rule's log file."""

    def bug(_module):
        return {}["missing"]

    with pytest.raises(KeyError):
        run_stage(_smk(tmp_path, monkeypatch), sys.modules[__name__], bug)
    text = (tmp_path / "work" / "rule.log").read_text()
    assert "Traceback" in text and "KeyError" in text
