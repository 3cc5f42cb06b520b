# Helpers for a fresh Debian 12 root made by mmdebstrap (sourced by tests/package_fresh_test.sh
# and bench/fresh_machine.sh).
#
#   fresh_root_run ROOT CMD...  runs CMD inside ROOT as a fresh PID 1 tree, with its
#       own /proc (the core reads /proc/self/exe), the host's /dev, /sys, and a clean environment
#       (PATH, HOME=/root, LANG=C.UTF-8, DEBIAN_FRONTEND=noninteractive), in /root. Every mount
#       lives in a private mount namespace that dies with the command.
#   fresh_root_remove ROOT DIR  unmounts anything still mounted under ROOT (deepest first), then
#       removes DIR (the root's parent) unless MLC_FRESH_KEEP=1.

fresh_root_run() {
  local root="$1"; shift
  unshare --mount --pid --fork --propagation private sh -c '
    R="$1"; shift
    mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" && mount -t sysfs sysfs "$R/sys" || exit 125
    exec chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
      DEBIAN_FRONTEND=noninteractive sh -c "cd /root && exec \"\$@\"" sh "$@"' sh "$root" "$@"
}

fresh_root_remove() {
  local root="$1" dir="$2" m
  for m in $(awk -v r="$root" 'index($2, r) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m"
  done
  if [[ "${MLC_FRESH_KEEP:-0}" == 1 ]]; then echo "kept: $dir"; else rm -rf --one-file-system "$dir"; fi
}
