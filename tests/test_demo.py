"""The README's main job: `scripts/setup.sh` ends in scripts/demo.py, the daemon on a sample file."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import REPO


def test_the_demo_prints_what_a_subscriber_receives(int8_model_dir, eval_dir) -> None:
    run = subprocess.run([sys.executable, "scripts/demo.py"], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "connected: model whisper-tiny.en-int8" in run.stdout
    finals = re.findall(r"^\[\s*[\d.]+ -\s*[\d.]+\] (.+)$", run.stdout, flags=re.M)
    assert len(finals) >= 5 and any("country" in text for text in finals), run.stdout
    assert "Traceback" not in run.stderr


def test_without_the_eval_data_the_demo_runs_on_the_bundled_sample(int8_model_dir) -> None:
    """A fresh machine without ../shared/eval, as the README's set-up allows: the bundled espeak sample."""
    code = ("import sys; from pathlib import Path; sys.path.insert(0, 'scripts'); import demo; "
            "demo.EVAL_SAMPLE = Path('/nonexistent/longform_01.wav'); sys.argv = ['demo.py']; sys.exit(demo.main())")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"--source file:{REPO / 'edge/data/sample.wav'}" in run.stdout
    finals = " ".join(re.findall(r"^\[\s*[\d.]+ -\s*[\d.]+\] (.+)$", run.stdout, flags=re.M))
    assert "lazy dog" in finals and "without a network" in finals, run.stdout
