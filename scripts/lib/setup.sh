# Shared set-up for ./scripts/test and ./scripts/demo (sourced, not run).
# Idempotent: installs only what is missing, builds only what changed.

CAPSULE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CAPSULE_BUILD=${CAPSULE_BUILD:-$CAPSULE_ROOT/build}

# Debian 12 packages the project builds and runs with. Later components add
# theirs here, so one list says what a fresh machine needs.
CAPSULE_PACKAGES=(
  build-essential cmake g++ pkg-config git
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  libboost1.74-dev libboost-system1.74-dev nlohmann-json3-dev
  dpdk libdpdk-dev libnuma-dev libpcap-dev zlib1g-dev
  openvswitch-common openvswitch-switch-dpdk openvswitch-source
  autoconf automake libtool libssl-dev libcap-ng-dev python3
  iproute2 iputils-ping iperf3 gnuplot-nox procps psmisc
  qemu-system-x86 busybox-static
  clang libclang-rt-dev
  debhelper dpkg-dev fakeroot lintian
  libvirt-daemon-system libvirt-clients
)

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

capsule_require_root() {
  [ "$(id -u)" -eq 0 ] || die "run as root: capsule sets real-time scheduling policies, cpusets and hugepages"
}

capsule_install_packages() {
  local missing=()
  for p in "${CAPSULE_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "packages: all ${#CAPSULE_PACKAGES[@]} present"
    return
  fi
  say "packages: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null || die "apt-get update failed"
  # openvswitch-switch-dpdk's postinst may try to start services; there is
  # no init system to start them in a container, and we start our own.
  apt-get install -y -q --no-install-recommends "${missing[@]}" >/tmp/capsule-apt.log 2>&1 \
    || { tail -20 /tmp/capsule-apt.log; die "apt-get install failed (log: /tmp/capsule-apt.log)"; }
}

# 2 MiB hugepages for DPDK: reserve up to CAPSULE_HUGEPAGES (never fewer than
# are already reserved) and make sure a hugetlbfs is mounted.
capsule_setup_hugepages() {
  local want=${CAPSULE_HUGEPAGES:-1024}
  local nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
  if [ -w "$nr" ] && [ "$(cat "$nr")" -lt "$want" ]; then
    echo "$want" >"$nr" 2>/dev/null || true
    say "hugepages: $(cat "$nr") x 2 MiB reserved"
  fi
  if ! grep -q ' hugetlbfs ' /proc/mounts; then
    mkdir -p /dev/hugepages
    mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages || say "hugepages: cannot mount hugetlbfs; DPDK will run with --no-huge"
  fi
}

capsule_build() {
  local werror=${CAPSULE_WERROR:-ON}
  say "build: configuring ($CAPSULE_BUILD)"
  mkdir -p "$CAPSULE_BUILD"
  cmake -S "$CAPSULE_ROOT" -B "$CAPSULE_BUILD" -DCAPSULE_WERROR="$werror" >"$CAPSULE_BUILD/configure.log" 2>&1 \
    || { cat "$CAPSULE_BUILD/configure.log"; die "cmake configure failed"; }
  say "build: compiling (first build includes libopenvswitch, a few minutes on 2 cores)"
  cmake --build "$CAPSULE_BUILD" -j"$(nproc)" || die "build failed"
}

# A capsule process that was killed (SIGKILL, a CI job stopped at its time
# limit) cannot remove its CPU partition: capsule-c<N> and capsule-system
# stay, the root cpuset's load balancing stays off, and every later
# SCHED_DEADLINE thread lands in a one-CPU root domain. capsuled clears them
# when it starts; the tests and the demo start from a clean host too.
# Only capsule-* cpusets without tasks are removed.
capsule_clear_stale_cpusets() {
  local out line
  out=$("$CAPSULE_BUILD/bin/capsule-rsv" cleanup) || die "capsule-rsv cleanup failed: $out"
  while IFS= read -r line; do
    case $line in
      "no stale capsule cpusets") ;;
      "in use: "*) say "host: WARNING: $line; tests that need one root domain fail until those tasks end" ;;
      *) say "host: a killed capsule run had left this behind: $line" ;;
    esac
  done <<<"$out"
}

capsule_setup() {
  capsule_require_root
  capsule_install_packages
  capsule_setup_hugepages
  capsule_build
  capsule_clear_stale_cpusets
}
