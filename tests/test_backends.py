"""Backend detection, selection with reasons, strict mode, and `edge-asr backends`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest

from edge.accel.board import Board, Probe, detect_board, int8_sums_clip, library_problem
from edge.accel.ort import provider_chain
from edge.accel.select import BackendStartError, select_backend, survey
from edge.asr.load import open_recognizer
from edge.asr.whisper import family as whisper
from edge.asr.whisper.family import accelerator_model_dir
from edge.asr.whisper.ort import tensorrt_profiles
from edge.cli import main
from edge.config import parse_config
from edge.errors import BackendError, SetupError

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
CPU_ONLY = ("CPUExecutionProvider",)


def make_config(model_dir: Path, tmp_path: Path, **inference: object):
    return parse_config({"model": {"path": str(model_dir)}, "inference": inference}, base_dir=tmp_path)


def jetson_root(tmp_path: Path) -> Path:
    root = tmp_path / "jetson"
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text("# R36 (release), REVISION: 4.0\n")
    return root


def rk3588_root(tmp_path: Path, *, runtime: bool = True) -> Path:
    root = tmp_path / "rk3588"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/compatible").write_bytes(b"radxa,rock-5b\0rockchip,rk3588\0")
    if runtime:
        (root / "usr/lib").mkdir(parents=True)
        (root / "usr/lib/librknnrt.so").write_bytes(b"\x7fELF...librknnrt version: 2.3.2 (429f97ae6b@2025-04-09T09:09:27)\0")
    return root


RKNN_MANIFEST = {"format": 1, "dims": {"n_text_layer": 4, "n_text_head": 6, "n_text_state": 384},
                 "encoder_frames": [500, 1000], "batch": 5, "cache_slots": 224, "mask_value": -10000.0}


def rknn_models(tmp_path: Path, *, complete: bool = True, manifest: object = RKNN_MANIFEST) -> Path:
    directory = tmp_path / "rknn-models"
    directory.mkdir()
    (directory / "rknn_manifest.json").write_text(json.dumps(manifest))
    stems = ["encoder_500", "decoder_500", "encoder_1000", "decoder_1000"]
    for stem in stems if complete else stems[:2]:
        (directory / f"{stem}.rknn").write_bytes(b"")
    return directory


def by_name(candidates) -> dict:
    return {c.name: c for c in candidates}


def test_this_box_selects_cpu_and_says_why_not_the_others(tmp_path: Path, int8_model_dir: Path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {int8_model_dir}\n")
    assert main(["backends", "--format", "json", "--config", str(config)]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in data["backends"]}
    assert list(rows) == ["tensorrt", "cuda", "rknn", "cpu"]
    assert data["selected"] == "cpu" and rows["cpu"]["selected"]
    for name in ("tensorrt", "cuda", "rknn"):
        assert not rows[name]["available"] and not rows[name]["selected"]
        assert rows[name]["reason"]
    assert "TensorrtExecutionProvider" in rows["tensorrt"]["reason"]
    assert "Rockchip" in rows["rknn"]["reason"]


def test_text_format_has_one_line_per_backend(tmp_path: Path, int8_model_dir: Path, capsys) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"model:\n  path: {int8_model_dir}\n")
    assert main(["backends", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:5]] == ["tensorrt", "cuda", "rknn", "cpu"]
    assert lines[4].split()[1:3] == ["yes", "yes"]


def test_simulated_jetson(tmp_path: Path, int8_model_dir: Path) -> None:
    probe = Probe(root=jetson_root(tmp_path), providers=GPU_PROVIDERS, rknnlite=False)
    assert detect_board(probe).kind == "jetson"
    rows = by_name(survey(make_config(int8_model_dir, tmp_path), probe))
    assert rows["tensorrt"].available and rows["cuda"].available and rows["cpu"].available
    assert not rows["rknn"].available and "Jetson" in rows["rknn"].reason


def test_jetson_from_device_tree_without_runtime_hints_at_the_wheel(tmp_path: Path, int8_model_dir: Path) -> None:
    root = tmp_path / "orin"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/compatible").write_bytes(b"nvidia,p3768-0000+p3767-0005\0nvidia,tegra234\0")
    probe = Probe(root=root, providers=CPU_ONLY, rknnlite=False)
    assert detect_board(probe).soc == "tegra234"
    rows = by_name(survey(make_config(int8_model_dir, tmp_path), probe))
    assert not rows["cuda"].available and "onnxruntime-gpu" in rows["cuda"].reason


@pytest.mark.parametrize("board", ["jetson", "rk3588"])
def test_auto_on_an_accelerator_board_that_ends_on_cpu_says_so_and_strict_refuses(tmp_path: Path, int8_model_dir: Path,
                                                                                  board: str) -> None:
    """PyPI's CPU-only onnxruntime on a Jetson, or an RK3588 whose .rknn files are incomplete: `auto` ran on
    CPU with no warning (status not degraded), and `strict` let the box start."""
    if board == "jetson":
        probe = Probe(root=jetson_root(tmp_path), providers=CPU_ONLY, rknnlite=False)
        options, why = {}, "tensorrt: onnxruntime has no TensorrtExecutionProvider"
    else:
        probe = Probe(root=rk3588_root(tmp_path), providers=CPU_ONLY, rknnlite=True)
        options, why = {"rknn_model_dir": str(rknn_models(tmp_path, complete=False))}, "rknn: "
    selection = select_backend(make_config(int8_model_dir, tmp_path, **options), whisper.open, probe)
    (warning,) = selection.warnings
    assert selection.name == "cpu" and warning.startswith(f"this is {detect_board(probe).describe()}, but its "
                                                          f"accelerator cannot run ({why}")
    assert warning.endswith("; running on CPU")
    with pytest.raises(BackendStartError, match=r"but its accelerator cannot run .*inference.strict is true"):
        select_backend(make_config(int8_model_dir, tmp_path, strict=True, **options), whisper.open, probe)


def test_simulated_rk3588(tmp_path: Path, int8_model_dir: Path) -> None:
    probe = Probe(root=rk3588_root(tmp_path), providers=CPU_ONLY, rknnlite=True)
    board = detect_board(probe)
    assert (board.kind, board.soc) == ("rockchip", "rk3588")
    cfg = make_config(int8_model_dir, tmp_path, rknn_model_dir=str(rknn_models(tmp_path)))
    rows = by_name(survey(cfg, probe))
    assert rows["rknn"].available, rows["rknn"].reason
    assert "librknnrt 2.3.2" in rows["rknn"].reason
    assert not rows["tensorrt"].available and not rows["cuda"].available


@pytest.mark.parametrize(("compatible", "soc"), [
    (b"xunlong,orangepi-5\0rockchip,rk3588s\0", "rk3588"),  # RK3588S: the same NPU
    (b"rockchip,rk3588s-orangepi-5\0rockchip,rk3588\0", "rk3588"),  # a vendor tree names the board first
    (b"rockchip,rk3588-evb1-lp4-v10\0rockchip,rk3588\0", "rk3588"),
    (b"rockchip,rk3399-evb\0rockchip,rk3399\0", "rk3399"),  # no RKNN NPU: named, and refused
])
def test_rockchip_device_trees_name_the_npu_family(tmp_path: Path, compatible: bytes, soc: str) -> None:
    """Taken whole, "rk3588s" or "rk3588s-orangepi-5" matched no supported SoC: an Orange Pi 5, a Rock 5A
    or an EVB board never got its NPU offered."""
    root = rk3588_root(tmp_path)
    (root / "proc/device-tree/compatible").write_bytes(compatible)
    assert detect_board(Probe(root=root, providers=CPU_ONLY, rknnlite=True)) == Board("rockchip", soc)


@pytest.mark.parametrize(
    ("runtime", "rknnlite", "complete", "reason"),
    [
        (False, True, True, "librknnrt.so is missing"),
        (True, False, True, "rknn-toolkit-lite2"),
        (True, True, False, "lacks encoder_1000.rknn, decoder_1000.rknn"),
    ],
)
def test_rk3588_missing_pieces_are_named(tmp_path: Path, int8_model_dir: Path, runtime: bool, rknnlite: bool,
                                         complete: bool, reason: str) -> None:
    probe = Probe(root=rk3588_root(tmp_path, runtime=runtime), providers=CPU_ONLY, rknnlite=rknnlite)
    cfg = make_config(int8_model_dir, tmp_path, rknn_model_dir=str(rknn_models(tmp_path, complete=complete)))
    row = by_name(survey(cfg, probe))["rknn"]
    assert not row.available and reason in row.reason


@pytest.mark.parametrize(("manifest", "problem"), [
    ([], "not a JSON object"),
    ({**RKNN_MANIFEST, "encoder_frames": 1000}, "encoder_frames 1000 is not a list of frame counts"),
    ({**RKNN_MANIFEST, "dims": {}}, "dims {} lacks whole numbers for n_text_layer, n_text_head, n_text_state"),
    ({**RKNN_MANIFEST, "batch": "5"}, "batch '5' is not a whole number above 0"),
])
def test_a_malformed_rknn_manifest_is_named_and_leaves_the_other_backends(tmp_path: Path, int8_model_dir: Path,
                                                                          manifest: object, problem: str) -> None:
    """It was a KeyError or TypeError traceback from `run` and `backends`, even with inference.backend: cpu."""
    probe = Probe(root=rk3588_root(tmp_path), providers=CPU_ONLY, rknnlite=True)
    models = rknn_models(tmp_path, manifest=manifest)
    rows = by_name(survey(make_config(int8_model_dir, tmp_path, rknn_model_dir=str(models)), probe))
    assert not rows["rknn"].available and rows["cpu"].available
    assert rows["rknn"].reason.startswith(f"{models / 'rknn_manifest.json'}: {problem}; convert the model again")


@pytest.mark.parametrize(("soc", "mask", "usable"), [("rk3588", "0_1_2", True), ("rk3576", "0_1", True),
                                                  ("rk3576", "0_1_2", False), ("rk3568", "0", False),
                                                  ("rk3568", "auto", True)])
def test_a_core_mask_the_npu_lacks_is_named(tmp_path: Path, int8_model_dir: Path, soc: str, mask: str,
                                             usable: bool) -> None:
    """RKNNLite refuses a mask other than auto on a one-core NPU at init_runtime, where it read as "is
    librknnrt.so installed?"."""
    root = rk3588_root(tmp_path)
    (root / "proc/device-tree/compatible").write_bytes(f"vendor,board\0rockchip,{soc}\0".encode())
    probe = Probe(root=root, providers=CPU_ONLY, rknnlite=True)
    cfg = make_config(int8_model_dir, tmp_path, rknn_model_dir=str(rknn_models(tmp_path)), rknn_core_mask=mask)
    row = by_name(survey(cfg, probe))["rknn"]
    assert row.available == usable, row.reason
    if not usable:
        assert row.reason.startswith(f"inference.rknn_core_mask '{mask}' is not a core set of the {soc}'s NPU (it takes ")


def test_rk3588_without_converted_models(tmp_path: Path, int8_model_dir: Path) -> None:
    probe = Probe(root=rk3588_root(tmp_path), providers=CPU_ONLY, rknnlite=True)
    row = by_name(survey(make_config(int8_model_dir, tmp_path, rknn_model_dir=str(tmp_path)), probe))["rknn"]
    assert not row.available and "check_rknn.sh" in row.reason


def test_an_npu_the_sandbox_keeps_closed_is_named_as_the_likelier_cause(tmp_path: Path, int8_model_dir: Path) -> None:
    """Without the drop-in, RKNNLite's runtime fails to start under the unit, and the warning blamed
    librknnrt.so: the node the device cgroup refuses is named, with where the fix is."""
    def opener(name: str, cfg):
        if name == "rknn":
            raise BackendError("RKNNLite could not start the NPU runtime for encoder_1000.rknn (is librknnrt.so installed?)")
        return whisper.open("cpu", cfg)

    probe = Probe(root=rk3588_root(tmp_path), providers=CPU_ONLY, rknnlite=True,
                  closed_nodes=("/dev/dri/renderD129 (Operation not permitted)",))
    cfg = make_config(int8_model_dir, tmp_path, rknn_model_dir=str(rknn_models(tmp_path)))
    selection = select_backend(cfg, opener, probe)
    assert selection.name == "cpu"
    assert by_name(selection.candidates)["rknn"].reason.endswith(
        "(is librknnrt.so installed?); this process may not open /dev/dri/renderD129 (Operation not permitted): "
        "under systemd, allow them with a drop-in (docs/operations.md, Accelerators)")


@pytest.mark.parametrize("closed", [True, False], ids=["node-closed", "other-failure"])
def test_strict_with_a_node_the_sandbox_keeps_closed_is_a_setup_error(tmp_path: Path, int8_model_dir: Path,
                                                                     closed: bool) -> None:
    """Exit 78, not 1: a restart cannot open the node, and exit 1 went to restarts that loaded the model
    again and again for ever."""
    def opener(name: str, cfg):
        if name == "rknn":
            raise BackendError("RKNNLite could not start the NPU runtime for encoder_1000.rknn")
        return whisper.open("cpu", cfg)

    probe = Probe(root=rk3588_root(tmp_path), providers=CPU_ONLY, rknnlite=True,
                  closed_nodes=("/dev/dri/renderD129 (Operation not permitted)",) if closed else ())
    cfg = make_config(int8_model_dir, tmp_path, strict=True, rknn_model_dir=str(rknn_models(tmp_path)))
    with pytest.raises(BackendStartError, match="inference.strict is true") as refused:
        select_backend(cfg, opener, probe)
    assert isinstance(refused.value, SetupError) == closed


def test_a_render_node_beside_the_npus_own_is_not_a_setup_error(tmp_path: Path, int8_model_dir: Path) -> None:
    """The NPU is /dev/rknpu or a render node: a Mali GPU's render node stays closed under the documented
    DeviceAllow=/dev/rknpu, and every RKNN failure under strict became a permanent exit 78 (second review)."""
    def opener(name: str, cfg):
        if name == "rknn":
            raise BackendError("RKNNLite could not start the NPU runtime for encoder_1000.rknn")
        return whisper.open("cpu", cfg)

    root = rk3588_root(tmp_path)
    (root / "dev/dri").mkdir(parents=True)
    (root / "dev/rknpu").write_bytes(b"")
    (root / "dev/dri/renderD129").write_bytes(b"")
    probe = Probe(root=root, providers=CPU_ONLY, rknnlite=True,
                  closed_nodes=("/dev/dri/renderD129 (Operation not permitted)",))
    cfg = make_config(int8_model_dir, tmp_path, strict=True, rknn_model_dir=str(rknn_models(tmp_path)))
    with pytest.raises(BackendStartError) as refused:
        select_backend(cfg, opener, probe)
    assert not isinstance(refused.value, SetupError)


def test_the_npus_own_render_node_closed_is_a_setup_error_though_the_gpus_opens(tmp_path: Path) -> None:
    """sysfs names the render node whose driver is rknpu: that one closed is the sandbox's doing, whatever a
    Mali GPU's node beside it does (an operator who allowed the wrong renderD*) (third review)."""
    root = rk3588_root(tmp_path)
    (root / "dev/dri").mkdir(parents=True)
    for node, driver in (("renderD128", "panfrost"), ("renderD129", "rknpu")):
        (root / "dev/dri" / node).write_bytes(b"")
        (root / "sys/bus/platform/drivers" / driver).mkdir(parents=True, exist_ok=True)
        (root / "sys/class/drm" / node / "device").mkdir(parents=True)
        (root / "sys/class/drm" / node / "device/driver").symlink_to(root / "sys/bus/platform/drivers" / driver)
    npu_closed = Probe(root=root, closed_nodes=("/dev/dri/renderD129 (Operation not permitted)",))
    gpu_closed = Probe(root=root, closed_nodes=("/dev/dri/renderD128 (Operation not permitted)",))
    assert npu_closed.denies("rknn") and not gpu_closed.denies("rknn")


@pytest.mark.parametrize("backend", ["auto", "rknn"])
def test_strict_with_a_core_mask_the_npu_lacks_is_a_setup_error(tmp_path: Path, int8_model_dir: Path,
                                                                backend: str) -> None:
    """A config mistake: exit 78, not 1 into a restart every 10 s for ever (second review)."""
    root = rk3588_root(tmp_path)
    (root / "proc/device-tree/compatible").write_bytes(b"vendor,board\0rockchip,rk3568\0")
    probe = Probe(root=root, providers=CPU_ONLY, rknnlite=True)
    cfg = make_config(int8_model_dir, tmp_path, backend=backend, strict=True, rknn_core_mask="0_1",
                      rknn_model_dir=str(rknn_models(tmp_path)))
    with pytest.raises(SetupError, match="inference.rknn_core_mask '0_1' is not a core set of the rk3568's NPU"):
        select_backend(cfg, whisper.open, probe)


def test_strict_with_an_engine_cache_it_cannot_write_is_a_setup_error(tmp_path: Path, int8_model_dir: Path) -> None:
    (tmp_path / "cache").write_text("")
    cfg = make_config(int8_model_dir, tmp_path, backend="tensorrt", strict=True,
                      tensorrt_cache_dir=str(tmp_path / "cache" / "tensorrt"))
    with pytest.raises(SetupError, match="cannot write there"):
        select_backend(cfg, whisper.open, Probe(providers=("TensorrtExecutionProvider", "CPUExecutionProvider")))


def test_device_nodes_that_open_are_not_blamed(tmp_path: Path) -> None:
    root = rk3588_root(tmp_path)
    (root / "dev/dri").mkdir(parents=True)
    (root / "dev/dri/renderD129").write_bytes(b"")  # a stand-in node this process may open
    (root / "dev/rknpu").mkdir()  # not a device at all: no permission problem to report either
    assert Probe(root=root).unopenable_nodes("rknn") == []


def test_auto_tries_best_first_and_records_why_it_moved_on(tmp_path: Path, int8_model_dir: Path) -> None:
    tried = []

    def opener(name: str, cfg):
        tried.append(name)
        if name == "tensorrt":
            raise RuntimeError("TensorRT engine build failed:\nout of memory")
        return whisper.open("cpu", cfg) if name == "cpu" else _Named(name)

    probe = Probe(root=jetson_root(tmp_path), providers=GPU_PROVIDERS, rknnlite=False)
    selection = select_backend(make_config(int8_model_dir, tmp_path), opener, probe)
    rows = by_name(selection.candidates)
    assert tried == ["tensorrt", "cuda"] and selection.name == "cuda"
    assert rows["tensorrt"].reason == "failed to start: TensorRT engine build failed: out of memory"
    assert "not used (cuda selected)" in rows["cpu"].reason
    assert selection.warnings == ["tensorrt failed to start: TensorRT engine build failed: out of memory; trying the next backend"]


def test_a_provider_whose_libraries_are_missing_is_skipped_with_the_file_named(tmp_path: Path, int8_model_dir: Path) -> None:
    """onnxruntime-gpu lists TensorRT without libnvinfer; `auto` must not count on it, and say why."""
    reason = "libnvinfer.so.10: cannot open shared object file: No such file or directory"
    probe = Probe(root=tmp_path, providers=GPU_PROVIDERS, rknnlite=False,
                  missing_libraries=(("TensorrtExecutionProvider", reason),))
    tried = []

    def opener(name: str, cfg):
        tried.append(name)
        return _Named(name)

    selection = select_backend(make_config(int8_model_dir, tmp_path), opener, probe)
    rows = by_name(selection.candidates)
    assert tried == ["cuda"] and selection.name == "cuda"
    assert not rows["tensorrt"].available
    assert rows["tensorrt"].reason == f"onnxruntime has TensorrtExecutionProvider but cannot load it: {reason}"
    assert selection.warnings == [f"tensorrt {rows['tensorrt'].reason}; trying the next backend"]  # it went unsaid
    with pytest.raises(BackendStartError, match="tensorrt onnxruntime has TensorrtExecutionProvider but cannot load "
                                                "it: libnvinfer.* \\(inference.strict is true: no CPU fallback\\)"):
        select_backend(make_config(int8_model_dir, tmp_path, strict=True), opener, probe)


def test_provider_libraries_are_not_loaded_for_a_backend_that_will_not_be_tried(tmp_path: Path, int8_model_dir: Path) -> None:
    """A CPU box with onnxruntime-gpu must not load cuDNN and TensorRT at start just to list them."""
    asked = []

    class Recording(Probe):
        def provider_library_problem(self, provider: str) -> str | None:
            asked.append(provider)
            return None

    probe = Recording(root=tmp_path, providers=GPU_PROVIDERS, rknnlite=False)
    rows = by_name(survey(make_config(int8_model_dir, tmp_path, backend="cuda"), probe))
    assert asked == ["CUDAExecutionProvider"]
    assert rows["tensorrt"].available and "libraries not loaded: inference.backend is cuda" in rows["tensorrt"].reason
    asked.clear()
    survey(make_config(int8_model_dir, tmp_path), probe)
    assert asked == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]


def _shared_library(directory: Path, name: str, source: str, *links: str) -> None:
    (directory / f"{name}.c").write_text(source)
    command = ["cc", "-shared", "-fPIC", "-o", str(directory / name), str(directory / f"{name}.c"), f"-L{directory}", *links]
    subprocess.run(command, check=True, capture_output=True)


def test_library_problem_names_the_library_the_loader_cannot_find(tmp_path: Path) -> None:
    """The real dynamic loader on a provider library whose dependency is gone (as libcublasLt on a box without CUDA)."""
    if shutil.which("cc") is None:
        pytest.skip("needs a C compiler to build the stand-in provider libraries")
    _shared_library(tmp_path, "libonnxruntime_providers_shared.so", "int shared_marker(void) { return 1; }")
    for provider, dependency in (("cuda", "libedgecublas"), ("tensorrt", "libedgenvinfer")):
        _shared_library(tmp_path, f"{dependency}.so", "int dependency_marker(void) { return 2; }")
        _shared_library(tmp_path, f"libonnxruntime_providers_{provider}.so",
                        "int dependency_marker(void);\nint f(void) { return dependency_marker(); }",
                        f"-l{dependency.removeprefix('lib')}", f"-Wl,-rpath,{tmp_path}")
    assert library_problem(tmp_path, "CUDAExecutionProvider") is None
    (tmp_path / "libedgenvinfer.so").unlink()  # never loaded yet: the loader must look for it
    problem = library_problem(tmp_path, "TensorrtExecutionProvider")
    assert problem is not None and problem.startswith("libedgenvinfer.so: cannot open shared object file")
    (tmp_path / "libonnxruntime_providers_tensorrt.so").write_text("not an ELF file")
    assert library_problem(tmp_path, "TensorrtExecutionProvider") is None  # not a missing file: onnxruntime judges
    (tmp_path / "libonnxruntime_providers_cuda.so").unlink()
    assert library_problem(tmp_path, "CUDAExecutionProvider") is None  # no separate library: onnxruntime judges


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_silent_onnxruntime_cpu_fallback_is_detected(tmp_path: Path, int8_model_dir: Path) -> None:
    """onnxruntime here has no CUDA: asked for it, it warns and runs on CPU; selection must notice."""
    probe = Probe(root=tmp_path, providers=("CUDAExecutionProvider", "CPUExecutionProvider"), rknnlite=False)
    selection = select_backend(make_config(int8_model_dir, tmp_path, backend="cuda"), whisper.open, probe)
    assert selection.name == "cpu"
    assert "did not start CUDAExecutionProvider" in by_name(selection.candidates)["cuda"].reason


def test_configured_cuda_falls_back_to_cpu_with_a_status(tmp_path: Path, int8_model_dir: Path) -> None:
    messages: list[str] = []
    recognizer = open_recognizer(make_config(int8_model_dir, tmp_path, backend="cuda"), messages.append)
    assert recognizer.backend_name == "cpu"
    assert len(messages) == 1
    assert messages[0].startswith("inference.backend is cuda but it cannot run: onnxruntime has no CUDAExecutionProvider")
    assert messages[0].endswith("running on CPU")


def test_strict_makes_a_missing_accelerator_a_startup_error(tmp_path: Path, int8_model_dir: Path) -> None:
    cfg = make_config(int8_model_dir, tmp_path, backend="cuda", strict=True)
    with pytest.raises(BackendStartError, match=r"inference.backend is cuda but it cannot run: .*inference.strict is true"):
        open_recognizer(cfg, lambda message: None)


def test_strict_auto_refuses_an_accelerator_that_fails_to_start(tmp_path: Path, int8_model_dir: Path) -> None:
    def opener(name: str, cfg):
        raise BackendError("NPU runtime did not start")

    probe = Probe(root=rk3588_root(tmp_path), providers=CPU_ONLY, rknnlite=True)
    cfg = make_config(int8_model_dir, tmp_path, strict=True, rknn_model_dir=str(rknn_models(tmp_path)))
    with pytest.raises(BackendStartError, match="rknn failed to start: NPU runtime did not start"):
        select_backend(cfg, opener, probe)


def test_tensorrt_provider_chain(fp32_model_dir: Path, tmp_path: Path) -> None:
    dims = json.loads((fp32_model_dir / "manifest.json").read_text())["dims"]
    encoder, decoder = tensorrt_profiles(dims)
    chain = provider_chain("tensorrt", tensorrt_cache_dir=tmp_path, tensorrt_fp16=False, profile=decoder)
    assert [p if isinstance(p, str) else p[0] for p in chain] == list(GPU_PROVIDERS)
    options = chain[0][1]
    assert options["trt_engine_cache_enable"] and options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_fp16_enable"] is False
    assert encoder["trt_profile_max_shapes"] == "mel:1x80x3000"
    assert "self_k:4x10x6x448x64" in options["trt_profile_max_shapes"]
    assert "self_k:4x1x6x0x64" in options["trt_profile_min_shapes"]
    assert "cross_v_3:1x6x1500x64" in options["trt_profile_max_shapes"]
    graph_inputs = {item.name for item in onnx.load(fp32_model_dir / "decoder.onnx", load_external_data=False).graph.input}
    for key in ("trt_profile_min_shapes", "trt_profile_opt_shapes", "trt_profile_max_shapes"):
        assert {entry.split(":")[0] for entry in options[key].split(",")} == graph_inputs


def test_accelerators_use_the_fp32_graphs(int8_model_dir: Path, fp32_model_dir: Path) -> None:
    assert accelerator_model_dir(int8_model_dir) == fp32_model_dir
    assert accelerator_model_dir(fp32_model_dir) == fp32_model_dir


def test_an_int8_model_without_its_fp32_build_is_run_on_the_gpu_with_a_warning(
        tmp_path: Path, int8_model_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """install.sh copied only the int8 models: a Jetson ran them on its GPU without a word."""
    alone = tmp_path / int8_model_dir.name
    alone.mkdir()
    for item in int8_model_dir.iterdir():
        (alone / item.name).symlink_to(item)
    assert accelerator_model_dir(alone) == alone
    (said,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert said.startswith(f"no fp32 build of {alone} at {tmp_path / int8_model_dir.name.replace('-int8', '-fp32')}: ")


def _linked_pair(tmp_path: Path, int8_model_dir: Path, fp32_model_dir: Path, **sibling_fields) -> Path:
    """model.path and its fp32 sibling, their files linked, the sibling's manifest changed by `sibling_fields`."""
    for source, changes in ((int8_model_dir, {}), (fp32_model_dir, sibling_fields)):
        copy = tmp_path / source.name
        copy.mkdir(parents=True)
        for item in source.iterdir():
            if item.name != "manifest.json":
                (copy / item.name).symlink_to(item)
        manifest = json.loads((source / "manifest.json").read_text())
        (copy / "manifest.json").write_text(json.dumps({**manifest, **changes}))
    return tmp_path / int8_model_dir.name


def test_the_fp32_graphs_a_gpu_runs_are_checked_like_model_path(tmp_path: Path, int8_model_dir: Path,
                                                                  fp32_model_dir: Path) -> None:
    """They were opened unchecked: a damaged decoder.onnx, or one left from another build, ran and the GPU
    printed other words than the CPU; now the GPU backend fails to start, and selection falls back."""
    files = json.loads((fp32_model_dir / "manifest.json").read_text())["files"]
    damaged = {**files, "decoder.onnx": {**files["decoder.onnx"], "sha256": "0" * 64}}
    with pytest.raises(BackendError, match=r"decoder.onnx: content does not match .*the GPU runs .*whisper-tiny.en-fp32"):
        accelerator_model_dir(_linked_pair(tmp_path / "damaged", int8_model_dir, fp32_model_dir, files=damaged))
    with pytest.raises(BackendError, match=r"is not the fp32 build of .*\(its builder differ\)"):
        accelerator_model_dir(_linked_pair(tmp_path / "stale", int8_model_dir, fp32_model_dir, builder={"version": 0}))


@pytest.mark.parametrize(("providers", "proved"), [(["CUDAExecutionProvider", "CPUExecutionProvider"], True),
                                                    (["TensorrtExecutionProvider", "CPUExecutionProvider"], False)])
def test_a_cuda_session_that_cannot_run_fails_at_open(fp32_model_dir: Path, monkeypatch, providers, proved) -> None:
    """Only CPU sessions were run at open: a CUDA one that started but failed at its first run ("no kernel
    image", cuDNN, GPU memory) got past `auto` and `strict` and failed the first utterance. TensorRT is not
    run at open: its first run builds the engines, for minutes."""
    import onnxruntime

    from edge.asr.whisper.ort import OrtWhisperBackend

    real_session = onnxruntime.InferenceSession

    class StartsButCannotRun:
        def __init__(self, path, options, providers) -> None:
            self.session = real_session(path, options, providers=["CPUExecutionProvider"])

        def get_providers(self) -> list[str]:
            return providers

        def run(self, *args, **kwargs):
            raise RuntimeError("CUDA failure 209: no kernel image is available for execution on the device")

        def __getattr__(self, name: str):
            return getattr(self.session, name)

    monkeypatch.setattr("edge.asr.whisper.ort.ort.InferenceSession", StartsButCannotRun)
    if proved:
        with pytest.raises(RuntimeError, match="cannot run these graphs: .*CUDA failure 209: no kernel image"):
            OrtWhisperBackend(fp32_model_dir, name="cuda", providers=providers)
    else:
        assert OrtWhisperBackend(fp32_model_dir, name="tensorrt", providers=providers).active_providers == providers


class _Named:
    """A stand-in accelerator recognizer (selection only records that it opened)."""

    def __init__(self, name: str) -> None:
        self.backend_name = name


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["cuda", "tensorrt"])
def test_gpu_backend_runs_on_its_provider_and_transcribes_like_cpu(name: str, tmp_path: Path, int8_model_dir: Path,
                                                                   fp32_model_dir: Path, eval_dir: Path) -> None:
    """Opt-in (-m gpu, needs onnxruntime-gpu and a GPU). Run by scripts/gpu_check.sh on an H200 (docs/benchmarks.md)."""
    from edge.audio.audiofile import load_audio

    cfg = make_config(int8_model_dir, tmp_path, backend=name, strict=True, tensorrt_cache_dir=str(tmp_path / "trt"))
    row = by_name(survey(cfg))[name]
    if name == "tensorrt" and "cannot load it" in row.reason:  # not installed (not on PyPI as a binary)
        pytest.skip(row.reason)
    selection = select_backend(cfg, whisper.open)
    assert selection.name == name
    audio = load_audio(eval_dir / "real_en" / "jfk.wav")
    expected = whisper.open("cpu", make_config(fp32_model_dir, tmp_path)).transcribe(audio).text
    assert selection.opened.transcribe(audio).text == expected


def test_the_board_is_read_from_sysfs_where_proc_hides_the_device_tree(tmp_path: Path) -> None:
    """A unit with ProcSubset=pid shows no /proc/device-tree: the RK3588 NPU went undetected there."""
    root = tmp_path / "sysfs-only"
    (root / "sys/firmware/devicetree/base").mkdir(parents=True)
    (root / "sys/firmware/devicetree/base/compatible").write_bytes(b"radxa,rock-5b\0rockchip,rk3588\0")
    assert Probe(root=root).compatible() == ["radxa,rock-5b", "rockchip,rk3588"]


@pytest.mark.parametrize("where", ["under a file", "read-only"])
def test_an_engine_cache_that_cannot_be_written_is_named_at_start(tmp_path: Path, int8_model_dir: Path, where: str) -> None:
    """TensorRT builds its engines at the first call; engines it could not save were built again, for
    minutes, after every restart, and nothing said why. Before any session: the key, the path, the fix."""
    if where == "under a file":
        (tmp_path / "cache").write_text("")
        cache = tmp_path / "cache" / "tensorrt"
    else:
        cache = Path("/sys/kernel")  # a directory not even root may create files in
        if not cache.is_dir():
            pytest.skip("no /sys/kernel on this machine")
    cfg = make_config(int8_model_dir, tmp_path, tensorrt_cache_dir=str(cache))
    with pytest.raises(BackendError, match=rf"^inference.tensorrt_cache_dir {cache}: cannot write there \(.+\); give it"):
        whisper.open("tensorrt", cfg)


@pytest.mark.parametrize("machine, flags, clips", [
    ("x86_64", "flags : fpu avx avx2 fma", True), ("x86_64", "flags : avx2 avx512f avx512_vnni", False),
    ("x86_64", "flags : avx2 avx_vnni", False), ("x86_64", None, True), ("aarch64", "Features : asimd asimddp", False)])
def test_int8_sums_clip_on_x86_without_vnni(machine: str, flags: str | None, clips: bool) -> None:
    assert int8_sums_clip(machine, flags) is clips


def test_a_model_quantized_where_int8_sums_do_not_clip_is_to_be_rebuilt_where_they_do(tmp_path: Path) -> None:
    from edge.asr.whisper.family import int8_advice

    built_with = {"quantization": {"encoder": {"reduce_range": False}, "decoder": {"bits": 8}}}
    advice = int8_advice(tmp_path, built_with, clips=True)
    assert advice is not None and str(tmp_path) in advice and "rebuild it on this box" in advice
    assert int8_advice(tmp_path, built_with, clips=False) is None
    assert int8_advice(tmp_path, {"quantization": {"encoder": {"reduce_range": True}}}, clips=True) is None
    assert int8_advice(tmp_path, {"quantization": None}, clips=True) is None  # fp32
