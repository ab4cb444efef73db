#!/bin/bash
# Issue #10, item 7, prepared for one short call on a machine with cores to spare (the workplace's `device`
# machine: 16 cores, no network, a bare image without numamove's Debian packages):
#
#     bash tests/vm/device_check.sh [OUTDIR]        (OUTDIR: $OUT there, else /tmp/device-check;
#                                                   NMBENCH_MIB=N copies N MiB instead of 1024)
#
# 1. The machine: CPUs, NUMA nodes, kernel, and whether /dev/kvm can run the project's guests. KVM from the
#    kvm_pvm module (this project's development VM has it) cannot: Debian's kernel stops in boot with an
#    emulation failure (tests/vm/harness.py, kvm_problem).
# 2. The copy engine alone, in C (build/nmbench: no Python, no libnuma): 1 GiB between two faulted-in
#    regions, one memcpy against nm_copy on 1, 2, 4, 8 and 16 threads pinned to CPUs 0..N-1, medians of 5,
#    every byte verified. This is the userspace part of the parallel gain (`file --copy`, the pull copy).
# 3. What the whole-run benchmark in a KVM guest of two 8-vCPU nodes would need, and whether it is here:
#    /dev/kvm usable, qemu-system-x86_64, the cached guest kernel (.cache/vm), the project's .venv. When all
#    are, it runs `harness.py bench-whole --shape wide --vcpus 8 --accel kvm -- --threads 1,2,4,8`.
#
# Everything goes to OUTDIR/device.txt (and the terminal). About 30 s for steps 1 and 2 on 16 cores.
set -u
cd "$(dirname "$0")/../.."
out=${1:-${OUT:-/tmp/device-check}}
mkdir -p "$out"
log=$out/device.txt
: >"$log"
say() { printf '%s\n' "$*" | tee -a "$log"; }
run() { say "\$ $*"; "$@" 2>&1 | tee -a "$log"; }

say "== device check, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
run uname -a
say "online CPUs: $(nproc --all 2>/dev/null) ($(nproc) usable here)"
grep -m1 'model name' /proc/cpuinfo | tee -a "$log"
nodes=$(ls -d /sys/devices/system/node/node[0-9]* 2>/dev/null | wc -l)
say "NUMA nodes: $nodes"
for n in /sys/devices/system/node/node[0-9]*; do
    [ -d "$n" ] && say "  $(basename "$n"): CPUs $(cat "$n/cpulist"), $(awk '/MemTotal/ {print $4, $5}' "$n/meminfo")"
done
kvm=no
if [ -d /sys/module/kvm_pvm ]; then
    say "/dev/kvm: kvm_pvm's, which cannot run Debian's kernel: no KVM guest here"
elif [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    say "/dev/kvm: present and usable ($(ls /sys/module | grep -E '^kvm_(intel|amd)$' || echo 'vendor module not named'))"
    kvm=yes
else
    say "/dev/kvm: $( [ -e /dev/kvm ] && echo 'present, not usable by this user' || echo 'absent')"
fi

say ""
say "== 2. the copy engine alone (nmbench), 1 GiB, 1 2 4 8 16 threads"
if ! command -v gcc >/dev/null; then
    say "no gcc here: nmbench cannot be built"
else
    mkdir -p build
    cflags=$(sed -n 's/^CFLAGS_CHECK := //p' Makefile)
    # shellcheck disable=SC2086  # the flags are words
    if gcc $cflags -Icsrc -o build/nmbench csrc/nmbench.c csrc/numamove.c 2>&1 | tee -a "$log"; then
        cpus=$(nproc)
        set -- 1
        for t in 2 4 8 16; do [ "$t" -le "$cpus" ] && set -- "$@" "$t"; done
        run build/nmbench "${NMBENCH_MIB:-1024}" "$@"
    fi
fi

say ""
say "== 3. the whole-run benchmark in a KVM guest of two 8-vCPU nodes (issue #10, item 7)"
missing=""
[ "$kvm" = yes ] || missing="$missing usable-KVM"
command -v qemu-system-x86_64 >/dev/null || missing="$missing qemu-system-x86_64"
ls .cache/vm/initramfs-*.cpio >/dev/null 2>&1 || missing="$missing guest-kernel-cache(.cache/vm)"
[ -x .venv/bin/python ] || missing="$missing .venv(make build)"
[ "$(nproc)" -ge 16 ] || missing="$missing 16-CPUs"
if [ -n "$missing" ]; then
    say "not run: missing$missing"
else
    run timeout 420 .venv/bin/python tests/vm/harness.py bench-whole --shape wide --vcpus 8 --accel kvm \
        -- --threads 1,2,4,8 --runs 4 --thp 1G --small 512M
fi
say "== done"
