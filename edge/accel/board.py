"""What this box is: a Jetson, a Rockchip board with an NPU, or anything else, and which runtimes it has.

Detection only reads files and asks onnxruntime for its providers; every input
is injectable (`Probe`) so tests can pretend to be a Jetson or an RK3588.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

RKNN_SOCS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562")

@dataclass(frozen=True)
class Probe:
    """What the box has. `root` prefixes /proc, /etc and /usr/lib paths."""

    root: Path = Path("/")
    providers: tuple[str, ...] | None = None  # None: ask onnxruntime
    rknnlite: bool | None = None  # None: try to find the module

    def ort_providers(self) -> tuple[str, ...]:
        if self.providers is not None:
            return self.providers
        import onnxruntime

        return tuple(onnxruntime.get_available_providers())

    def has_rknnlite(self) -> bool:
        if self.rknnlite is not None:
            return self.rknnlite
        return importlib.util.find_spec("rknnlite") is not None

    def compatible(self) -> list[str]:
        """Device-tree `compatible` strings (NUL-separated), empty off ARM boards."""
        try:
            raw = (self.root / "proc/device-tree/compatible").read_bytes()
        except OSError:
            return []
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


@dataclass(frozen=True)
class Board:
    kind: str  # "jetson", "rockchip" or "other"
    soc: str = ""

    def describe(self) -> str:
        return {"jetson": "an NVIDIA Jetson", "rockchip": f"a Rockchip {self.soc.upper()}"}.get(self.kind, "not a Jetson or Rockchip board")


def detect_board(probe: Probe) -> Board:
    compatible = probe.compatible()
    if (probe.root / "etc/nv_tegra_release").exists() or any(c.startswith("nvidia,tegra") for c in compatible):
        return Board("jetson", next((c.split(",", 1)[1] for c in compatible if c.startswith("nvidia,tegra")), "tegra"))
    for entry in compatible:
        vendor, _, soc = entry.partition(",")
        if vendor == "rockchip" and soc.startswith("rk"):
            return Board("rockchip", soc)
    return Board("other")
