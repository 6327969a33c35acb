// Network budgets sized by the host's calibration ("auto"): how much CPU a
// VM's datapath thread needs each period to carry what its policers let
// through, from the cost curves `capsule-ctl calibrate` measured.
//
// The policers bound a VM's traffic, in OVS's directions: to_vm (what the
// switch sends to the VM) by its port's QoS (egress-policer, trtcm-policer:
// bytes/s; pkt-policer: packets/s), from_vm (what the switch receives from
// the VM) by ingress_policing_rate (kbps) / ingress_policing_kpkts_rate
// (kpps). In the capsule datapath the VM's own thread does the work of both
// directions (its dequeue and its copy into the VM), so both count in the
// VM's budget, each priced by its own calibrated curve. Byte
// rates become packets at an assumed frame size (the smallest calibrated
// size unless the VM says otherwise: the worst case, since a byte policer
// lets the most packets through at the smallest frames). A curve's measured
// points (budget / period -> packets/s) give the share of a CPU rate R
// needs, interpolated between the points and extended beyond them along the
// end segments (the fitted line when a curve has fewer than two points);
// between calibrated frame sizes the share is interpolated in frame size.
// The budget is that share of the VM's period plus the margin, plus 1 % of
// the period for the spread of what waking a throttled thread costs.
//
// Traffic beyond what a policer passes (a VM sending more than its ingress
// policing allows, or more sent to it than its QoS allows) keeps its datapath thread
// busy until the budget is spent; the thread then waits for its next period,
// so the policer sees the traffic in one stretch per period. Its bucket must
// hold the rate times the period to pass the full rate; a smaller burst gets
// a warning with the number (not a refusal: the burst is the operator's
// choice, and the VM still runs).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "capsule/ovs/db.h"
#include "capsule/result.h"
#include "datapath.h"

namespace capsule::agent {

// The default margin: calibrations of one host measured 8 to 18 Mpps per CPU
// for the same curve from run to run on a busy 2-core VM; 20 % left rates
// 2-5 % short after an optimistic one (capsule-bench auto-budget).
inline constexpr double kDefaultNetMargin = 0.3;  // capsule-ctl.c prints it too

struct NetBudget {
  int64_t runtime_us = 0;
  double cpu_share = 0;      // of one CPU, before the margin
  std::string explanation;   // how it was derived, for status and `show`
  bool warning = false;      // the explanation ends with a warning (a policer
                             // burst too small to pass its rate in a capsule)
};

// `vm_options`: the VM row's options; net_frame_size (bytes, 60..9216) is
// read from there.
Result<NetBudget> derive_net_budget(const VmNetConfig& net, const std::vector<ovs::CalibrationRow>& curves,
                                    int64_t period_us, double margin, const ovs::StringMap& vm_options);

}  // namespace capsule::agent
