# The demo's OVS act (sourced by scripts/demo): capsules inside stock
# OVS-DPDK. `capsule-service start --with-ovs` brings up OVS-DPDK (its own
# ovsdb-server, ovs-vswitchd-dpdk, bridge br-int) and capsuled in OVS mode;
# two emulated VMs (capsule-vm) get ports with capsule-ctl, and a
# controller's OpenFlow rule sends what each VM sends to the wire (a
# net_null port). The same story as act 2: vm1's throughput while its
# neighbour vm2 floods, with two CPU hogs standing for the host's other
# work; first without capsules, then with them. What vm1 sends is switched
# by vm1's own OVS PMD thread, which capsuled puts in vm1's capsule.
#
#   demo_ovs_act SECONDS

demo_ovs_act() {
  local seconds=${1:-4}
  local bin=$CAPSULE_BUILD/bin
  local t
  t=$(mktemp -d /tmp/capsule-demo-ovs-XXXXXX)
  local run=$t/run
  DEMO_OVS_PIDS=()
  DEMO_OVS_DIR=$t
  DEMO_OVS_SVC=("$CAPSULE_ROOT/scripts/capsule-service" --rundir "$run" --chassis demo-ovs --metrics-port off
    --bindir "$bin" --with-ovs --ovs-vms 2)
  trap demo_ovs_cleanup EXIT
  local ctl=("$bin/capsule-ctl" --db="unix:$run/db.sock" --timeout=30)
  local ovsenv=(env OVS_RUNDIR="$run/ovs")
  local vsctl=("${ovsenv[@]}" ovs-vsctl --db="unix:$run/ovs/db.sock" --timeout=20)

  printf 'state directory %s (databases, sockets, logs; removed at the end)\n\n' "$t"
  printf '$ capsule-service start --with-ovs --ovs-vms 2\n'
  "${DEMO_OVS_SVC[@]}" start | sed 's/^/  /' || { echo "capsule-demo: capsule-service --with-ovs failed" >&2; return 1; }

  # The wire: a port that takes whatever OVS sends it (net_null, no rx).
  demo_ovs_run "${vsctl[@]}" add-port br-int wire -- set Interface wire type=dpdk \
    "options:dpdk-devargs=net_null0,no-rx=1" || return 1

  # Two CFS hogs: the host's other work, so that nobody gets a CPU for free.
  local i
  for i in 1 2; do
    bash -c 'exec -a demo-hog bash -c "while :; do :; done"' &
    DEMO_OVS_PIDS+=($!)
  done
  printf '\nTwo CPU hogs (pids %s) stand for the host'"'"'s other work.\n' "${DEMO_OVS_PIDS[*]}"

  demo_ovs_vm vm1 02:00:00:00:00:01 || return 1
  local -a results=()
  demo_ovs_phase "vm1 alone, no capsules" "$seconds"
  results+=("$DEMO_OVS_LINE")

  demo_ovs_vm vm2 02:00:00:00:00:02 || return 1
  demo_ovs_phase "vm2 floods, no capsules" "$seconds"
  results+=("$DEMO_OVS_LINE")

  printf '\nGiving vm1 a capsule (vCPU 8 ms + its OVS PMD 8 ms every 20 ms) and vm2 a small one (2 + 2 ms):\n'
  demo_ovs_run "${ctl[@]}" --wait -- --net=8ms set-rsv vm1 8ms 20ms -- --net=2ms set-rsv vm2 2ms 20ms || return 1
  # capsuled reserves each VM's OVS PMD thread when it appears (within 1 s).
  local n
  for n in $(seq 50); do
    "${ctl[@]}" get VM vm1 status:threads 2>/dev/null | grep -q 'pmd=' && break
    sleep 0.1
  done
  demo_ovs_phase "vm2 floods, capsules" "$seconds"
  results+=("$DEMO_OVS_LINE")

  printf '\nWhere each VM'"'"'s packets are switched (OVS decides, capsule only pinned the queues):\n'
  printf '$ ovs-appctl dpif-netdev/pmd-rxq-show\n'
  "${ovsenv[@]}" ovs-appctl -t "$run/ovs/ovs-vswitchd.ctl" dpif-netdev/pmd-rxq-show | grep -E 'pmd thread|port:' | sed 's/^/  /' || true
  printf '$ ovs-appctl -t capsuled capsule/show\n'
  ovs-appctl -t "$run/capsuled.ctl" capsule/show | sed 's/^/  /' || true

  printf '\nvm1'"'"'s throughput (1514-byte frames it sends, as OVS counts them on its port)\n\n'
  printf '%-28s  %10s  %10s\n' phase "vm1 kpps" "vm2 kpps"
  printf '%s\n' "--------------------------------------------------"
  printf '%s\n' "${results[@]}"
  cat <<'EOF'

Stock OVS-DPDK switched every packet under an OpenFlow rule (in_port=vmN,
actions=output:wire), as a controller's pipeline would. Without capsules,
vm1, its OVS PMD thread, the flooding neighbour and the hogs share the CPUs
in CFS, and vm2's flood takes from vm1. In capsules, capsuled pinned each
VM's queues to an OVS PMD of its own and put that thread in the VM's
capsule next to its vCPU: vm1 gets what its capsule holds, flood or not.
What stays outside: traffic *to* vm1 from the wire is switched by OVS's
shared PMD (the uplink's), in no VM's capsule (docs/ovs-mode.md).
EOF
  printf '\nStopping: VMs, hogs, capsuled (its rows leave OVS), OVS-DPDK, ovsdb-servers.\n'
  demo_ovs_cleanup
  trap - EXIT
}

# Prints the command, runs it; its output indented.
demo_ovs_run() {
  local shown=() a
  for a in "$@"; do
    case $a in */capsule-ctl) shown+=(capsule-ctl) ;; env|OVS_RUNDIR=*|--db=*|--timeout=*) ;; *) shown+=("$a") ;; esac
  done
  printf '$ %s\n' "${shown[*]}"
  "$@" 2>&1 | sed 's/^/  /'
  return "${PIPESTATUS[0]}"
}

# demo_ovs_vm NAME MAC: an emulated VM sending 1514-byte frames flat out
# towards the wire; its row (best effort) and the controller's flow.
demo_ovs_vm() {
  local name=$1 mac=$2 run=$DEMO_OVS_DIR/run bin=$CAPSULE_BUILD/bin
  "$bin/capsule-vm" --socket "$DEMO_OVS_DIR/$name.sock" --mac "$mac" --mode tx --rate 0 --size 1514 \
    --dst 02:00:00:00:00:fe --report-ms 1000 >"$DEMO_OVS_DIR/$name.out" 2>&1 &
  local pid=$!
  DEMO_OVS_PIDS+=("$pid")
  printf '\nStarted %s (pid %s), an emulated VM sending 1514-byte frames as fast as it can.\n' "$name" "$pid"
  demo_ovs_run "$bin/capsule-ctl" --db="unix:$run/db.sock" --timeout=30 --wait add-vm "$name" "pid=$pid" \
    -- add-port "$name" "$name-eth0" "$DEMO_OVS_DIR/$name.sock" || return 1
  local n
  for n in $(seq 100); do grep -q 'capsule-vm: ready' "$DEMO_OVS_DIR/$name.out" && break; sleep 0.1; done
  grep -q 'capsule-vm: ready' "$DEMO_OVS_DIR/$name.out" ||
    { echo "capsule-demo: $name did not connect to OVS: $(tail -3 "$DEMO_OVS_DIR/$name.out")" >&2; return 1; }
  demo_ovs_run env OVS_RUNDIR="$run/ovs" ovs-ofctl add-flow br-int "in_port=$name-eth0,actions=output:wire"
}

demo_ovs_calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }

# Frames OVS received from a VM's port so far.
demo_ovs_rx() {
  env OVS_RUNDIR="$DEMO_OVS_DIR/run/ovs" ovs-ofctl dump-ports br-int "$1-eth0" 2>/dev/null |
    sed -n 's/.*rx pkts=\([0-9]*\).*/\1/p' | head -1 || true  # a VM not started yet: no port, 0
}

# demo_ovs_phase LABEL SECONDS: live lines, then DEMO_OVS_LINE for the table.
demo_ovs_phase() {
  local label=$1 seconds=$2 s
  printf '\n--- %s (%s s) ---\n' "$label" "$seconds"
  local a0 b0 a1 b1 la lb t0 t1
  sleep 0.5  # the first frames of a phase settle
  a0=$(demo_ovs_rx vm1); b0=$(demo_ovs_rx vm2); a0=${a0:-0}; b0=${b0:-0}
  la=$a0; lb=$b0; t0=$(date +%s.%N)
  for ((s = 1; s <= seconds; s++)); do
    sleep 1
    a1=$(demo_ovs_rx vm1); b1=$(demo_ovs_rx vm2); a1=${a1:-0}; b1=${b1:-0}
    printf '  t=%2ds  vm1 sent %7.1f kpps   vm2 sent %7.1f kpps\n' "$s" \
      "$(demo_ovs_calc "($a1 - $la) / 1000")" "$(demo_ovs_calc "($b1 - $lb) / 1000")"
    la=$a1; lb=$b1
  done
  t1=$(date +%s.%N)
  DEMO_OVS_LINE=$(printf '%-28s  %10.1f  %10.1f' "$label" "$(demo_ovs_calc "($a1 - $a0) / ($t1 - $t0) / 1000")" \
    "$(demo_ovs_calc "($b1 - $b0) / ($t1 - $t0) / 1000")")
}

demo_ovs_cleanup() {
  local p
  for p in "${DEMO_OVS_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${DEMO_OVS_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  DEMO_OVS_PIDS=()
  if [ -n "${DEMO_OVS_DIR:-}" ] && [ -d "$DEMO_OVS_DIR" ]; then
    "${DEMO_OVS_SVC[@]}" stop | sed 's/^/  /' || true
    rm -rf "$DEMO_OVS_DIR"
    DEMO_OVS_DIR=
  fi
}
