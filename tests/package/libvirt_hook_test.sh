#!/usr/bin/env bash
# The libvirt qemu hook (libvirt/capsule-qemu-hook) with exactly what
# libvirtd passes it: the domain XML on stdin and DOMAIN OPERATION SUB-OP
# EXTRA as arguments, against a real ovsdb-server and capsuled (started with
# scripts/capsule-service from this build tree) and a process with QEMU's
# TCG thread names (capsule-fakevm) standing for QEMU.
#
#   libvirt_hook_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
SRC=$1
BUILD=$2
HOOK=$SRC/libvirt/capsule-qemu-hook
TMP=$(mktemp -d /tmp/capsule-hook-test.XXXXXX)
VM=hook-vm
FAKEVM_PID=

fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== $(date +%T) $*"; }
cleanup() {
  [ -z "$FAKEVM_PID" ] || { kill "$FAKEVM_PID" 2>/dev/null || true; wait "$FAKEVM_PID" 2>/dev/null || true; }
  "$SRC/scripts/capsule-service" stop --rundir "$TMP" --bindir "$BUILD/bin" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT

"$SRC/scripts/capsule-service" start --rundir "$TMP" --chassis hook-test --metrics-port off --bindir "$BUILD/bin" >/dev/null
mkdir -p "$TMP/qemu"
# What an operator puts in /etc/default/capsule (the hook reads no other
# environment: libvirtd runs hooks with a clean one).
cat >"$TMP/default" <<EOV
CAPSULE_DB="unix:$TMP/db.sock"
CAPSULE_CTL=$BUILD/bin/capsule-ctl
CAPSULE_LIBVIRT_PIDDIR=$TMP/qemu
EOV
export CAPSULE_DEFAULTS=$TMP/default
ctl() { "$BUILD/bin/capsule-ctl" --db="unix:$TMP/db.sock" --timeout=10 "$@"; }
hook() {  # OPERATION SUB-OP XML-FILE -> exit status; stderr in $TMP/hook.err
  local rc=0
  "$HOOK" "$VM" "$1" "$2" - <"$3" 2>"$TMP/hook.err" || rc=$?
  return $rc
}
get() { ctl get "$@" | tr -d '"'; }

# A domain as libvirt hands it over: two vhost-user NICs (QEMU serving one
# socket, connecting to the other), a reservation, a fixed datapath budget,
# a policer on one NIC (what its VM receives) and ingress policing on the
# other (what its VM sends).
cat >"$TMP/domain.xml" <<EOD
<domain type='qemu' id='7'>
  <name>$VM</name>
  <uuid>6f1c9d3a-5d7e-4b8e-9a43-0c1f2e3d4b5a</uuid>
  <metadata>
    <capsule:capsule xmlns:capsule='http://capsule.example.org/xmlns/libvirt/domain/2.0'>
      <capsule:vcpu runtime='2ms' period='20ms'/>
      <capsule:net budget='1ms'/>
      <capsule:interface mac='52:54:00:C5:00:01' port='hook-eth0'>
        <capsule:qos type='egress-policer' cir='12500000' cbs='125000'/>
      </capsule:interface>
      <capsule:interface mac='52:54:00:c5:00:02'>
        <capsule:ingress-policing rate='10000' burst='1000'/>
      </capsule:interface>
    </capsule:capsule>
  </metadata>
  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>
  <devices>
    <interface type='vhostuser'>
      <mac address='52:54:00:c5:00:01'/>
      <source type='unix' path='$TMP/eth0.sock' mode='server'/>
      <model type='virtio'/>
    </interface>
    <interface type='vhostuser'>
      <mac address='52:54:00:c5:00:02'/>
      <source type='unix' path='$TMP/eth1.sock' mode='client'/>
      <model type='virtio'/>
    </interface>
    <interface type='network'><mac address='52:54:00:c5:00:03'/><source network='default'/></interface>
  </devices>
</domain>
EOD

step "prepare: VM and Port rows from the metadata and the interfaces"
hook prepare begin "$TMP/domain.xml" || fail "prepare: $(cat "$TMP/hook.err")"
[ "$(get VM $VM pidfile)" = "$TMP/qemu/$VM.pid" ] || fail "pidfile: $(get VM $VM pidfile)"
[ "$(get VM $VM vcpu_runtime_us) $(get VM $VM period_us) $(get VM $VM net_runtime_us)" = "2000 20000 1000" ] \
  || fail "reservation: $(ctl list VM $VM)"
[ "$(get VM $VM external_ids:libvirt-uuid)" = 6f1c9d3a-5d7e-4b8e-9a43-0c1f2e3d4b5a ] || fail "uuid"
# QEMU serves eth0 (libvirt mode=server): the datapath connects (client);
# QEMU connects to eth1: the datapath serves it. MACs as libvirt has them.
[ "$(get Port hook-eth0 vhost_path) $(get Port hook-eth0 vhost_mode) $(get Port hook-eth0 mac)" = "$TMP/eth0.sock client 52:54:00:c5:00:01" ] \
  || fail "port hook-eth0: $(ctl list Port hook-eth0)"
[ "$(get Port $VM-net1 vhost_path) $(get Port $VM-net1 vhost_mode) $(get Port $VM-net1 mac)" = "$TMP/eth1.sock server 52:54:00:c5:00:02" ] \
  || fail "port $VM-net1: $(ctl list Port $VM-net1)"
[ "$(ctl --bare --columns=name list Port | grep -c .)" = 2 ] || fail "only the vhost-user NICs are ports: $(ctl --bare --columns=name list Port)"
ctl show | grep -q "qos: egress-policer.*cir=12500000" || fail "qos: $(ctl show)"
[ "$(get Port $VM-net1 ingress_policing_rate) $(get Port $VM-net1 ingress_policing_burst)" = "10000 1000" ] || fail "ingress policing"
[ "$(get VM $VM status:state)" = waiting ] || fail "before QEMU runs the VM waits: $(get VM $VM status)"

start_qemu() {  # QEMU launches (here: capsule-fakevm with QEMU's TCG thread names)
  "$BUILD/bin/capsule-fakevm" --vcpus 2 --accel TCG --load idle --pidfile "$TMP/qemu/$VM.pid" >/dev/null &
  FAKEVM_PID=$!
  for _ in $(seq 100); do [ -s "$TMP/qemu/$VM.pid" ] && break; sleep 0.1; done
  [ -s "$TMP/qemu/$VM.pid" ] || fail "capsule-fakevm wrote no pidfile"
}
stop_qemu() {
  kill "$FAKEVM_PID"; wait "$FAKEVM_PID" 2>/dev/null || true; FAKEVM_PID=
  rm -f "$TMP/qemu/$VM.pid"
}
policy_of_vcpus() {  # the scheduling policy (field 41 of stat) of each "CPU n/TCG" thread
  local t
  for t in /proc/"$FAKEVM_PID"/task/*; do
    # the policy is field 41; the name field before it has a space in it
    grep -q '^CPU [0-9]*/TCG$' "$t/comm" && sed 's/.*) //' "$t/stat" | awk '{print $39}'
  done | sort -u | tr '\n' ' '
}

step "started, two vhost-user NICs: capsuled's refusal (one port per VM) fails the hook, with its reason"
hook start begin "$TMP/domain.xml" || fail "start: $(cat "$TMP/hook.err")"
start_qemu
if hook started begin "$TMP/domain.xml"; then fail "started succeeded for a VM capsuled rejects"; fi
grep -q "one vhost-user port per VM" "$TMP/hook.err" || fail "started: $(cat "$TMP/hook.err")"
[ "$(get VM $VM status:state)" = rejected ] || fail "state: $(get VM $VM status)"
[ "$(policy_of_vcpus)" = "0 " ] || fail "a rejected VM's vCPUs were changed: '$(policy_of_vcpus)'"
hook stopped end "$TMP/domain.xml" || fail "stopped: $(cat "$TMP/hook.err")"
stop_qemu
[ -z "$(ctl --bare --columns=name list VM)" ] || fail "VM row left: $(ctl list VM)"

step "one vhost-user NIC: prepare, start, started: capsuled takes QEMU's vCPU threads"
# The same domain without its second vhost-user NIC.
python3 - "$TMP/domain.xml" "$TMP/one.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
ET.register_namespace("capsule", "http://capsule.example.org/xmlns/libvirt/domain/2.0")
tree = ET.parse(sys.argv[1]); dom = tree.getroot()
devices = dom.find("devices")
for iface in devices.findall("interface"):
    if iface.find("mac").get("address") == "52:54:00:c5:00:02":
        devices.remove(iface)
meta = dom.find("metadata/{http://capsule.example.org/xmlns/libvirt/domain/2.0}capsule")
for i in meta.findall("{http://capsule.example.org/xmlns/libvirt/domain/2.0}interface"):
    if i.get("mac") == "52:54:00:c5:00:02":
        meta.remove(i)
tree.write(sys.argv[2])
PY
hook prepare begin "$TMP/one.xml" || fail "prepare: $(cat "$TMP/hook.err")"
[ "$(get VM $VM status:state)" = waiting ] || fail "before QEMU runs the VM waits: $(get VM $VM status)"
hook start begin "$TMP/one.xml" || fail "start: $(cat "$TMP/hook.err")"
start_qemu
hook started begin "$TMP/one.xml" || fail "started: $(cat "$TMP/hook.err")"
[ "$(get VM $VM status:state)" = running ] || fail "state after started: $(get VM $VM status)"
[ "$(policy_of_vcpus)" = "6 " ] || fail "vCPU threads not under SCHED_DEADLINE (policy 6): '$(policy_of_vcpus)'; $(ctl show)"

step "reconnect (libvirtd restarted, domain running): rows lost meanwhile are written again"
ctl --wait -- del-vm $VM
[ "$(policy_of_vcpus)" = "0 " ] || fail "del-vm did not release the vCPUs: '$(policy_of_vcpus)'"
hook reconnect begin "$TMP/one.xml" || fail "reconnect: $(cat "$TMP/hook.err")"
hook started begin "$TMP/one.xml" || fail "started after reconnect: $(cat "$TMP/hook.err")"
[ "$(get VM $VM status:state)" = running ] || fail "state after reconnect: $(get VM $VM status)"
[ "$(policy_of_vcpus)" = "6 " ] || fail "vCPUs not back under SCHED_DEADLINE after reconnect: '$(policy_of_vcpus)'"
hook reconnect begin "$TMP/one.xml" || fail "a second reconnect (rows present): $(cat "$TMP/hook.err")"

step "stopped, release: rows deleted, threads restored"
hook stopped end "$TMP/one.xml" || fail "stopped: $(cat "$TMP/hook.err")"
[ -z "$(ctl --bare --columns=name list VM)" ] || fail "VM row left: $(ctl list VM)"
[ -z "$(ctl --bare --columns=name list Port)" ] || fail "Port rows left: $(ctl list Port)"
[ "$(policy_of_vcpus)" = "0 " ] || fail "vCPU threads not back in SCHED_OTHER: '$(policy_of_vcpus)'"
hook release end "$TMP/one.xml" || fail "release (after stopped): $(cat "$TMP/hook.err")"
stop_qemu

step "a domain without capsule metadata is left alone"
sed '/<metadata>/,/<\/metadata>/d' "$TMP/domain.xml" >"$TMP/plain.xml"
hook prepare begin "$TMP/plain.xml" || fail "plain prepare: $(cat "$TMP/hook.err")"
[ -z "$(ctl --bare --columns=name list VM)" ] || fail "plain domain got a VM row"

step "bad metadata: the user's text and why, nothing written, start refused"
sed "s/runtime='2ms'/runtime='2 ms'/" "$TMP/domain.xml" >"$TMP/bad.xml"
if hook prepare begin "$TMP/bad.xml"; then fail "bad duration accepted"; fi
grep -q "runtime=\"2 ms\" is not a duration" "$TMP/hook.err" || fail "message: $(cat "$TMP/hook.err")"
sed "s/mac='52:54:00:c5:00:02'>/mac='52:54:00:c5:00:09'>/" "$TMP/domain.xml" >"$TMP/bad.xml"
if hook prepare begin "$TMP/bad.xml"; then fail "unknown MAC accepted"; fi
grep -q "52:54:00:c5:00:09'> names no vhost-user interface" "$TMP/hook.err" || fail "message: $(cat "$TMP/hook.err")"
# capsule-ctl refuses it (runtime above period): its reason, no row left.
sed "s/runtime='2ms'/runtime='30ms'/" "$TMP/domain.xml" >"$TMP/bad.xml"
if hook prepare begin "$TMP/bad.xml"; then fail "runtime > period accepted"; fi
grep -q "set-rsv $VM" "$TMP/hook.err" || fail "message: $(cat "$TMP/hook.err")"
[ -z "$(ctl --bare --columns=name list VM)" ] || fail "refused domain left a VM row"
# A QoS attribute capsule does not know (a typo) is refused by capsule-ctl's
# rules with the user's text, not dropped.
sed "s/cbs='125000'/cbz='125000'/" "$TMP/domain.xml" >"$TMP/bad.xml"
if hook prepare begin "$TMP/bad.xml"; then fail "unknown QoS key accepted"; fi
grep -q "cbz" "$TMP/hook.err" || fail "message: $(cat "$TMP/hook.err")"
[ -z "$(ctl --bare --columns=name list VM)" ] || fail "refused domain left a VM row"

step "metadata namespace 1.0 (policers the other way round): refused with policers, read without"
sed "s|xmlns/libvirt/domain/2.0|xmlns/libvirt/domain/1.0|" "$TMP/domain.xml" >"$TMP/old.xml"
if hook prepare begin "$TMP/old.xml"; then fail "1.0 metadata with policers accepted"; fi
grep -q "namespace 1.0, where <capsule:qos> policed what the VM sends" "$TMP/hook.err" || fail "message: $(cat "$TMP/hook.err")"
[ -z "$(ctl --bare --columns=name list VM)" ] || fail "refused 1.0 domain left a VM row"
sed -e "s|xmlns/libvirt/domain/2.0|xmlns/libvirt/domain/1.0|" -e '/<capsule:qos /d' -e '/<capsule:ingress-policing /d' \
  "$TMP/domain.xml" >"$TMP/old.xml"
hook prepare begin "$TMP/old.xml" || fail "1.0 metadata without policers: $(cat "$TMP/hook.err")"
[ "$(get VM $VM vcpu_runtime_us)" = 2000 ] || fail "1.0 metadata not read: $(ctl list VM)"
hook release end "$TMP/old.xml" || fail "release of a 1.0 domain: $(cat "$TMP/hook.err")"
[ -z "$(ctl --bare --columns=name list VM)" ] || fail "1.0 domain's VM row left: $(ctl list VM)"
echo PASS
