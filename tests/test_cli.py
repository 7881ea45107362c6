"""The `edge-asr` entry point itself: help, version, a reader that goes away."""

from __future__ import annotations

import subprocess
import sys

from edge.cli import COMMANDS
from tests.conftest import REPO


def _edge_asr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_help_lists_every_command_with_its_help_line() -> None:
    result = _edge_asr("--help")
    assert result.returncode == 0
    listing = result.stdout.split("COMMAND\n", 1)[1].split("options:")[0].split()
    for command, following in zip(COMMANDS, [*COMMANDS[1:], None]):
        start = listing.index(command) + 1
        end = listing.index(following) if following else len(listing)
        assert end - start >= 3, f"{command} has no help text"


def test_a_closed_pipe_is_not_a_traceback() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "edge", "backends", "--format", "json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    process.stdout.readline()
    process.stdout.close()  # like `| head -1`
    stderr = process.stderr.read()
    assert process.wait(60) in (0, 141)
    assert "Traceback" not in stderr
