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

cleanup() {
  local rc=$?
  if [ $installed = yes ]; then
    if [ -n "$UNITDIR" ]; then
      run_unit capsuled.service ExecStop >/dev/null 2>&1 || true
      run_unit capsule-db.service ExecStop >/dev/null 2>&1 || true
    fi
    # Anything the units started that did not stop: end it by its pidfile.
    for f in "$TMP"/run/*.pid; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
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

echo "== dpkg -i"
installed=yes
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$TMP/install.log" 2>&1 || { cat "$TMP/install.log"; fail "dpkg -i"; }
for f in /usr/sbin/capsuled /usr/sbin/capsule-service /usr/sbin/capsule-rsv /usr/bin/capsule-ctl \
         /usr/bin/capsule-calibrate /usr/bin/capsule-vm; do
  [ -x "$f" ] || fail "$f not installed"
done
[ -f /usr/share/capsule/capsule.ovsschema ] || fail "schema not in /usr/share/capsule"
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

echo "== the units' ExecStop lines"
(cd / && run_unit capsuled.service ExecStop) || fail "capsuled.service ExecStop"
! kill -0 "$agent" 2>/dev/null || fail "capsuled still runs after ExecStop"
ovsdb=$(cat "$TMP/run/ovsdb-server.pid")
(cd / && run_unit capsule-db.service ExecStop) || fail "capsule-db.service ExecStop"
! kill -0 "$ovsdb" 2>/dev/null || fail "ovsdb-server still runs after ExecStop"
echo PASS
