#!/usr/bin/env python3
"""The README's picture of the caption page (docs/captions.png), taken as the tests see the page.

A stand-in daemon (the daemon's own socket server, fed by hand, as in tests/test_captions.py)
publishes an English final, a Chinese final and a partial with its settled and unsettled
parts; `edge-asr captions` serves them to Debian's headless Chromium at 1280x720.

    .venv/bin/python scripts/screenshot_captions.py [--out docs/captions.png]

Needs chromium, chromium-driver and fonts-noto-cjk.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the stand-in daemon, caption server and browser of the caption tests

from tests.test_captions import CaptionServer, FakeDaemon, config_dir, open_page, start_chromium, until  # noqa: E402

CONFIG = 'captions:\n  lines: 4\n  title: "Meeting room B · 会议室"\n'
ENGLISH = "Good morning, everyone. Let's start with the budget for the new meeting rooms."
CHINESE = "把会议室的灯打开"
PARTIAL, STABLE = "The projector on the third floor is", "The projector on the third"


def publish(daemon: FakeDaemon) -> None:
    """What the picture shows: two finished lines, and the line being spoken."""
    daemon.final(ENGLISH)
    daemon.final(CHINESE, language="zh")
    daemon.partial(PARTIAL, stable=STABLE)


def screenshot(out: Path, scratch: Path) -> None:
    daemon = FakeDaemon(scratch / "asr.sock")
    daemon.start()
    server = CaptionServer(config_dir(scratch / "captions", CONFIG), daemon.path)
    server.start()
    driver = start_chromium(scratch / "chromium")
    try:
        open_page(driver, server)
        publish(daemon)
        until(driver, "return document.querySelector('#partial .stable').textContent", STABLE)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
        server.stop()
        daemon.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "captions.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="easr-shot-", dir="/tmp") as scratch:  # AF_UNIX paths must be short
        screenshot(args.out.resolve(), Path(scratch))
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
