#!/usr/bin/env bash
# capsule's Debian package on this machine: build it from this build tree,
# install it with dpkg, start the daemons from the systemd units' own
# ExecStart lines (systemd does not run here or in CI), use the installed
# capsule-ctl, stop them with the units' ExecStop lines, purge the package.
# Whatever happens, the trap stops what started and purges the package.
#
#   install_test.sh SOURCE_DIR BUILD_DIR
# Exit 77 (ctest: skipped) when a capsule package is already installed: the
# test would replace and then purge the operator's.
set -euo pipefail
SRC=$1
BUILD=$2
TMP=$(mktemp -d /tmp/capsule-package-test.XXXXXX)
UNITDIR=
installed=no

fail() { echo "FAIL: $*" >&2; exit 1; }

if dpkg-query -W -f='${Status}' capsule 2>/dev/null | grep -q 'ok installed'; then
  echo "SKIP: a capsule package is installed on this machine; not replacing it"
  exit 77
fi

unit_lines() {  # UNIT KEY -> the unit's KEY= values, continuation lines joined
  sed -e ':a' -e '/\\$/N; s/\\\n[[:space:]]*/ /; ta' "$UNITDIR/$1" | sed -n "s/^$2=//p"
}
# Run a unit's ExecStart/ExecStop as systemd would: its EnvironmentFile
# sourced, $VAR expanded and split into words (systemd's rule for $VAR
# unbraced), the "-@+!:" prefixes dropped.
run_unit() {  # UNIT KEY
  local line
  while IFS= read -r line; do
    line=${line#[-@+!:]}
    ( set -a
      envfile=$(unit_lines "$1" EnvironmentFile); envfile=${envfile#-}
      # shellcheck disable=SC1090
      [ -z "$envfile" ] || . "$envfile"
      set +a
      eval "set -- $line"
      echo "  $1: $*"
      "$@" )
  done < <(unit_lines "$1" "$2")
}

LIBVIRTD_PID=
VIRTLOGD_PID=
DOMAIN=capsule-pkg-test
stop_libvirt() {
  if [ -n "$LIBVIRTD_PID" ]; then
    virsh -c qemu:///system destroy $DOMAIN >/dev/null 2>&1 || true
    virsh -c qemu:///system undefine $DOMAIN >/dev/null 2>&1 || true
    kill "$LIBVIRTD_PID" 2>/dev/null || true
    wait "$LIBVIRTD_PID" 2>/dev/null || true
  fi
  if [ -n "$VIRTLOGD_PID" ]; then kill "$VIRTLOGD_PID" 2>/dev/null || true; wait "$VIRTLOGD_PID" 2>/dev/null || true; fi
  LIBVIRTD_PID=; VIRTLOGD_PID=
  if [ "${MACHINE_CPUSET_OURS:-no}" = yes ] && [ -d /sys/fs/cgroup/cpuset/machine ]; then
    # Its children first (a stopped domain's cpusets), deepest last made first.
    find /sys/fs/cgroup/cpuset/machine -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
    rmdir /sys/fs/cgroup/cpuset/machine 2>/dev/null || echo "WARN: could not remove the cpuset /machine libvirtd made" >&2
  fi
}

cleanup() {
  local rc=$?
  stop_libvirt
  if [ $installed = yes ]; then
    if [ -n "$UNITDIR" ]; then
      run_unit capsuled.service ExecStop >/dev/null 2>&1 || true
      run_unit capsule-db.service ExecStop >/dev/null 2>&1 || true
    fi
    # Anything the units started that did not stop: end it by its pidfile.
    for f in "$TMP"/run/*.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
    # An installed program still running can only be this test's (the
    # package was not installed before it): end it by its PID.
    for p in /proc/[0-9]*; do
      case "$(readlink "$p/exe" 2>/dev/null)" in
        /usr/sbin/capsuled|/usr/sbin/capsule-datapathd) kill -KILL "${p#/proc/}" 2>/dev/null || true ;;
      esac
    done
    dpkg --purge capsule >"$TMP/purge.log" 2>&1 || { cat "$TMP/purge.log"; rc=1; }
    if dpkg-query -W -f='${Status}' capsule 2>/dev/null | grep -q 'ok installed'; then
      echo "FAIL: capsule still installed after purge" >&2; rc=1
    fi
  fi
  rm -rf "$TMP"
  exit $rc
}
trap cleanup EXIT

echo "== build the package from $BUILD (scripts/package --no-build)"
start=$(date +%s)
deb=$(CAPSULE_BUILD=$BUILD "$SRC/scripts/package" --no-build | tail -1)
[ -f "$deb" ] || fail "scripts/package printed no .deb: $deb"
case "$(basename "$deb")" in capsule_*_amd64.deb) ;; *) fail "package name $(basename "$deb")" ;; esac
echo "  $deb in $(( $(date +%s) - start )) s"

# A TCG domain (this host's /dev/kvm cannot boot a guest) with shared memory
# and a vhost-user NIC whose socket QEMU serves; no disk: SeaBIOS idles,
# the vCPU thread exists, which is what a capsule holds. The NIC's option
# ROM is off: iPXE would drive the virtio device under TCG.
libvirt_domain() {
  if ! command -v libvirtd >/dev/null || ! command -v virsh >/dev/null; then
    echo "  skipped: libvirtd/virsh not installed (libvirt-daemon-system)"; return 0
  fi
  if [ -S /run/libvirt/libvirt-sock ] && virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "  skipped: a libvirtd already runs here; the hook is read when libvirtd starts, and the test does not restart the machine's libvirtd"
    return 0
  fi
  # libvirtd makes a cpuset /machine over every CPU (for its VMs), which
  # blocks capsule's exclusive per-core partitions: removed by stop_libvirt
  # when this test made it.
  [ -d /sys/fs/cgroup/cpuset/machine ] || MACHINE_CPUSET_OURS=yes
  # libvirtd with the hook installed (it reads hooks/qemu.d when it starts);
  # no systemd here, so virtlogd and libvirtd are started by hand.
  virtlogd >"$TMP/virtlogd.log" 2>&1 &
  VIRTLOGD_PID=$!
  libvirtd >"$TMP/libvirtd.log" 2>&1 &
  LIBVIRTD_PID=$!
  for _ in $(seq 100); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.1; done
  virsh -c qemu:///system version >/dev/null 2>&1 || fail "libvirtd did not come up: $(tail -5 "$TMP/libvirtd.log")"
  cat >"$TMP/domain.xml" <<EOD
<domain type='qemu'>
  <name>$DOMAIN</name>
  <memory unit='MiB'>128</memory>
  <vcpu placement='static'>1</vcpu>
  <metadata>
    <capsule:capsule xmlns:capsule='http://capsule.example.org/xmlns/libvirt/domain/2.0'>
      <capsule:vcpu runtime='2ms' period='20ms'/>
      <capsule:interface mac='52:54:00:c5:0a:01' port='pkg-eth0'>
        <capsule:qos type='egress-policer' cir='12500000' cbs='125000'/>
      </capsule:interface>
    </capsule:capsule>
  </metadata>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <interface type='vhostuser'>
      <mac address='52:54:00:c5:0a:01'/>
      <source type='unix' path='/var/lib/libvirt/qemu/$DOMAIN-eth0.sock' mode='server'/>
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <console type='pty'/>
  </devices>
</domain>
EOD
  virsh -c qemu:///system define "$TMP/domain.xml" >/dev/null || fail "virsh define"
  timeout 120 virsh -c qemu:///system start $DOMAIN >"$TMP/start.log" 2>&1 \
    || fail "virsh start: $(cat "$TMP/start.log")"
  local db=unix:$TMP/run/db.sock qemu t policies
  /usr/bin/capsule-ctl --db=$db --timeout=10 show | grep -q "VM \"$DOMAIN\"" || fail "the hook wrote no VM row"
  [ "$(/usr/bin/capsule-ctl --db=$db get VM $DOMAIN status:state | tr -d '"')" = running ] \
    || fail "VM not running: $(/usr/bin/capsule-ctl --db=$db get VM $DOMAIN status)"
  qemu=$(cat /run/libvirt/qemu/$DOMAIN.pid)
  policies=$(for t in /proc/"$qemu"/task/*; do grep -q '^CPU [0-9]*/TCG$' "$t/comm" && sed 's/.*) //' "$t/stat" | awk '{print $39}'; done)
  [ "$policies" = 6 ] || fail "QEMU's vCPU thread is not SCHED_DEADLINE (policy '$policies')"
  /usr/bin/capsule-ctl --db=$db show | sed -n "/VM \"$DOMAIN\"/,\$p" | sed 's/^/  /' | head -12
  virsh -c qemu:///system destroy $DOMAIN >/dev/null || fail "virsh destroy"
  [ -z "$(/usr/bin/capsule-ctl --db=$db --bare --columns=name find VM name=$DOMAIN)" ] || fail "VM row left after the domain stopped"
  [ -z "$(/usr/bin/capsule-ctl --db=$db --bare --columns=name list Port)" ] || fail "Port row left after the domain stopped"
  virsh -c qemu:///system undefine $DOMAIN >/dev/null
  echo "  defined, started (VM running, vCPU SCHED_DEADLINE), destroyed (rows gone)"
  stop_libvirt
}

echo "== dpkg -i"
installed=yes
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; fail "dpkg -i"; }
for f in /usr/sbin/capsuled /usr/sbin/capsule-service /usr/sbin/capsule-rsv /usr/bin/capsule-ctl \
         /usr/bin/capsule-calibrate /usr/bin/capsule-vm; do
  [ -x "$f" ] || fail "$f not installed"
done
# Every program the build makes for the package's component, including ones
# added later (capsule-datapathd, started by capsuled from beside itself).
[ ! -x "$BUILD/bin/capsule-datapathd" ] || [ -x /usr/sbin/capsule-datapathd ] || fail "capsule-datapathd not installed beside capsuled"
[ -f /usr/share/capsule/capsule.ovsschema ] || fail "schema not in /usr/share/capsule"
[ -x /usr/share/capsule/capsule-convert-policers ] || fail "capsule-convert-policers not in /usr/share/capsule"
[ -f /etc/default/capsule ] || fail "/etc/default/capsule not installed"
[ -f /usr/share/bash-completion/completions/capsule-ctl ] || fail "bash completion not installed"
[ -x /etc/libvirt/hooks/qemu.d/capsule ] || fail "libvirt qemu hook not installed"
for page in capsule-ctl capsuled capsule-service capsule-calibrate; do
  man -w "$page" 2>/dev/null | grep -q "/usr/share/man/man8/$page.8" || fail "man page $page(8) not installed"
done
for d in /lib/systemd/system /usr/lib/systemd/system; do
  [ -f "$d/capsuled.service" ] && UNITDIR=$d && break
done
[ -n "$UNITDIR" ] && [ -f "$UNITDIR/capsule-db.service" ] || fail "systemd units not installed"
for u in capsule-db.service capsuled.service; do
  [ "$(unit_lines $u Restart)" = on-failure ] || fail "$u: Restart=$(unit_lines $u Restart)"
done
unit_lines capsuled.service After | grep -q openvswitch-switch.service || fail "capsuled.service not ordered after openvswitch-switch"
# Nothing of the build tree: every shared library resolves to the system.
for f in /usr/sbin/capsuled /usr/bin/capsule-ctl /usr/bin/capsule-calibrate; do
  if ldd "$f" | grep -E "not found|$BUILD|$SRC"; then fail "$f needs the build tree or a missing library"; fi
done

echo "== the units' ExecStart lines, with /etc/default/capsule as an operator edits it"
mkdir -p "$TMP/run"
# The test's own run/db/log directory and chassis, so nothing of the
# machine's /run/capsule is touched (the units' PIDFile is /run/capsule/...).
sed -i "s|^CAPSULE_SERVICE_OPTS=.*|CAPSULE_SERVICE_OPTS=\"--rundir $TMP/run --chassis pkg-test --metrics-port off\"|" /etc/default/capsule
echo "CAPSULE_DB=\"unix:$TMP/run/db.sock\"" >>/etc/default/capsule  # for the libvirt hook
grep -q "pkg-test" /etc/default/capsule || fail "/etc/default/capsule has no CAPSULE_SERVICE_OPTS line"
# Started from another directory, so nothing is found relative to the source.
(cd / && run_unit capsule-db.service ExecStart) || fail "capsule-db.service ExecStart"
[ "$(unit_lines capsule-db.service PIDFile)" = /run/capsule/ovsdb-server.pid ] || fail "capsule-db PIDFile"
kill -0 "$(cat "$TMP/run/ovsdb-server.pid")" || fail "ovsdb-server not running"
(cd / && run_unit capsuled.service ExecStart) || fail "capsuled.service ExecStart"
[ "$(unit_lines capsuled.service PIDFile)" = /run/capsule/capsuled.pid ] || fail "capsuled PIDFile"
agent=$(cat "$TMP/run/capsuled.pid")
[ "$(readlink "/proc/$agent/exe")" = /usr/sbin/capsuled ] || fail "the running capsuled is $(readlink "/proc/$agent/exe"), not the installed one"

echo "== the installed capsule-ctl"
show=$(cd / && /usr/bin/capsule-ctl --db="unix:$TMP/run/db.sock" --timeout=10 show)
echo "$show" | sed 's/^/  /' | head -12
echo "$show" | grep -q '^Host "pkg-test"' || fail "capsule-ctl show has no Host pkg-test"
/usr/bin/capsule-ctl --db="unix:$TMP/run/db.sock" --timeout=10 --wait add-vm pkg-vm pid=$$ >/dev/null \
  || fail "capsule-ctl --wait add-vm against the installed capsuled"
/usr/bin/capsule-ctl --db="unix:$TMP/run/db.sock" --timeout=10 show | grep -q 'VM "pkg-vm"' || fail "VM pkg-vm not shown"

echo "== the installed capsule-ctl calibrate: it runs the installed capsule-calibrate, which runs the installed capsule-vm"
# Two budgets, one frame size, one direction, 0.3 s windows: a few seconds,
# enough to show the installed programs find each other and DPDK runs.
(cd / && /usr/bin/capsule-ctl --db="unix:$TMP/run/db.sock" --timeout=120 -- --budgets=5,10 \
   --frame-sizes=64 --directions=from_vm --seconds=0.3 --runs=1 calibrate >"$TMP/calibrate.log" 2>&1) \
  || fail "installed capsule-ctl calibrate: $(tail -5 "$TMP/calibrate.log")"
/usr/bin/capsule-ctl --db="unix:$TMP/run/db.sock" --timeout=10 show | grep -q "calibration (the datapath thread's cost curve)" \
  || fail "no calibration stored: $(/usr/bin/capsule-ctl --db="unix:$TMP/run/db.sock" show)"

echo "== libvirt: a domain whose metadata asks for a capsule, through the installed hook"
libvirt_domain  # below; skipped with the reason when libvirtd cannot run here

echo "== the units' ExecStop lines"
(cd / && run_unit capsuled.service ExecStop) || fail "capsuled.service ExecStop"
! kill -0 "$agent" 2>/dev/null || fail "capsuled still runs after ExecStop"
ovsdb=$(cat "$TMP/run/ovsdb-server.pid")
(cd / && run_unit capsule-db.service ExecStop) || fail "capsule-db.service ExecStop"
! kill -0 "$ovsdb" 2>/dev/null || fail "ovsdb-server still runs after ExecStop"
for p in /proc/[0-9]*; do
  case "$(readlink "$p/exe" 2>/dev/null)" in
    /usr/sbin/*capsule*) fail "$(readlink "$p/exe") (pid ${p#/proc/}) still runs after the units' ExecStop" ;;
  esac
done
echo PASS
