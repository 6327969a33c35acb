#!/usr/bin/env bash
# capsule-service's upgrade of a Capsule database made with schema 1.1.0
# (tests/package/capsule-1.1.0.ovsschema, the schema as released) to this
# tree's 2.0.0, which gave the Port policer columns OVS's meaning (qos: what
# the VM receives; ingress_policing_*: what it sends; 1.x the reverse).
# Real ovsdb-tool and ovsdb-server, through `capsule-service start`:
#  1. every limit 2.0.0 can express lands on the column that limits the same
#     traffic, the old file is kept as a backup, capsule-ctl reads the result;
#  2. a database with limits 2.0.0 cannot express (a trtcm-policer on what a
#     VM sends, a byte rate that is not whole kbit/s, two policers on what a
#     VM receives) is refused with each port's reason, the file is left as it
#     was (same bytes, still 1.1.0) and no server is left running.
#
#   schema_upgrade_test.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
SRC=$1
BUILD=$2
OLD=$SRC/tests/package/capsule-1.1.0.ovsschema
TMP=$(mktemp -d /tmp/capsule-upgrade-test.XXXXXX)

fail() { echo "FAIL: $*" >&2; exit 1; }
service() { "$SRC/scripts/capsule-service" "$@" --rundir "$TMP/run" --no-capsuled --bindir "$BUILD/bin"; }
cleanup() {
  service stop >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
mkdir -p "$TMP/run"
ctl() { "$BUILD/bin/capsule-ctl" --db="unix:$TMP/run/db.sock" --timeout=10 "$@"; }
transact() {  # fails on a transaction the database refused
  local out
  out=$(ovsdb-tool transact "$TMP/run/capsule.db" "$1")
  ! grep -q '"error"' <<<"$out" || fail "transaction refused: $out"
}
port() {  # name qos-named-uuid|"" rate burst kpkts kburst -> a Port insert
  local qos='["set",[]]'
  [ -z "$2" ] || qos="[\"named-uuid\",\"$2\"]"
  printf '{"op":"insert","table":"Port","uuid-name":"%s","row":{"name":"%s","vhost_path":"/tmp/%s.sock","qos":%s,"ingress_policing_rate":%s,"ingress_policing_burst":%s,"ingress_policing_kpkts_rate":%s,"ingress_policing_kpkts_burst":%s}}' \
    "$1" "$1" "$1" "$qos" "$3" "$4" "$5" "$6"
}
qos() {  # uuid-name type k=v...
  local name=$1 type=$2 pairs=""
  shift 2
  for kv in "$@"; do pairs+="${pairs:+,}[\"${kv%%=*}\",\"${kv#*=}\"]"; done
  printf '{"op":"insert","table":"QoS","uuid-name":"%s","row":{"type":"%s","other_config":["map",[%s]]}}' \
    "$name" "$type" "$pairs"
}

# --- 1. what 2.0.0 can express is carried over -----------------------------
ovsdb-tool create "$TMP/run/capsule.db" "$OLD"
transact "[\"Capsule\",
  $(qos qa egress-policer cir=4000000 cbs=20000),
  $(qos qb pkt-policer pir=500000 pbs=30000),
  $(port a0 qa 10000 1000 0 0),
  $(port b0 qb 0 0 100 6),
  $(port c0 '' 8000 0 0 0),
  $(port d0 '' 0 0 0 0),
  {\"op\":\"insert\",\"table\":\"VM\",\"row\":{\"name\":\"v\",\"chassis\":\"h\",\"ports\":[\"set\",[[\"named-uuid\",\"a0\"],[\"named-uuid\",\"b0\"],[\"named-uuid\",\"c0\"],[\"named-uuid\",\"d0\"]]]}}]"
out=$(service start) || fail "start: $out"
echo "$out"
grep -q "Upgraded $TMP/run/capsule.db to schema 2.0.0" <<<"$out" || fail "no upgrade message: $out"
grep -q "port a0: QoS egress-policer cbs=20000 cir=4000000 -> ingress_policing_rate=32000 ingress_policing_burst=160 (what the VM sends)" <<<"$out" ||
  fail "a0's conversion not reported: $out"
[ -f "$TMP/run/capsule.db.backup-1.1.0" ] || fail "no backup of the 1.1.0 database"
[ "$(ovsdb-tool db-version "$TMP/run/capsule.db")" = 2.0.0 ] || fail "database not at 2.0.0"
get() { ctl get "$@"; }
expect() { local got; got=$(get "${@:1:3}"); [ "$got" = "$4" ] || fail "$1 $2 $3: got '$got', want '$4'"; }
# a0: its 1.x QoS limited what the VM sends, now ingress policing (4 MB/s =
# 32000 kbit/s, 20000 B = 160 kbit); its 1.x ingress policing limited what
# it receives, now its QoS (10000 kbit/s = 1250000 B/s, 1000 kbit = 125000 B).
expect Port a0 ingress_policing_rate 32000
expect Port a0 ingress_policing_burst 160
expect QoS a0 type egress-policer
expect QoS a0 other_config '{cbs="125000", cir="1250000"}'
# b0: packet rates, the same way round.
expect Port b0 ingress_policing_kpkts_rate 500
expect Port b0 ingress_policing_kpkts_burst 30
expect Port b0 ingress_policing_rate 0
expect QoS b0 type pkt-policer
expect QoS b0 other_config '{pbs="6000", pir="100000"}'
# c0: a burst of 0 was OVS's default of 8000 kbit: written out (1000000 B).
expect QoS c0 other_config '{cbs="1000000", cir="1000000"}'
expect Port c0 ingress_policing_rate 0
# d0: nothing to carry, nothing written; no QoS row left behind.
expect Port d0 qos '[]'
[ "$(ctl --bare --columns=type list QoS | grep -c .)" = 3 ] || fail "QoS rows: $(ctl list QoS)"
# A second start converts nothing again.
service stop >/dev/null
out=$(service start) || fail "restart: $out"
grep -q Upgraded <<<"$out" && fail "converted twice: $out"
expect Port a0 ingress_policing_rate 32000
service stop >/dev/null
rm -rf "$TMP/run"/*

# --- 2. what 2.0.0 cannot express is refused, nothing changed -------------
ovsdb-tool create "$TMP/run/capsule.db" "$OLD"
transact "[\"Capsule\",
  $(qos qe trtcm-policer cir=1000000 cbs=10000 eir=500000 ebs=10000),
  $(qos qf egress-policer cir=1000001 cbs=20000),
  $(qos qg egress-policer cir=1000000 cbs=20000),
  $(port e0 qe 0 0 0 0),
  $(port f0 qf 0 0 0 0),
  $(port g0 qg 1000 100 10 1),
  {\"op\":\"insert\",\"table\":\"VM\",\"row\":{\"name\":\"w\",\"chassis\":\"h\",\"ports\":[\"set\",[[\"named-uuid\",\"e0\"],[\"named-uuid\",\"f0\"],[\"named-uuid\",\"g0\"]]]}}]"
[ "$(ovsdb-tool query "$TMP/run/capsule.db" '["Capsule",{"op":"select","table":"QoS","where":[]}]' | grep -o '"type"' | wc -l)" = 3 ] ||
  fail "the 1.1.0 rows to refuse were not written"
sum=$(md5sum <"$TMP/run/capsule.db")
rc=0
out=$(service start 2>&1) || rc=$?
echo "$out"
[ $rc -ne 0 ] || fail "an upgrade that loses limits was not refused"
grep -q "port e0: QoS trtcm-policer .* (on what the VM sends) has no equivalent in 2.0.0" <<<"$out" || fail "e0: $out"
grep -q "port f0: QoS egress-policer cbs=20000 cir=1000001 (on what the VM sends) is not a whole number of kbit/s" <<<"$out" ||
  fail "f0: $out"
grep -q "port g0: ingress_policing_rate=1000 and ingress_policing_kpkts_rate=10 (on what the VM receives) are two policers" <<<"$out" ||
  fail "g0: $out"
grep -q "capsule.db stays at schema 1.1.0" <<<"$out" || fail "no verdict: $out"
[ "$(md5sum <"$TMP/run/capsule.db")" = "$sum" ] || fail "the refused database was changed"
[ "$(ovsdb-tool db-version "$TMP/run/capsule.db")" = 1.1.0 ] || fail "the refused database is not at 1.1.0"
[ ! -e "$TMP/run/capsule.db.converting" ] || fail "the refused copy was left behind"
[ ! -e "$TMP/run/ovsdb-server.pid" ] || ! kill -0 "$(cat "$TMP/run/ovsdb-server.pid")" 2>/dev/null ||
  fail "an ovsdb-server runs on the refused database"
echo PASS
