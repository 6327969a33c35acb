// capsule-bench exp-e4: the study's E2 and E3 with a disk-writing neighbour
// (issue 11), capsule against FIFO and CFS, with and without the mitigation.
//
// Set-up as in exp-e2/exp-e3 (exp_study.cc): CPU 1 is the host under test, a
// root domain of its own (a capsule cpuset partition), holding VM 1, the
// neighbour VM and a CFS hog; CPU 0 is the client machine (generator, the
// client's port thread, the uplink dispatcher). The neighbour's workload is a
// disk writer (bench/disk_writer.h: a child process writing 512 MiB files
// with fsync into a temporary directory, removed at the end), run on CPU 1
// as one more thread of the neighbour: inside the neighbour's capsule in the
// capsule systems, in its cpu cgroup in E2's cfs baseline, under plain CFS
// otherwise. Every point is measured quiet and with the writer, in turn, so
// that drift of the host hits both alike.
//
// Systems (VM 1's vCPU and datapath thread):
//   cfs              E3 part: no reservation at all; E2 part: CFS bandwidth
//                    control (one cpu cgroup per VM, quota = its share), as
//                    in exp-e3 / exp-e2
//   fifo             SCHED_FIFO priority 50 (no budget; the neighbour under CFS)
//   capsule          SCHED_DEADLINE capsule, budgets as hard caps (as exp-e2/e3)
//   capsule-reclaim  the same with SCHED_FLAG_RECLAIM (VM:reclaim=true), the
//                    mitigation docs/cpu-rsv.md measured with rsv-io
// `--steer-io` adds the other mitigation for the whole run: device
// interrupts and unbound workqueues moved to CPU 0 (rsv::IoSteering,
// restored at the end, also after SIGINT/SIGTERM).
//
// Parts:
//   e3  VM 1 answers 100 kB every 20 ms to a client on CPU 0 (as exp-e3);
//       VM 1 RSV(4 ms, 20 ms), the neighbour's capsule (2 + 2 ms for its VM,
//       4 ms for its writer) of 20 ms. Completion times at the client.
//   e2  VM 1 receives a flat-out stream (as exp-e2) with Q1 = 30 % of
//       P = 100 ms; the neighbour's capsule 40 % (10 + 10 % VM, 20 % writer).
//       VM 1's received kpps; the drop is what the writer costs VM 1.
//
// Last line: "E4 under I/O: <system> max X ms drop Y % | ..." (E3 part's
// median of the runs' max completion time with the writer, E2 part's drop).
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <functional>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <thread>

#include "bench.h"
#include "capsule/rsv/io_steering.h"
#include "capsule/rsv/partition.h"
#include "capsule/rsv/reservation.h"
#include "capsule/rsv/sched_attr.h"
#include "cfs_bandwidth_group.h"
#include "disk_writer.h"
#include "pmd_common.h"
#include "study_bed.h"

namespace capsule::bench::study {
namespace {

using namespace std::chrono_literals;
using namespace capsule::bench::pmd;

// The original interrupt affinities and workqueue cpumask while --steer-io
// has them moved (removed when they are restored).
constexpr const char* kSteeringJournal = "/var/tmp/capsule-bench-exp-e4.io-steering";

enum class Kind { kCfs, kFifo, kCapsule };
struct System {
  std::string name;
  Kind kind;
  bool reclaim;
};

Result<System> parse_system(const std::string& s) {
  if (s == "cfs") return System{s, Kind::kCfs, false};
  if (s == "fifo") return System{s, Kind::kFifo, false};
  if (s == "capsule") return System{s, Kind::kCapsule, false};
  if (s == "capsule-reclaim") return System{s, Kind::kCapsule, true};
  return Error{"unknown system '" + s + "' (cfs, fifo, capsule, capsule-reclaim)"};
}

// SCHED_FIFO 50 on some threads; each gets back what it had.
class FifoThreads {
 public:
  static Result<std::unique_ptr<FifoThreads>> apply(const std::vector<pid_t>& tids) {
    auto f = std::unique_ptr<FifoThreads>(new FifoThreads);
    for (pid_t t : tids) {
      auto old = rsv::get_sched_params(t);
      if (!old) return old.error();
      rsv::SchedParams p;
      p.policy = SCHED_FIFO;
      p.priority = 50;
      if (Status st = rsv::set_sched_params(t, p); !st) return st.error();
      f->old_.emplace_back(t, old.value());
    }
    return f;
  }
  ~FifoThreads() {
    for (auto& [t, p] : old_) (void)rsv::set_sched_params(t, p);
  }

 private:
  FifoThreads() = default;
  std::vector<std::pair<pid_t, rsv::SchedParams>> old_;
};

// One share of `period_ms`, in % split over threads: {tid, pct}.
struct Share {
  pid_t tid;
  int pct;
  const char* what;
};

Result<std::unique_ptr<rsv::VmReservation>> reserve_shares(const std::string& name, int period_ms, bool reclaim,
                                                           const std::vector<Share>& shares, rsv::PartitionSet& parts) {
  rsv::VmReservationSpec spec;
  spec.name = name;
  spec.period = std::chrono::milliseconds(period_ms);
  spec.reclaim = reclaim;
  for (const Share& s : shares)
    spec.threads.push_back({s.tid, std::chrono::microseconds(int64_t(period_ms) * s.pct * 10), kTestCpu, s.what});
  return reserve(spec, parts);
}

Result<CfsBandwidthGroup> make_cfs_group(const std::string& name, int period_ms, const std::vector<Share>& shares) {
  int pct = 0;
  for (const Share& s : shares) pct += s.pct;
  auto g = CfsBandwidthGroup::create(name, std::chrono::microseconds(int64_t(period_ms) * pct * 10),
                                     std::chrono::milliseconds(period_ms));
  if (!g) return g.error();
  for (const Share& s : shares)
    if (Status st = g.value().add_thread(s.tid); !st) return st.error();
  return g;
}

// Whatever holds a policy in force until it is destroyed.
struct Policy {
  std::unique_ptr<rsv::VmReservation> rsv;
  std::unique_ptr<FifoThreads> fifo;
  std::optional<CfsBandwidthGroup> group;
};

struct Writer {
  DiskWriterOptions options;
  // Started on CPU 1 and running once writeback is under way (64 MiB).
  Result<std::unique_ptr<DiskWriter>> start() const {
    auto w = DiskWriter::start(options);
    if (!w) return w.error();
    pin(w.value()->pid(), kTestCpu);
    testkit::wait_until([&] { return w.value()->mib_written() >= 64 || !w.value()->running() || g_stop; }, 30s);
    if (!w.value()->running()) return Error{"the disk writer stopped at once (is " + options.parent_dir + " writable?)"};
    return w;
  }
};

// Every point of one system: `runs` runs, each quiet and then beside a fresh
// writer, in turn, so that drift of the host hits both alike. `point(run, w)`
// measures one; `w` is null when quiet, and stopped once the point is done.
Status each_point(const Writer& writer, int runs, const std::function<Status(int run, DiskWriter* w)>& point) {
  for (int run = 0; run < runs && !g_stop; ++run)
    for (bool io : {false, true}) {
      if (g_stop) break;
      std::unique_ptr<DiskWriter> w;
      if (io) {
        auto s = writer.start();
        if (!s) return s.error();
        w = std::move(s.value());
      }
      if (Status st = point(run, w.get()); !st) return st;
    }
  return {};
}

// VM 1's threads under `sys` for a part with this period and share.
Result<Policy> vm1_policy(Bed& bed, const System& sys, pid_t vcpu, pid_t pmd, int period_ms, int pct, bool cfs_group) {
  Policy p;
  if (sys.kind == Kind::kCapsule) {
    auto r = reserve_shares("exp-e4-v1", period_ms, sys.reclaim, {{pmd, pct / 2, "pmd"}, {vcpu, pct / 2, "vcpu0"}},
                            bed.parts);
    if (!r) return r.error();
    p.rsv = std::move(r.value());
  } else if (sys.kind == Kind::kFifo) {
    auto f = FifoThreads::apply({pmd, vcpu});
    if (!f) return f.error();
    p.fifo = std::move(f.value());
  } else if (cfs_group) {
    auto g = make_cfs_group("capsule-exp-e4-v1", period_ms, {{pmd, pct / 2, "pmd"}, {vcpu, pct / 2, "vcpu0"}});
    if (!g) return g.error();
    p.group.emplace(std::move(g.value()));
  }
  return p;
}

// The neighbour (its VM's threads and, if given, the writer) under `sys`.
Result<Policy> neighbour_policy(Bed& bed, const System& sys, pid_t vcpu, pid_t pmd, pid_t writer, int period_ms,
                                int vm_pct, int writer_pct, bool cfs_group) {
  std::vector<Share> shares = {{pmd, vm_pct / 2, "pmd"}, {vcpu, vm_pct / 2, "vcpu0"}};
  if (writer) shares.push_back({writer, writer_pct, "disk-writer"});
  Policy p;
  if (sys.kind == Kind::kCapsule) {
    auto r = reserve_shares("exp-e4-v2", period_ms, false, shares, bed.parts);
    if (!r) return r.error();
    p.rsv = std::move(r.value());
  } else if (sys.kind == Kind::kCfs && cfs_group) {
    auto g = make_cfs_group("capsule-exp-e4-v2", period_ms, shares);
    if (!g) return g.error();
    p.group.emplace(std::move(g.value()));
  }
  return p;
}

// ---- E3 part ------------------------------------------------------------

struct Series {  // one value per run
  std::vector<double> p50, p99, max, misses, kpps, mib_s;
};
using Key = std::pair<std::string, std::string>;  // system, "quiet" | "writer"

Status part_e3(Bed& bed, const std::vector<System>& systems, const Writer& writer, int runs, int n,
               std::map<Key, Series>& out, std::ofstream& csv) {
  constexpr int kPeriod = 20;
  EmuVm v1(bed.dir, "e4-v1", bed.dir + "/v1.sock", kMac1, {"--mode", "serve"}, kTestCpu);
  EmuVm v2(bed.dir, "e4-v2", bed.dir + "/v2.sock", kMac2, {"--mode", "count", "--queue-size", "1024"}, kTestCpu);
  if (!v1.wait_ready() || !v2.wait_ready()) return Error{"VMs did not come up: " + v1.output() + v2.output()};
  const pid_t pmd1 = bed.dp->pmd_tid("v1").value(), pmd2 = bed.dp->pmd_tid("v2").value();
  for (const System& sys : systems) {
    // VM 1: RSV(4 ms, 20 ms) as in exp-e3 (or FIFO, or nothing).
    auto p1 = vm1_policy(bed, sys, v1.vcpu_tid(), pmd1, kPeriod, 20, false);
    if (!p1) return Error{sys.name + ": VM 1: " + p1.error().message};
    Status done = each_point(writer, runs, [&](int run, DiskWriter* w) -> Status {
      const bool io = w != nullptr;
      const double mib0 = w ? w->mib_written() : 0;
      const auto t0 = std::chrono::steady_clock::now();
      Result<Probe> pr = Error{""};
      {
        // The neighbour: its VM 2 + 2 ms, its writer 4 ms of 20 (a capsule of 40 %).
        auto p2 = neighbour_policy(bed, sys, v2.vcpu_tid(), pmd2, w ? w->pid() : 0, kPeriod, 20, 20, false);
        if (!p2) return Error{sys.name + ": the neighbour: " + p2.error().message};
        // A tag of its own per run: a probe's output file is never one an
        // earlier probe of the same name left (its "final" line would be read).
        pr = run_probe(bed.dir, bed.dir + "/c.sock", n, sys.name + (io ? "-w" : "-q") + std::to_string(run));
      }
      if (!pr) return Error{sys.name + ": " + pr.error().message};
      const Probe& p = pr.value();
      if (p.ms.empty()) return Error{sys.name + ": no request was answered (" + std::to_string(p.requests) + " sent)"};
      Series& s = out[{sys.name, io ? "writer" : "quiet"}];
      const double mx = p.ms.empty() ? NAN : *std::max_element(p.ms.begin(), p.ms.end());
      s.p50.push_back(p.ms.empty() ? NAN : percentile(p.ms, 50));
      s.p99.push_back(p.ms.empty() ? NAN : percentile(p.ms, 99));
      s.max.push_back(mx);
      s.misses.push_back(double(p.misses(20)));
      if (w) s.mib_s.push_back((w->mib_written() - mib0) / (ms_since(t0) / 1000));
      if (csv.is_open())
        csv << "e3," << sys.name << "," << (io ? "writer" : "quiet") << "," << run << "," << fmt("%.3f", s.p50.back())
            << "," << fmt("%.3f", s.p99.back()) << "," << fmt("%.3f", mx) << "," << p.misses(20) << ","
            << p.requests << ",," << (w ? fmt("%.0f", s.mib_s.back()) : "") << std::endl;
      std::cerr << "exp-e4: e3 " << sys.name << (io ? " writer" : " quiet") << " run " << run + 1 << ": max "
                << fmt("%.2f", mx) << " ms, misses " << p.misses(20) << "/" << p.requests << "\n";
      return {};
    });
    if (!done) return done;
  }
  return {};
}

// ---- E2 part ------------------------------------------------------------

Status part_e2(Bed& bed, const std::vector<System>& systems, const Writer& writer, int runs, double warm, double secs,
               std::map<Key, Series>& out, std::ofstream& csv) {
  constexpr int kPeriod = 100, kQ1 = 30;
  const std::vector<std::string> guest = {"--mode", "count", "--queue-size", "1024"};
  EmuVm v1(bed.dir, "e4-v1-rx", bed.dir + "/v1.sock", kMac1, guest, kTestCpu);
  EmuVm v2(bed.dir, "e4-v2-rx", bed.dir + "/v2.sock", kMac2, guest, kTestCpu);
  if (!v1.wait_ready() || !v2.wait_ready()) return Error{"VMs did not come up: " + v1.output() + v2.output()};
  const pid_t pmd1 = bed.dp->pmd_tid("v1").value(), pmd2 = bed.dp->pmd_tid("v2").value();
  auto count = [&] { return bed.dp->stats("v1").value().to_vm_packets; };
  const uint64_t before = count();
  {
    const auto feeder = make_feeder({kMac1});
    if (!feeder->ok()) return Error{"cannot feed net_ring0"};
    // A VM replaced on its socket takes a moment before frames flow (exp-e2).
    if (!testkit::wait_until([&] { return count() > before + 1000; }, 20s))
      return Error{"VM 1 is up but no frames reach it"};
  }
  for (const System& sys : systems) {
    auto p1 = vm1_policy(bed, sys, v1.vcpu_tid(), pmd1, kPeriod, kQ1, true);
    if (!p1) return Error{sys.name + ": VM 1: " + p1.error().message};
    Status done = each_point(writer, runs, [&](int run, DiskWriter* w) -> Status {
      const bool io = w != nullptr;
      const double mib0 = w ? w->mib_written() : 0;
      const auto t0 = std::chrono::steady_clock::now();
      double kpps = 0;
      {
        // The neighbour's capsule: 40 % of P, half its VM's, half its writer's.
        auto p2 = neighbour_policy(bed, sys, v2.vcpu_tid(), pmd2, w ? w->pid() : 0, kPeriod, 20, 20, true);
        if (!p2) return Error{sys.name + ": the neighbour: " + p2.error().message};
        // The stream flows for the point only. Left on between points, it
        // and the dispatcher kept the client CPU busy while the stopped
        // writer waited for its writeback, and the kernel's writeback
        // workers, runnable there, did not run: the writer took 100-120 s
        // to end in 2 of 5 smoke runs (in fsync, folio_wait_writeback).
        const auto feeder = make_feeder({kMac1});
        if (!feeder->ok()) return Error{"cannot feed net_ring0"};
        kpps = rate_per_second(count, warm, secs) / 1e3;
      }
      Series& s = out[{sys.name, io ? "writer" : "quiet"}];
      s.kpps.push_back(kpps);
      if (w) s.mib_s.push_back((w->mib_written() - mib0) / (ms_since(t0) / 1000));
      if (csv.is_open())
        csv << "e2," << sys.name << "," << (io ? "writer" : "quiet") << "," << run << ",,,,,," << fmt("%.1f", kpps)
            << "," << (w ? fmt("%.0f", s.mib_s.back()) : "") << std::endl;
      std::cerr << "exp-e4: e2 " << sys.name << (io ? " writer" : " quiet") << " run " << run + 1 << ": "
                << fmt("%.1f", kpps) << " kpps\n";
      if (kpps <= 0) return Error{sys.name + ": VM 1 received nothing"};
      return {};
    });
    if (!done) return done;
  }
  return {};
}

int exp_e4(const std::vector<std::string>& args) {
  std::vector<System> systems;
  {
    std::stringstream ss(arg(args, "--systems", "cfs,fifo,capsule,capsule-reclaim"));
    for (std::string s; std::getline(ss, s, ',');) {
      auto sys = parse_system(s);
      if (!sys) {
        std::cerr << "exp-e4: option --systems: " << sys.error().message << "\n";
        return 2;
      }
      systems.push_back(sys.value());
    }
  }
  const std::string parts = arg(args, "--parts", "e3,e2");
  const bool do_e3 = parts.find("e3") != std::string::npos, do_e2 = parts.find("e2") != std::string::npos;
  const int runs = std::stoi(arg(args, "--runs", "3"));
  const int n = std::stoi(arg(args, "--requests", "250"));
  const double warm = std::stod(arg(args, "--warm", "0.4")), secs = std::stod(arg(args, "--seconds", "2"));
  const std::string csv_path = arg(args, "--csv", "");
  Writer writer;
  writer.options.parent_dir = arg(args, "--writer-dir", "/var/tmp");
  writer.options.file_mib = std::stol(arg(args, "--writer-mib", "512"));
  if (systems.empty() || runs < 1 || n < 1 || secs <= 0 || writer.options.file_mib < 1 || !(do_e2 || do_e3)) {
    std::cerr << "exp-e4: --systems needs one system, --parts e2 and/or e3; --runs, --requests, --seconds and "
                 "--writer-mib more than 0\n";
    return 2;
  }
  // Each writer lives one point; its own limit is a backstop only.
  writer.options.max_time = std::chrono::seconds(long(n * 0.02 + secs + warm) + 120);
  catch_stop_signals();

  std::cout << "exp-e4: E2 and E3 with a disk-writing neighbour (" << writer.options.file_mib
            << " MiB files with fsync in " << writer.options.parent_dir << ", on CPU " << kTestCpu
            << " in the neighbour's capsule / cgroup / CFS); " << runs << " runs, quiet and writer in turn\n";
  std::cout << "load average before: " << loadavg() << std::endl;
  std::ofstream csv;
  if (!csv_path.empty()) {
    csv.open(csv_path);
    csv << "part,system,io,run,p50_ms,p99_ms,max_ms,misses,requests,kpps,writer_mib_s\n";
  }
  std::map<Key, Series> e3, e2;
  {
    BedOptions bed_options;
    bed_options.tmp_prefix = "capsule-exp-io";
    bed_options.log_prefix = "exp-e4";
    bed_options.max_vms = 3;
    bed_options.client = true;
    if (flag(args, "--steer-io")) bed_options.steer_journal = kSteeringJournal;
    Bed bed(bed_options);
    if (Status st = bed.start(); !st) {
      std::cerr << "exp-e4: " << st.error().message << "\n";
      return 1;
    }
    if (do_e3)
      if (Status st = part_e3(bed, systems, writer, runs, n, e3, csv); !st) {
        std::cerr << "exp-e4: e3: " << st.error().message << "\n";
        return 1;
      }
    if (do_e2 && !g_stop)
      if (Status st = part_e2(bed, systems, writer, runs, warm, secs, e2, csv); !st) {
        std::cerr << "exp-e4: e2: " << st.error().message << "\n";
        return 1;
      }
  }
  std::cout << "load average after: " << loadavg() << "\n\n";
  std::map<std::string, std::string> max_w, drop;
  if (do_e3) {
    std::cout << "E3 part: 100 kB every 20 ms to VM 1 (RSV 4/20 ms in capsule); " << n
              << " requests per run; median of the runs (spread of the runs' max)\n";
    Table t({"system", "neighbour", "p50 ms", "p99 ms", "max ms", "max spread", "misses > 20 ms", "writer MiB/s"});
    for (const System& sys : systems)
      for (const char* io : {"quiet", "writer"}) {
        auto it = e3.find({sys.name, io});
        if (it == e3.end()) continue;
        const Series& s = it->second;
        t.row({sys.name, io, med(s.p50, "%.2f"), med(s.p99, "%.2f"), med(s.max, "%.2f"), spread(s.max, "%.2f"),
               med(s.misses, "%.0f"), med(s.mib_s, "%.0f")});
        if (io == std::string("writer")) max_w[sys.name] = fmt("%.1f", median(s.max));
      }
    t.print();
    std::cout << "\n";
  }
  if (do_e2) {
    std::cout << "E2 part: VM 1 receiving a stream, Q1 = 30 % of 100 ms; the neighbour 40 %; median kpps of the runs\n";
    Table t({"system", "quiet kpps", "spread", "writer kpps", "spread", "drop %", "writer MiB/s"});
    for (const System& sys : systems) {
      auto q = e2.find({sys.name, "quiet"}), w = e2.find({sys.name, "writer"});
      if (q == e2.end() || w == e2.end()) continue;
      const double d = 100.0 * (1.0 - median(w->second.kpps) / median(q->second.kpps));
      drop[sys.name] = fmt("%.1f", d);
      t.row({sys.name, med(q->second.kpps, "%.1f"), spread(q->second.kpps, "%.1f"), med(w->second.kpps, "%.1f"),
             spread(w->second.kpps, "%.1f"), drop[sys.name], med(w->second.mib_s, "%.0f")});
    }
    t.print();
    std::cout << "\n";
  }
  if (g_stop) {
    std::cout << "(interrupted: no summary line)\n";
    return 130;
  }
  std::cout << "E4 under I/O:";
  for (std::size_t i = 0; i < systems.size(); ++i) {
    const std::string& s = systems[i].name;
    std::cout << (i ? " |" : "") << " " << s << " max " << (max_w.count(s) ? max_w[s] : "n/a") << " ms drop "
              << (drop.count(s) ? drop[s] : "n/a") << " %";
  }
  std::cout << std::endl;
  return 0;
}

}  // namespace

using K = BenchOption::Kind;
CAPSULE_BENCH("exp-e4", "E4: E2 and E3 with a disk-writing neighbour, capsule (with/without reclaim) vs FIFO vs CFS",
              exp_e4,
              {{"--systems", K::kText, "systems, in order", {"cfs", "fifo", "capsule", "capsule-reclaim"}},
               {"--parts", K::kText, "which experiments", {"e2", "e3"}},
               {"--runs", K::kCount, "runs of every point (quiet and writer in turn)"},
               {"--requests", K::kCount, "E3 part: requests per run"},
               {"--warm", K::kSeconds, "E2 part: seconds before a window"},
               {"--seconds", K::kSeconds, "E2 part: measurement window"},
               {"--steer-io", K::kFlag, "device interrupts and unbound workqueues to CPU 0 for the run"},
               {"--writer-dir", K::kText, "where the writer writes (a directory it makes and removes)"},
               {"--writer-mib", K::kCount, "size of each file the writer writes, MiB"},
               {"--csv", K::kText, "write every run here"}},
              {"--runs", "1", "--requests", "10", "--warm", "0.1", "--seconds", "0.3", "--writer-mib", "64"});

}  // namespace capsule::bench::study
