# Shared by install.sh and uninstall.sh (sourced, not run): messages and the dry-run wrapper.
# The caller sets PROG (message prefix) and destdir (non-empty: --destdir dry run).
# shellcheck shell=bash

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

# An option's value, present and not the next option (bash's own ${2:?} said "line 46: 2: ..."); the
# caller defines usage.
needs() {
    [[ -n "$3" && "$3" != --* ]] || { printf '%s: %s needs a %s\n' "$PROG" "$1" "$2" >&2; usage 2; }
}

# Commands that change the system (or, for the venv, need the final paths) go through here.
run() {
    if [[ -n "$destdir" ]]; then
        printf '%s: would run:' "$PROG"
        printf ' %q' "$@"
        printf '\n'
    else
        say "running: $*"
        "$@"
    fi
}

# sd_booted(): true when systemd is PID 1 (false in containers and chroots).
systemd_running() { [[ -d /run/systemd/system ]]; }

# --destdir: made if missing, then absolute (the caller has set destdir, possibly empty).
resolve_destdir() {
    [[ -z "$destdir" ]] && return
    mkdir -p -- "$destdir" || die "--destdir $destdir: cannot create it"
    destdir="$(cd -- "$destdir" && pwd)"
}
