#!/usr/bin/env bash
# Idempotent set-up shared by setup.sh and test.sh: system packages, the
# virtual environment at .venv/, and the model build. A second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/pins.sh
source scripts/pins.sh

# python3-venv, python3-dev + gcc: the virtual environment, and systemd-python (no wheels) compiled;
# portaudio + pulseaudio: capture and the virtual microphone used in tests;
# libsystemd-dev + pkg-config: systemd-python builds from source;
# systemd: systemd-analyze for the unit checks; shellcheck: the install scripts;
# chromium + chromium-driver + fonts-noto-cjk: the caption page tested in a real browser, CJK included;
# mosquitto + mosquitto-clients: the MQTT bridge tested against a real broker.
APT_PACKAGES=(python3-venv python3-dev gcc
              libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins
              libsystemd-dev pkg-config systemd shellcheck
              chromium chromium-driver fonts-noto-cjk
              mosquitto mosquitto-clients)

missing_apt() {
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || echo "$pkg"
    done
}

install_system_packages() {
    local missing
    missing=$(missing_apt)
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "bootstrap: missing system packages, run: sudo apt-get install $missing" >&2
        exit 1
    fi
    echo "bootstrap: installing system packages: $missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

install_python_env() {
    local python=${PYTHON:-python3}
    # pip, not python: a venv module that failed half-way (no python3-venv) leaves bin/python behind
    [ -x .venv/bin/pip ] || "$python" -m venv --clear .venv
    local pins stamp
    pins=$(constraints_for .venv/bin/python "$PWD")
    stamp=".venv/.edge-asr-$(cat pyproject.toml "$pins" | sha256sum | cut -c1-16)"
    [ -f "$stamp" ] && return 0
    echo "bootstrap: installing Python packages into .venv/"
    # pip too (constraints.txt pins it): an unpinned upgrade made each fresh machine's resolver a different one
    .venv/bin/pip install -q --disable-pip-version-check -c "$pins" --upgrade pip
    # the versions the tests passed with (scripts/freeze_constraints.sh refreshes constraints.txt)
    .venv/bin/pip install -q --disable-pip-version-check -c "$pins" -e '.[test]'
    # silero-vad ships the VAD .onnx but declares torch; the runtime needs only the file.
    .venv/bin/pip install -q --disable-pip-version-check --no-deps 'silero-vad==6.2.3'  # and scripts/install.sh
    rm -f .venv/.edge-asr-*
    touch "$stamp"
}

install_system_packages
install_python_env
.venv/bin/python scripts/build_model.py
