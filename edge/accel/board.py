"""What this box is: a Jetson, a Rockchip board with an NPU, or anything else, and which runtimes it has.

Detection only reads files and asks onnxruntime for its providers; every input
is injectable (`Probe`) so tests can pretend to be a Jetson or an RK3588.
"""

from __future__ import annotations

import ctypes
import errno
import importlib.util
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path

RKNN_SOCS = ("rk3588", "rk3576", "rk3568", "rk3566", "rk3562")
# The device nodes each accelerator opens (globs under /dev): a Jetson's nvhost/nvmap (a discrete
# GPU's nvidia*), the RK3588 NPU as a DRM render node or, on older vendor kernels, /dev/rknpu.
_NVIDIA_NODES = ("nvhost-ctrl", "nvhost-ctrl-gpu", "nvmap", "nvhost-gpu", "nvidiactl", "nvidia[0-9]*", "nvidia-uvm")
DEVICE_NODES = {"cuda": _NVIDIA_NODES, "tensorrt": _NVIDIA_NODES, "rknn": ("rknpu", "dri/renderD*")}
# Backends whose nodes are alternatives, one of which is the device: the NPU is /dev/rknpu or a render
# node, and a Mali GPU's render node beside it stays closed under the documented DeviceAllow=/dev/rknpu.
ANY_NODE_WILL_DO = ("rknn",)
PROVIDER_LIBRARIES = {
    "CUDAExecutionProvider": "libonnxruntime_providers_cuda.so",
    "TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so",
}

@dataclass(frozen=True)
class Probe:
    """What the box has. `root` prefixes /proc, /etc and /usr/lib paths."""

    root: Path = Path("/")
    providers: tuple[str, ...] | None = None  # None: ask onnxruntime
    rknnlite: bool | None = None  # None: try to find the module
    # (provider, why its library cannot load) pairs; None: load them, unless `providers` is injected too
    missing_libraries: tuple[tuple[str, str], ...] | None = None
    closed_nodes: tuple[str, ...] | None = None  # device nodes this process may not open; None: try them

    def unopenable_nodes(self, backend: str) -> list[str]:
        """The backend's device nodes that exist but that this process may not open ("/dev/nvmap (Operation
        not permitted)"): under the unit, DevicePolicy=closed refuses every node no drop-in allows, and an
        accelerator then failed to start with a message about its libraries."""
        if self.closed_nodes is not None:
            return list(self.closed_nodes)
        return [f"{name} ({problem})" for name, node in self._present_nodes(backend) if (problem := _open_problem(node))]

    def _present_nodes(self, backend: str) -> list[tuple[str, Path]]:
        """The backend's device nodes on this box: (/dev name, path under `root`)."""
        dev = self.root / "dev"
        return [(f"/dev/{node.relative_to(dev)}", node)
                for pattern in DEVICE_NODES.get(backend, ()) for node in sorted(dev.glob(pattern))]

    def denies(self, backend: str, closed: list[str] | None = None) -> bool:
        """True when this process may not reach the backend's device at all: any node closed, or for
        ANY_NODE_WILL_DO every one of the device's own (every one there is, where sysfs does not tell
        which render node is the NPU's). A start that fails so is a setup problem, not a restart's.
        `closed`: `unopenable_nodes(backend)` when the caller has it already (no second open of each node)."""
        closed = self.unopenable_nodes(backend) if closed is None else closed
        if not closed or backend not in ANY_NODE_WILL_DO:
            return bool(closed)
        own = self._npu_nodes() or [name for name, _ in self._present_nodes(backend)]
        return all(any(entry.startswith(node + " ") for entry in closed) for node in own)

    def _npu_nodes(self) -> list[str]:
        """/dev/rknpu, and the render nodes whose driver sysfs names rknpu (not a Mali GPU's beside them)."""
        nodes = ["/dev/rknpu"] if (self.root / "dev/rknpu").exists() else []
        for card in sorted((self.root / "sys/class/drm").glob("renderD*")):
            driver = card / "device" / "driver"
            if driver.exists() and "rknpu" in os.path.realpath(driver):
                nodes.append(f"/dev/dri/{card.name}")
        return nodes

    def ort_providers(self) -> tuple[str, ...]:
        if self.providers is not None:
            return self.providers
        import onnxruntime

        return tuple(onnxruntime.get_available_providers())

    def provider_library_problem(self, provider: str) -> str | None:
        """Why onnxruntime cannot load `provider`'s library, or None (see `library_problem`)."""
        if self.missing_libraries is not None or self.providers is not None:
            return dict(self.missing_libraries or ()).get(provider)
        import onnxruntime

        return library_problem(Path(onnxruntime.__file__).parent / "capi", provider)

    def has_rknnlite(self) -> bool:
        if self.rknnlite is not None:
            return self.rknnlite
        return importlib.util.find_spec("rknnlite") is not None

    def compatible(self) -> list[str]:
        """Device-tree `compatible` strings (NUL-separated), empty off ARM boards. sysfs first: a
        unit with ProcSubset=pid hides /proc/device-tree, and the NPU went undetected there."""
        for path in ("sys/firmware/devicetree/base/compatible", "proc/device-tree/compatible"):
            try:
                raw = (self.root / path).read_bytes()
            except OSError:
                continue
            return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        return []


def _open_problem(node: Path) -> str | None:
    """Why `node` may not be opened (permission, the device cgroup), or None; a node that opens, or whose
    device is gone or busy, is not a permission problem."""
    try:
        os.close(os.open(node, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY))
    except OSError as exc:
        return exc.strerror if exc.errno in (errno.EPERM, errno.EACCES) else None
    return None


def library_problem(capi: Path, provider: str) -> str | None:
    """Why the provider library in onnxruntime's `capi` folder cannot load, or None when it can.

    onnxruntime-gpu lists CUDA and TensorRT whatever is installed; when a
    library they link (cuBLAS, cuDNN, libnvinfer) is missing it only logs that
    and runs the session on CPU. Loading the provider library as onnxruntime
    would names the missing file. Only "cannot open" counts: any other loader
    complaint, or a build without separate provider libraries, is left to
    onnxruntime to judge when the session starts.
    """
    import onnxruntime  # noqa: F401 - a provider library calls onnxruntime's host as it loads

    if provider not in PROVIDER_LIBRARIES or not (capi / PROVIDER_LIBRARIES[provider]).is_file():
        return None
    try:
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=os.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / PROVIDER_LIBRARIES[provider]))
    except OSError as exc:
        return str(exc) if "cannot open shared object file" in str(exc) else None
    return None


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
    socs = [_npu_soc(soc) for vendor, _, soc in (entry.partition(",") for entry in compatible)
            if vendor == "rockchip" and soc.startswith("rk")]
    if socs:
        return Board("rockchip", next((soc for soc in socs if soc in RKNN_SOCS), socs[0]))
    return Board("other")


def _npu_soc(name: str) -> str:
    """The SoC's NPU family from a device-tree name: an Orange Pi 5 says "rockchip,rk3588s" (the same NPU)
    and vendor trees add the board ("rockchip,rk3588s-orangepi-5", "rockchip,rk3588-evb1-lp4-v10"); taken
    whole, none of them matched RKNN_SOCS and the NPU was never offered."""
    match = re.match(r"rk\d{4}", name)
    return match.group(0) if match else name


def int8_sums_clip(machine: str, cpu_flags: str | None) -> bool:
    """Whether onnxruntime's int8 MatMul on this CPU adds u8 x s8 products in pairs in 16 bits, clipping
    them: x86-64 without VNNI (VPMADDUBSW; onnxruntime's quantization docs name `reduce_range` for it).

    scripts/build_model.py then gives the weights 7 bits. On an AVX2-only AMD EPYC (2026-12-07) that
    raised int8's top-1 agreement with fp32 along fp32's greedy path from 0.916 to 0.956 (whisper-base,
    12 zh clips) and from 0.980 to 1.000 (tiny.en, 12 English clips); a VNNI CPU adds in 32 bits.
    `cpu_flags`: /proc/cpuinfo's text (None: unreadable, taken as no VNNI, which costs 1 bit at most).
    """
    if machine.lower() not in ("x86_64", "amd64"):
        return False
    return cpu_flags is None or re.search(r"\b(avx512_vnni|avx_vnni)\b", cpu_flags) is None


def int8_sums_clip_here(root: Path = Path("/")) -> bool:
    """`int8_sums_clip` for this box."""
    try:
        flags: str | None = (root / "proc" / "cpuinfo").read_text()
    except OSError:
        flags = None
    return int8_sums_clip(platform.machine(), flags)
