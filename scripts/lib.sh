# shellcheck shell=bash
# Shared helpers for scripts/run, scripts/pjdfstest-compare and the benchmarks.
# Source it after scripts/setup; it defines functions only.
#
# Environment:
#   PACTFS_BIN   use this pactfs binary instead of building one with cargo
#   CARGO_TARGET_DIR (set by scripts/setup)

# The repository root (this file lives in <root>/scripts).
PACTFS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

log() { printf '%s\n' "$*" >&2; }

# proc_cpu PID...: user+sys CPU seconds the processes have used so far (0
# for one that is gone).
proc_cpu() {
    local pid ticks=0 t
    for pid in "$@"; do
        # Fields after "pid (comm) ": utime and stime are the 12th and 13th.
        t="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }')" || t=0
        ticks=$((ticks + ${t:-0}))
    done
    awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f\n", t / hz }'
}
die() { printf '%s: error: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# Build the debug binary (the profile `cargo test` uses too, so RocksDB is
# compiled once) unless PACTFS_BIN names one; sets PACTFS.
pactfs_build() {
    if [ -n "${PACTFS_BIN:-}" ]; then
        [ -x "$PACTFS_BIN" ] || die "PACTFS_BIN=$PACTFS_BIN is not executable"
        PACTFS="$PACTFS_BIN"
        return 0
    fi
    log "building pactfs (cargo build, debug profile; target dir $CARGO_TARGET_DIR)"
    (cd "$PACTFS_ROOT" && cargo build --quiet --bin pactfs </dev/null) \
        || die "cargo build failed"
    PACTFS="$CARGO_TARGET_DIR/debug/pactfs"
    [ -x "$PACTFS" ] || die "no binary at $PACTFS after cargo build"
}

# is_mounted DIR: DIR is a mount point (reads the mount table, so it works
# for a FUSE mount whose daemon died, where stat(2) fails).
is_mounted() {
    findmnt -rn -M "$1" >/dev/null 2>&1
}

# pactfs_mount HOME MNT [ARGS...]: mount and set PACTFS_PID from the `Pid:` line.
pactfs_mount() {
    local home="$1" mnt="$2" out
    shift 2
    mkdir -p "$mnt"
    if ! out="$(timeout 120 "$PACTFS" --home "$home" mount "$mnt" "$@" </dev/null)"; then
        printf '%s\n' "$out" >&2
        pactfs_log_tail "$home"
        die "pactfs mount $mnt failed"
    fi
    PACTFS_PID="$(printf '%s\n' "$out" | sed -n 's/^Pid: *\([0-9][0-9]*\).*/\1/p' | head -n1)"
    if [ -z "$PACTFS_PID" ]; then
        # Contract says `Pid: <daemon pid>`; fall back to the mount table's owner.
        PACTFS_PID="$(pgrep -n -f -- "mount $mnt" || true)"
    fi
    is_mounted "$mnt" || die "pactfs mount returned but $mnt is not a mount point"
}

# pactfs_umount HOME MNT: clean unmount, then the fallbacks; never fails.
pactfs_umount() {
    local home="$1" mnt="$2" pid="${3:-${PACTFS_PID:-}}"
    if is_mounted "$mnt"; then
        if ! timeout 120 "$PACTFS" --home "$home" umount "$mnt" </dev/null >/dev/null; then
            log "pactfs umount $mnt failed; forcing (fusermount3 -uz / umount -l)"
            force_unmount "$mnt"
        fi
    fi
    # The daemon we started should exit after the unmount; give it a moment.
    if [ -n "$pid" ]; then
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "pactfs daemon $pid still running after unmount; sending SIGTERM"
            kill -TERM "$pid" 2>/dev/null || true
        fi
    fi
}

# force_unmount MNT: for when a clean unmount failed or cannot run. Aborts
# the FUSE connection first (as root), so that processes blocked on a hung
# daemon get ENOTCONN instead of hanging, then detaches lazily.
force_unmount() {
    local mnt="$1" majmin conn
    is_mounted "$mnt" || return 0
    if [ "$(id -u)" -eq 0 ]; then
        majmin="$(findmnt -rn -o MAJ:MIN,FSTYPE -M "$mnt" 2>/dev/null | awk '$2 ~ /^fuse/ { print $1; exit }')"
        if [ -n "$majmin" ]; then
            [ -d /sys/fs/fuse/connections ] && ! is_mounted /sys/fs/fuse/connections \
                && mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null
            conn="/sys/fs/fuse/connections/${majmin#*:}/abort"
            [ -w "$conn" ] && echo 1 >"$conn" 2>/dev/null
        fi
    fi
    fusermount3 -uz "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    is_mounted "$mnt" && log "warning: $mnt is still mounted"
    return 0
}

# pactfs_log_tail HOME: show the end of the daemon log, if any.
pactfs_log_tail() {
    local f
    f="$(find "$1" -maxdepth 3 -name pactfs.log 2>/dev/null | head -n1 || true)"
    if [ -n "$f" ] && [ -s "$f" ]; then
        log "--- last lines of $f ---"
        tail -n 30 "$f" >&2 || true
        log "---"
    fi
}

# now: seconds since the epoch with nanoseconds.
now() { date +%s.%N; }
