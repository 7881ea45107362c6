#!/usr/bin/env bash
# Remove the edge-asr service installed by scripts/install.sh (run as root; safe to re-run).
#
#   sudo scripts/uninstall.sh [--purge] [--destdir DIR]
#
#   --purge        also delete /etc/edge-asr (the technician's config), /var/lib/edge-asr,
#                  /var/cache/edge-asr, the units' drop-ins (systemctl edit) and the edge-asr user and group
#   --destdir DIR  dry run: remove files under DIR and only print the commands that would
#                  change the system (systemctl, userdel)
#
# Without --purge, /etc/edge-asr is kept so that a re-install picks up the same settings.
set -euo pipefail

PREFIX="/opt/edge-asr"
ETC="/etc/edge-asr"
UNIT="/etc/systemd/system/edge-asr.service"
CAPTIONS_UNIT="/etc/systemd/system/edge-asr-captions.service"
MQTT_UNIT="/etc/systemd/system/edge-asr-mqtt.service"
SERVICE="edge-asr"

destdir=""
purge=0

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
PROG=uninstall
# shellcheck source=scripts/service-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/service-common.sh"

parse_args() {
    while (( $# )); do
        case "$1" in
            --purge) purge=1; shift ;;
            --destdir) needs "$1" directory "${2-}"; destdir="$2"; shift 2 ;;
            -h|--help) usage 0 ;;
            *) printf 'uninstall: unknown option %s\n' "$1" >&2; usage 2 ;;
        esac
    done
    if [[ -z "$destdir" ]] && (( EUID != 0 )); then
        die "run as root (or use --destdir DIR for a dry run)"
    fi
    resolve_destdir
}

remove() {
    local path
    for path in "$@"; do
        if [[ -e "$destdir$path" ]]; then
            rm -rf -- "$destdir$path"
            say "removed $path"
        fi
    done
}

stop_service() {
    if [[ -n "$destdir" ]] || systemctl list-unit-files "$SERVICE.service" >/dev/null 2>&1; then
        run systemctl disable --now "$SERVICE-captions.service" || say "caption page was not running"
        run systemctl disable --now "$SERVICE-mqtt.service" || say "MQTT bridge was not running"
        run systemctl disable --now "$SERVICE.service" || say "service was not running"
    fi
}

remove_user() {
    if [[ -n "$destdir" ]] || getent passwd "$SERVICE" >/dev/null; then
        run userdel "$SERVICE" || say "could not delete user $SERVICE"
    fi
    if [[ -n "$destdir" ]] || getent group "$SERVICE" >/dev/null; then
        run groupdel "$SERVICE" || say "could not delete group $SERVICE"
    fi
}

main() {
    parse_args "$@"
    stop_service
    remove "$UNIT" "$CAPTIONS_UNIT" "$MQTT_UNIT" "$PREFIX"
    if [[ "$(readlink "$destdir/usr/local/bin/edge-asr" 2>/dev/null)" == "$PREFIX/venv/bin/edge-asr" ]]; then
        rm -f -- "$destdir/usr/local/bin/edge-asr" && say "removed /usr/local/bin/edge-asr"
    fi
    if [[ -n "$destdir" ]] || systemd_running; then
        run systemctl daemon-reload
    fi
    if (( purge )); then
        remove "$ETC" /var/lib/edge-asr /var/cache/edge-asr "$UNIT.d" "$CAPTIONS_UNIT.d" "$MQTT_UNIT.d"
        remove_user
    else
        say "kept $ETC (use --purge to delete it)"
    fi
    say "done"
}

main "$@"
