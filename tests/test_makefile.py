"""The Makefile's own logic, run in a scratch copy with stand-in interpreters (no venv built)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.pulumi_harness import REPO_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _scratch(tmp_path: Path) -> Path:
    for name in ("Makefile", "requirements.txt"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    return tmp_path


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def _make(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *arguments],
        cwd=directory,
        capture_output=True,
        text=True,
        check=False,
    )


def test_an_older_python_is_refused_with_the_fix_and_nothing_is_built(tmp_path: Path) -> None:
    project = _scratch(tmp_path)
    # Answers the version probe as Python 3.10 and fails the >= 3.11 check, as 3.10 would.
    old_python = _script(
        tmp_path / "python3.10",
        'case "$2" in *print*) echo 3.10 ;; *) exit 1 ;; esac',
    )

    finished = _make(project, "test", f"PYTHON={old_python}")

    assert finished.returncode == 2
    assert (
        f"make: Python 3.11 or newer is needed; '{old_python}' is Python 3.10. Install one and "
        "run e.g. 'make test PYTHON=python3.11'."
    ) in finished.stderr
    assert not (project / ".venv").exists()


def test_a_failing_command_reports_its_own_exit_code(tmp_path: Path) -> None:
    project = _scratch(tmp_path)
    (project / "stamp").touch()  # stands for an up-to-date venv
    driver = _script(tmp_path / "driver", "echo 'configuration error' >&2; exit 3")

    finished = _make(project, "plan", f"PY={driver}", "STAMP=stamp")

    assert finished.returncode == 2  # make's own status for any failure
    assert f"make: '{driver} -m deploy plan' exited 3" in finished.stderr
    assert "configuration error" in finished.stderr


def test_a_venv_made_by_another_python_is_rebuilt(tmp_path: Path) -> None:
    project = _scratch(tmp_path)
    # A stand-in Python 3.11: passes the checks, `-m venv DIR` copies itself in as DIR's
    # interpreter, and that copy accepts `-m pip install ...`.
    python = _script(
        tmp_path / "python3.11",
        'case "$1 $2" in\n'
        '  "-c "*print*) echo 3.11 ;;\n'
        '  "-m venv") mkdir -p "$3/bin" && cp "$0" "$3/bin/python" ;;\n'
        "esac",
    )
    (project / ".venv" / "bin").mkdir(parents=True)
    _script(project / ".venv" / "bin" / "python", 'case "$2" in *print*) echo 3.10 ;; esac')
    (project / ".venv" / "made-by-3.10").touch()

    finished = _make(project, "venv", f"PYTHON={python}")

    assert finished.returncode == 0, finished.stderr
    assert "make: .venv was made by another Python; rebuilding it with 3.11" in finished.stdout
    assert not (project / ".venv" / "made-by-3.10").exists()
    assert [p.name.split("-")[1] for p in (project / ".venv").glob(".installed-*")] == ["py3.11"]
