"""One table of exit codes (issue 11 item 8): the README's table is generated from EXIT_CODES, every
library error maps into it, no command exits with a bare number, and a missing or non-bundle
``--bundle`` is exit 8 (BUNDLE) with one line, for every command that takes one."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import clca_edge.core.errors as errors
from clca_edge.cli import main
from clca_edge.core.errors import EXIT_CODES, ExitCode, exit_code_table

REPO = Path(__file__).resolve().parent.parent


def test_readme_table_is_the_generated_one():
    text = (REPO / "README.md").read_text()
    begin = text.index(errors.README_BEGIN) + len(errors.README_BEGIN) + 1
    assert text[begin:text.index(errors.README_END, begin)] == exit_code_table()
    assert subprocess.run([sys.executable, str(REPO / "scripts" / "exit_codes.py"), "--check"]).returncode == 0


def test_every_code_is_described_and_every_error_maps_to_a_code():
    assert set(EXIT_CODES) == set(ExitCode)
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, errors.ClcaEdgeError)]
    assert len(classes) > 10
    for cls in classes:
        assert cls.exit_code in EXIT_CODES, cls


def test_no_command_exits_with_a_bare_number():
    bare = re.compile(r"(sys\.exit|SystemExit)\(\s*\d+\s*\)")
    hits = [f"{p.relative_to(REPO)}:{i}" for p in (REPO / "clca_edge").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if bare.search(line)]
    assert not hits, hits


COMMANDS = [["predict", "x.png"], ["capture", "--source", "SRC", "--run-dir", "RUNS"], ["build-engine"]]


def _args(tmp_path, cmd):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    (src / "a.png").write_bytes(b"")
    return [a.replace("SRC", str(src)).replace("RUNS", str(tmp_path / "runs")) for a in cmd[1:]]


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_missing_bundle_is_exit_8_for_every_command(tmp_path, cmd):
    res = CliRunner().invoke(main, [cmd[0], "--bundle", str(tmp_path / "nosuchbundle"), *_args(tmp_path, cmd)])
    assert res.exit_code == ExitCode.BUNDLE, res.output
    assert "does not exist" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_a_file_that_is_not_a_tar_is_one_line(tmp_path, cmd):
    fake = tmp_path / "bundle.tar"
    fake.write_text("not an archive\n")
    res = CliRunner().invoke(main, [cmd[0], "--bundle", str(fake), *_args(tmp_path, cmd)])
    assert res.exit_code == ExitCode.BUNDLE, res.output
    errors_printed = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert errors_printed == [f"Error: {fake} is not a readable bundle archive (not a tar archive); pass a bundle "
                              "folder or the .tar that deploy wrote, or copy it again"]
    assert "Traceback" not in res.output and fake.read_text() == "not an archive\n"
