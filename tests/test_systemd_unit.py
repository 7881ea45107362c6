"""The shipped unit passes `systemd-analyze verify` silently and scores <= 2.5 exposure;
install.sh / uninstall.sh work in their --destdir dry-run mode.

`verify` insists that ExecStart's binary exists on this machine, and the real one
(/opt/edge-asr/venv/bin/edge-asr) only exists after scripts/install.sh. So we verify a
copy in which only the venv prefix is rewritten to a temporary venv holding an
executable `edge-asr`; every other line is checked exactly as shipped.
"""

from __future__ import annotations

import hashlib
import json
import os

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from edge.manifest import FORMAT

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "edge-asr.service"
SCRIPTS = REPO / "scripts"
VENV = "/opt/edge-asr/venv/"
MAX_EXPOSURE = 2.5

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def unit_with_venv(tmp_path: Path, unit: Path = UNIT) -> Path:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "edge-asr").write_text("#!/bin/sh\n")
    (venv / "bin" / "edge-asr").chmod(0o755)
    text = unit.read_text()
    assert text.count(VENV) == (2 if unit == UNIT else 1), "the venv is named by ExecStart (and the daemon's ExecReload)"
    copy = tmp_path / unit.name
    copy.write_text(text.replace(VENV, f"{venv}/"))
    return copy


@needs_analyze
def test_verify_is_silent(tmp_path: Path) -> None:
    result = analyze("verify", str(unit_with_venv(tmp_path)))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@needs_analyze
def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """Guards the test itself: a typo must show up on stderr."""
    copy = unit_with_venv(tmp_path)
    copy.write_text(copy.read_text().replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomme=yes"))
    assert "ProtectHomme" in analyze("verify", str(copy)).stderr


@needs_analyze
def test_security_exposure() -> None:
    result = analyze("security", "--offline=true", str(UNIT))
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_service_contract() -> None:
    """Lines the daemon and install.sh rely on."""
    lines = set(UNIT.read_text().splitlines())
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/opt/edge-asr/venv/bin/edge-asr run --config /etc/edge-asr/config.yaml",
        "ExecReload=/opt/edge-asr/venv/bin/edge-asr reload --config /etc/edge-asr/config.yaml --pid $MAINPID",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "User=edge-asr",
        "RuntimeDirectory=edge-asr",
        "CacheDirectory=edge-asr",
        "DeviceAllow=char-alsa rw",
        "Wants=modprobe@snd.service",  # char-alsa resolves only once the ALSA core (snd) is loaded
    ):
        assert line in lines
    assert "modprobe@snd.service" in next(line for line in lines if line.startswith("After=")).split()
    assert any(re.fullmatch(r"WatchdogSec=\d+s", line) for line in lines)


@pytest.mark.parametrize("unit", ["edge-asr.service", "edge-asr-captions.service", "edge-asr-mqtt.service"])
def test_a_unit_never_gives_up_on_what_a_restart_can_mend(unit: str) -> None:
    """5 failures in 5 minutes left an unattended kiosk's unit failed until someone ran reset-failed;
    what a restart cannot mend exits 78 and is not restarted at all."""
    lines = set((REPO / "systemd" / unit).read_text().splitlines())
    assert {"Restart=on-failure", "RestartPreventExitStatus=78", "StartLimitIntervalSec=0", "RestartSec=10s"} <= lines


def script(name: str, *args: str) -> str:
    result = subprocess.run(
        ["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", sorted(path.name for path in SCRIPTS.glob("*.sh")))
def test_scripts_are_valid_bash(name: str) -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPTS / name)], capture_output=True).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    result = subprocess.run(  # -x from the repo root: follow `source scripts/service-common.sh`
        ["shellcheck", "-x", str(SCRIPTS / name)], capture_output=True, text=True, cwd=SCRIPTS.parent
    )
    assert result.returncode == 0, result.stdout


def stand_in_model(directory: Path, name: str = "whisper-tiny.en-int8") -> Path:
    """A model directory install.sh accepts: a manifest naming `name` and listing one file's size and sha256."""
    directory.mkdir(parents=True)
    weights = b"stand-in weights"
    (directory / "decoder.onnx").write_bytes(weights)
    files = {"decoder.onnx": {"bytes": len(weights), "sha256": hashlib.sha256(weights).hexdigest()}}
    dims = {"n_mels": 80, "n_text_layer": 4}  # a manifest edge-asr can read; its graphs are not loaded here
    (directory / "manifest.json").write_text(json.dumps({"format": FORMAT, "name": name, "dims": dims, "files": files}))
    return directory


@pytest.fixture
def staged(tmp_path: Path) -> tuple[Path, str]:
    """A --destdir install with a stand-in model; returns the root and the script's output."""
    model = stand_in_model(tmp_path / "model")
    root = tmp_path / "root"
    root.mkdir()
    return root, script("install.sh", "--destdir", str(root), "--model-from", str(model))


def test_install_stages_files_and_prints_system_commands(staged: tuple[Path, str]) -> None:
    root, output = staged
    config = yaml.safe_load((root / "etc/edge-asr/config.yaml").read_text())
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    assert config["model"]["path"] == "/opt/edge-asr/models/whisper-tiny.en-int8"
    assert config["inference"]["rknn_model_dir"] == "/opt/edge-asr/models/whisper-tiny.en-rknn"
    config["model"]["path"] = shipped["model"]["path"]
    config["inference"]["rknn_model_dir"] = shipped["inference"]["rknn_model_dir"]
    assert config == shipped
    comments = [line for line in (root / "etc/edge-asr/config.yaml").read_text().splitlines() if "models/" in line]
    assert comments and all("/opt/edge-asr/models/" in line for line in comments)  # the Mandarin hint's path too
    assert any(line.startswith("# A Mandarin box: set path to /opt/edge-asr/models/whisper-base-int8") for line in comments)
    assert (root / "etc/systemd/system/edge-asr.service").read_text() == UNIT.read_text()
    assert (root / "opt/edge-asr/models/whisper-tiny.en-int8/manifest.json").is_file()
    for command in ("useradd --system --gid edge-asr --groups audio", "pip install", "systemctl daemon-reload",
                    "systemctl enable edge-asr.service"):
        assert command in output


def test_reinstall_keeps_the_technicians_config(staged: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = staged
    config = root / "etc/edge-asr/config.yaml"
    config.write_text(config.read_text().replace("threshold: 0.5", "threshold: 0.7"))
    output = script("install.sh", "--destdir", str(root), "--model-from", str(tmp_path / "model"))
    assert "threshold: 0.7" in config.read_text()
    assert "threshold: 0.5" in (root / "etc/edge-asr/config.yaml.dist").read_text()
    assert "kept your /etc/edge-asr/config.yaml" in output


def test_a_model_is_installed_only_whole_and_never_as_a_link(staged: tuple[Path, str], tmp_path: Path) -> None:
    """A symlinked --model-from was copied as the link (the installed model vanished with the USB stick,
    or dangled, after the working one was deleted), and a damaged copy replaced a working model."""
    root, _ = staged
    installed = root / "opt/edge-asr/models/whisper-tiny.en-int8"
    newer = stand_in_model(tmp_path / "usb/real")
    (tmp_path / "usb/current").symlink_to("real")
    script("install.sh", "--destdir", str(root), "--model-from", str(tmp_path / "usb/current"))
    assert not installed.is_symlink() and (installed / "decoder.onnx").read_bytes() == b"stand-in weights"

    (newer / "decoder.onnx").write_bytes(b"stand-in weightz")  # a flipped byte on the stick
    result = subprocess.run(["bash", str(SCRIPTS / "install.sh"), "--destdir", str(root), "--model-from", str(newer)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "is not a whole model (" in result.stderr and "decoder.onnx: content does not match" in result.stderr
    assert "the installed whisper-tiny.en-int8 is kept" in result.stderr
    assert (installed / "decoder.onnx").read_bytes() == b"stand-in weights"
    assert not (root / "opt/edge-asr/models/whisper-tiny.en-int8.new").exists()


def test_only_the_files_a_manifest_lists_are_installed(staged: tuple[Path, str], tmp_path: Path) -> None:
    """cp -RL copied whatever the model directory held: a link to a root-only file came out world-readable
    under /opt/edge-asr/models (security review)."""
    root, _ = staged
    secret = tmp_path / "root-only"
    secret.write_text("secret of root")
    secret.chmod(0o600)
    model = stand_in_model(tmp_path / "usb/model")
    (model / "stolen").symlink_to(secret)
    (model / "notes.txt").write_text("a technician's notes")
    script("install.sh", "--destdir", str(root), "--model-from", str(model))
    installed = root / "opt/edge-asr/models/whisper-tiny.en-int8"
    assert sorted(path.name for path in installed.iterdir()) == ["decoder.onnx", "manifest.json"]


def test_a_manifest_that_lists_a_path_outside_its_directory_is_refused(staged: tuple[Path, str],
                                                                     tmp_path: Path) -> None:
    root, _ = staged
    model = stand_in_model(tmp_path / "usb/model")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["files"]["../../root-only"] = manifest["files"]["decoder.onnx"]
    (model / "manifest.json").write_text(json.dumps(manifest))
    result = subprocess.run(["bash", str(SCRIPTS / "install.sh"), "--destdir", str(root), "--model-from", str(model)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "its files are not plain names of the model directory" in result.stderr
    assert "the installed whisper-tiny.en-int8 is kept" in result.stderr
    assert not (root / "opt/edge-asr/models/whisper-tiny.en-int8.new").exists()


def test_uninstall_keeps_config_unless_purged(staged: tuple[Path, str]) -> None:
    root, _ = staged
    output = script("uninstall.sh", "--destdir", str(root))
    assert "systemctl disable --now edge-asr.service" in output
    assert not (root / "opt/edge-asr").exists() and not (root / "etc/systemd/system/edge-asr.service").exists()
    assert (root / "etc/edge-asr/config.yaml").is_file()
    output = script("uninstall.sh", "--destdir", str(root), "--purge")
    assert not (root / "etc/edge-asr").exists() and "userdel edge-asr" in output


def test_install_names_models_by_manifest_despite_spaces_and_a_tight_umask(tmp_path: Path) -> None:
    """An offline Mandarin box copies both models from a USB disk, as root with umask 027: the base
    model used to land as whisper-tiny.en-int8, a space split the path, and /opt was unreadable."""
    usb = tmp_path / "usb disk"
    for folder, name in (("tiny", "whisper-tiny.en-int8"), ("base", "whisper-base-int8")):
        stand_in_model(usb / folder, name)
    root = tmp_path / "new root"  # --destdir is created
    result = subprocess.run(["bash", "-c", 'umask 027; exec bash "$0" "$@"', str(SCRIPTS / "install.sh"),
                             "--destdir", str(root), "--model-from", str(usb / "tiny"), "--model-from", str(usb / "base")],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    for name in ("whisper-tiny.en-int8", "whisper-base-int8"):
        model = root / "opt/edge-asr/models" / name
        assert (model / "manifest.json").is_file()
        assert model.stat().st_mode & 0o005 == 0o005 and (root / "opt/edge-asr").stat().st_mode & 0o005 == 0o005
    assert os.readlink(root / "usr/local/bin/edge-asr") == "/opt/edge-asr/venv/bin/edge-asr"

    drop_in = root / "etc/systemd/system/edge-asr.service.d"
    drop_in.mkdir()
    (drop_in / "override.conf").write_text("[Service]\nEnvironment=X=1\n")
    script("uninstall.sh", "--destdir", str(root), "--purge")
    assert not drop_in.exists() and not (root / "usr/local/bin/edge-asr").is_symlink()


def _pyenv_python(version: str) -> Path | None:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    found = sorted(root.glob(f"{version}.*/bin/python"))
    return found[-1] if found else None


@pytest.mark.parametrize("version", ["3.10", "3.9"])
def test_install_pins_the_versions_tested_on_its_python(tmp_path: Path, version: str) -> None:
    """numpy 2.4 and onnxruntime 1.32 exist for no Python before 3.11: on JetPack 6's 3.10 install.sh
    failed with "No matching distribution found for numpy==2.4.6". 3.10 gets its own tested pins;
    older is refused by name before anything is installed."""
    python = _pyenv_python(version)
    if python is None:
        pytest.skip(f"no Python {version} under pyenv on this machine")
    result = subprocess.run(["bash", str(SCRIPTS / "install.sh"), "--destdir", str(tmp_path), "--python", str(python)],
                            capture_output=True, text=True, timeout=60, check=False)
    if version == "3.10":
        assert result.returncode == 0, result.stderr
        assert f"pip install --quiet -c {REPO}/constraints-py310.txt --upgrade {REPO}" in result.stdout
    else:
        assert result.returncode == 1 and "would run" not in result.stdout
        assert f"edge-asr needs Python 3.10 or newer; {python} is Python {version}." in result.stderr


@pytest.mark.parametrize("pins", ["constraints.txt", "constraints-py310.txt"])
def test_every_runtime_dependency_is_pinned(pins: str) -> None:
    """A dependency added to pyproject.toml but to one constraints file only goes untested on the other Python."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10: pytest's own dependency
        import tomli as tomllib

    def name(requirement: str) -> str:
        return re.split(r"[<>=!;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
    pinned = {name(line) for line in (REPO / pins).read_text().splitlines() if line and not line.startswith("#")}
    assert wanted - pinned == set()


def _venv_with_gpu_onnxruntime(root: Path) -> None:
    """A staged /opt/edge-asr/venv holding the metadata of NVIDIA's Jetson build, as pip leaves it."""
    venv = root / "opt/edge-asr/venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    (site,) = venv.glob("lib/python3*/site-packages")
    (site / "onnxruntime_gpu-1.23.0.dist-info").mkdir()
    (site / "onnxruntime_gpu-1.23.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.23.0\n")


def test_an_upgrade_does_not_swap_a_jetsons_gpu_onnxruntime_for_the_cpu_one(tmp_path: Path) -> None:
    """install-jetson.md has the CPU onnxruntime replaced by NVIDIA's onnxruntime-gpu; re-running
    install.sh (the upgrade) installed onnxruntime==1.32.0 over the same files, and the box fell to CPU."""
    _venv_with_gpu_onnxruntime(tmp_path)
    refused = subprocess.run(["bash", str(SCRIPTS / "install.sh"), "--destdir", str(tmp_path)],
                             capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 1 and "would run" not in refused.stdout, refused.stdout
    assert ("/opt/edge-asr/venv has onnxruntime-gpu 1.23.0 (an accelerator build of onnxruntime): installing would "
            "put PyPI's CPU onnxruntime over it; re-run with --onnxruntime-wheel FILE") in refused.stderr
    wheel = tmp_path / "onnxruntime_gpu-1.23.0-cp310-cp310-linux_aarch64.whl"
    wheel.write_bytes(b"")
    kept = script("install.sh", "--destdir", str(tmp_path), "--onnxruntime-wheel", str(wheel))
    pip = [line.split("/venv/bin/pip ", 1)[1] for line in kept.splitlines() if "/venv/bin/pip " in line]
    assert pip[:3] == [f"install --quiet -c {REPO}/constraints.txt --upgrade {REPO}",
                       "uninstall --quiet --yes onnxruntime",
                       f"install --quiet --no-deps --force-reinstall {wheel}"], pip


def test_fp32_copies_the_build_a_gpu_runs_beside_each_int8_model(tmp_path: Path) -> None:
    """Only the int8 models were installed: a Jetson's GPU ran them, slowly, without a word."""
    int8 = stand_in_model(tmp_path / "usb" / "whisper-tiny.en-int8")
    stand_in_model(tmp_path / "usb" / "whisper-tiny.en-fp32", name="whisper-tiny.en-fp32")
    lone = stand_in_model(tmp_path / "usb" / "whisper-base-int8", name="whisper-base-int8")
    root = tmp_path / "root"
    result = subprocess.run(["bash", str(SCRIPTS / "install.sh"), "--destdir", str(root), "--fp32",
                             "--model-from", str(int8), "--model-from", str(lone)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    models = root / "opt/edge-asr/models"
    assert sorted(p.name for p in models.iterdir()) == ["whisper-base-int8", "whisper-tiny.en-fp32",
                                                        "whisper-tiny.en-int8"]
    assert f"no fp32 build beside {lone}: an NVIDIA GPU runs its int8 graphs" in result.stderr


@pytest.mark.parametrize(("name", "args", "said"), [
    ("install.sh", ["--destdir"], "install: --destdir needs a directory"),
    ("install.sh", ["--model-from", "--destdir", "DESTDIR"], "install: --model-from needs a directory"),
    ("uninstall.sh", ["--destdir"], "uninstall: --destdir needs a directory"),
])
def test_an_option_without_its_value_is_named_with_the_usage(name: str, args: list[str], said: str,
                                                              tmp_path: Path) -> None:
    """bash's own "${2:?}" printed "install.sh: line 46: 2: --destdir needs a directory" and no usage.
    Every case stays a dry run whatever the script makes of it: tests run as root."""
    args = [str(tmp_path) if arg == "DESTDIR" else arg for arg in args]
    result = subprocess.run(["bash", str(SCRIPTS / name), *args], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and result.stderr.splitlines() == [said], result.stderr
    assert "--destdir DIR" in result.stdout
