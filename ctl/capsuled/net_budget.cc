#include "net_budget.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <map>

namespace capsule::agent {
namespace {

// Policers count frames without their 14-byte Ethernet header (as OVS).
constexpr int64_t kEthernetHeader = 14;

std::string num(double v, int digits = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

// The share of a CPU one measured curve says `pps` needs: interpolated
// between its points (budget / period -> packets/s), the end segments
// extended beyond them (so the lowest segment carries the per-period cost
// of waking a throttled thread down to small budgets, which a line fitted
// over the whole range misses). A point that carried no more than the one
// below it is skipped (noise); with fewer than two points, the fitted line.
double share_on_curve(const ovs::CalibrationRow& c, double pps) {
  std::vector<std::pair<double, double>> pts;  // (share, pps), shares ascending
  if (c.period_us > 0)
    for (const auto& [budget_us, r] : c.throughput)
      if (pts.empty() || r > pts.back().second) pts.emplace_back(double(budget_us) / double(c.period_us), r);
  if (pts.size() < 2) return (pps - c.intercept_pps) / c.pps_per_cpu;
  std::size_t i = 0;  // the segment [i, i + 1] to use
  while (i + 2 < pts.size() && pps > pts[i + 1].second) ++i;
  const auto &a = pts[i], &b = pts[i + 1];
  return a.first + (pps - a.second) * (b.first - a.first) / (b.second - a.second);
}

// The share at frame size `size` from one direction's curves (sorted by
// frame size): the nearest curve outside the calibrated sizes, interpolated
// linearly in frame size between them.
double share_at(const std::vector<const ovs::CalibrationRow*>& curves, int64_t size, double pps) {
  if (size <= curves.front()->frame_size) return share_on_curve(*curves.front(), pps);
  if (size >= curves.back()->frame_size) return share_on_curve(*curves.back(), pps);
  for (std::size_t i = 0; i + 1 < curves.size(); ++i) {
    const auto &a = *curves[i], &b = *curves[i + 1];
    if (size < a.frame_size || size > b.frame_size) continue;
    const double t = double(size - a.frame_size) / double(b.frame_size - a.frame_size);
    return (1 - t) * share_on_curve(a, pps) + t * share_on_curve(b, pps);
  }
  return share_on_curve(*curves.back(), pps);
}

// The packets per second one direction of one port can carry, bounded by
// its policers; nullopt when nothing polices it.
struct Bound {
  double pps = 0;
  std::string source;
  // What the policer's bucket holds (packets, or bytes with bytes_per_sec)
  // and refills per second in the same unit.
  double burst = 0, refill = 0;
  const char* unit = "packets";
};
std::optional<Bound> min_bound(std::optional<Bound> a, std::optional<Bound> b) {
  if (!a) return b;
  if (!b) return a;
  return a->pps <= b->pps ? a : b;
}

// OVS's directions: the port's QoS bounds what the switch sends to the VM
// (to_vm), ingress policing what it receives from the VM (from_vm).
std::optional<Bound> qos_bound(const PortConfig& p, int64_t frame) {
  if (!p.egress) return std::nullopt;
  const auto& q = p.egress->params;
  auto get = [&](const char* k) { return q.count(k) ? double(q.at(k)) : 0.0; };
  if (p.egress->type == "pkt-policer")
    return Bound{get("pir"), "pkt-policer pir " + num(get("pir")) + " pps", get("pbs"), get("pir"), "packets (pbs)"};
  const bool trtcm = p.egress->type == "trtcm-policer";
  const double bytes = trtcm ? get("cir") + get("eir") : get("cir");
  return Bound{bytes / double(frame - kEthernetHeader),
               p.egress->type + " " + num(bytes) + " B/s at " + std::to_string(frame) + "-byte frames",
               trtcm ? get("cbs") + get("ebs") : get("cbs"), bytes, trtcm ? "bytes (cbs + ebs)" : "bytes (cbs)"};
}

std::optional<Bound> ingress_policing_bound(const PortConfig& p, int64_t frame) {
  std::optional<Bound> b;
  if (p.ingress_kbps) {
    // OVS: a burst of 0 kb means its default of 8000 kb.
    const double burst_bytes = double(p.ingress_burst_kb ? p.ingress_burst_kb : 8000) * 1000 / 8;
    const double bytes = double(p.ingress_kbps) * 1000 / 8;
    b = Bound{bytes / double(frame - kEthernetHeader),
              "ingress_policing_rate " + std::to_string(p.ingress_kbps) + " kbps at " + std::to_string(frame) +
                  "-byte frames",
              burst_bytes, bytes, "bytes (ingress_policing_burst)"};
  }
  if (p.ingress_kpps)
    b = min_bound(b, Bound{double(p.ingress_kpps) * 1000,
                           "ingress_policing_kpkts_rate " + std::to_string(p.ingress_kpps) + " kpps",
                           double(p.ingress_burst_kpkts) * 1000, double(p.ingress_kpps) * 1000,
                           "packets (ingress_policing_kpkts_burst)"});
  return b;
}

}  // namespace

Result<NetBudget> derive_net_budget(const VmNetConfig& net, const std::vector<ovs::CalibrationRow>& curves,
                                    int64_t period_us, double margin, const ovs::StringMap& vm_options) {
  if (period_us <= 0) return Error{"net budget auto needs the VM's period (set-rsv VM RUNTIME PERIOD --net=auto)", EINVAL};
  if (margin < 0 || margin > 10)
    return Error{"net_margin " + num(margin, 2) + " is outside 0..10 (0.2 adds 20 %)", EINVAL};
  std::optional<int64_t> frame_size;
  if (auto it = vm_options.find("net_frame_size"); it != vm_options.end()) {
    const std::string& text = it->second;
    const bool digits = !text.empty() && text.size() <= 5 && text.find_first_not_of("0123456789") == std::string::npos;
    if (!digits || std::stoll(text) < 60 || std::stoll(text) > 9216)
      return Error{"options:net_frame_size=\"" + text + "\" is not a frame size: give bytes from 60 to 9216", EINVAL};
    frame_size = std::stoll(text);
  }
  if (net.ports.empty())
    return Error{"net budget auto needs a port: the budget follows the port's policers (add-port, set-qos)", EINVAL};
  if (curves.empty())
    return Error{"net budget auto needs this host's cost curve, and it has none: run `capsule-ctl calibrate`", ENOENT};

  NetBudget out;
  std::string parts, unbudgeted, date;
  std::vector<std::pair<std::string, Bound>> small_bursts;  // (port, its policer)
  bool any = false;
  for (const char* dir : {"from_vm", "to_vm"}) {
    std::vector<const ovs::CalibrationRow*> mine;
    for (const auto& c : curves)
      if (c.direction == dir && c.pps_per_cpu > 0) mine.push_back(&c);
    std::sort(mine.begin(), mine.end(), [](auto* a, auto* b) { return a->frame_size < b->frame_size; });
    // Unless the VM names its frame size, the smallest calibrated one (the
    // most packets a byte policer lets through).
    const int64_t frame = frame_size.value_or(mine.empty() ? 64 : mine.front()->frame_size);
    double pps = 0;
    std::string sources;
    std::vector<std::string> open_ports;
    for (const auto& p : net.ports) {
      auto b = std::string(dir) == "to_vm" ? qos_bound(p, frame) : ingress_policing_bound(p, frame);
      if (!b) {
        open_ports.push_back(p.name);
        continue;
      }
      pps += b->pps;
      sources += (sources.empty() ? "" : " + ") + b->source + " on " + p.name;
      // In a capsule the datapath thread of a VM whose traffic exceeds what
      // its policer passes spends its budget and waits for its next period: the
      // policer sees that traffic once per period, and its bucket must hold
      // a period's worth of tokens to pass the full rate.
      if (b->burst < b->refill * double(period_us) / 1e6) small_bursts.push_back({p.name, *b});
    }
    if (!open_ports.empty()) {
      std::string names;
      for (const auto& n : open_ports) names += (names.empty() ? "" : ",") + n;
      unbudgeted += std::string("; ") + dir + " of " + names + " is not policed and not budgeted";
    }
    if (sources.empty()) continue;
    if (mine.empty())
      return Error{std::string("net budget auto: ") + dir + " traffic is policed (" + sources +
                       ") but this host's calibration has no " + dir +
                       " curve: run `capsule-ctl calibrate` (it measures both directions)",
                   ENOENT};
    any = true;
    const double share = std::max(0.0, share_at(mine, frame, pps));
    out.cpu_share += share;
    parts += std::string(parts.empty() ? "" : " + ") + dir + " " + num(pps) + " pps (" + sources + ") needs " +
             num(100 * share, 1) + " %";
    date = mine.front()->date;
  }
  if (!any)
    return Error{"net budget auto needs a policer on a port of the VM (ingress_policing_rate or "
                 "ingress_policing_kpkts_rate for what it sends, set-qos PORT pkt-policer pir=... for what it "
                 "receives): without one its rate, and so its budget, has no bound",
                 EINVAL};

  const double with_margin = out.cpu_share * (1 + margin);
  if (with_margin > 1)
    return Error{"net budget auto: the policed rates need " + num(100 * with_margin, 1) +
                     " % of a CPU for the datapath thread (" + parts + ", + " + num(100 * margin) +
                     " % margin), more than the one CPU a thread can use: lower the policer rates",
                 ERANGE};
  // Plus 1 % of the period: a throttled thread pays for waking (and for
  // caches the others have cooled) once per period; the calibration's small
  // budgets measure that cost on average, this covers its spread (budgets of
  // 1-2 % of 20 ms carried 70-100 % of their rate without it).
  const int64_t headroom_us = std::max<int64_t>(1, period_us / 100);
  out.runtime_us = int64_t(std::ceil(with_margin * double(period_us))) + headroom_us;
  if (out.runtime_us > period_us)
    return Error{"net budget auto: the policed rates need " + std::to_string(out.runtime_us) + " us of every " +
                     std::to_string(period_us) + " us (" + parts + ", + " + num(100 * margin) +
                     " % margin, + 1 % of the period), more than the period: lower the policer rates",
                 ERANGE};
  std::string warnings;
  for (const auto& [port, b] : small_bursts) {
    // Per period it passes its bucket plus what refills while the thread runs.
    const double need = b.refill * double(period_us) / 1e6;
    const double passes = std::min(1.0, (b.burst + b.refill * double(out.runtime_us) / 1e6) / need);
    warnings += "; warning: the burst of " + port + " (" + num(b.burst) + " " + b.unit +
                ") is less than its rate times the period (" + num(std::ceil(need)) +
                "): the datapath thread works in one stretch per period, so when more comes than it passes the policer "
                "passes only about " + num(100 * passes) + " % of its rate; raise the burst to at least " +
                num(std::ceil(need));
  }
  out.explanation = "auto: " + std::to_string(out.runtime_us) + " us of " + std::to_string(period_us) + " us = " +
                    parts + " of a CPU, + " + num(100 * margin) + " % margin, + " + std::to_string(headroom_us) +
                    " us (1 % of the period) per-period headroom" + unbudgeted +
                    "; calibration of " + date + warnings;
  out.warning = !warnings.empty();
  return out;
}

}  // namespace capsule::agent
