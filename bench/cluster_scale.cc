// cluster-scale: one clustered Capsule database for many hosts, the way
// OVN's ovn-heater measures OVN: a 3-member Raft cluster of ovsdb-servers on
// loopback, N simulated hosts (capsule-simhost: the real capsuled agent on a
// simulated kernel and a recording datapath), and a controller stand-in that
// makes random changes (add-vm, set-rsv, set-qos, del-vm) and waits for each
// to be applied (capsule-ctl --wait: the host's cur_cfg). The leader is
// killed in the middle of the run. Every change is then counted in the
// agents' logs: applied exactly once, or lost, or doubled.
//
//   capsule-bench cluster-scale --chassis 100 --vms-per-chassis 50
//                 [--changes 1000] [--members 3] [--seed 1] [--election-timer-ms 1000]
//                 [--agents-leader-only]
//
// --agents-leader-only runs the agents with capsuled's --leader-only (each
// stays on the leader and follows it at every election), to compare with
// the default (any member in the cluster).
#if __has_include("capsule/harness.h")

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include "bench.h"
#include "capsule/harness.h"
#include "capsule/rsv/simulated.h"
#include "capsule/rsv/spec.h"

namespace capsule::bench {
namespace {

using Clock = std::chrono::steady_clock;

// RSS (KiB) and CPU time used so far (s) of a process.
std::pair<long, double> usage(pid_t pid) { return {rss_kib(pid), cpu_seconds(pid)}; }


std::string mac_of(int n) {
  char mac[32];
  std::snprintf(mac, sizeof mac, "\"02:00:%02x:%02x:%02x:%02x\"", (n >> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff,
                n & 0xff);
  return mac;
}


// What one agent's database session did so far (capsule/db-show).
struct SessionCounters {
  long sessions = 0, sent = 0, sent_again = 0;
};

long number_after(const std::string& text, const std::string& label) {
  const auto at = text.find(label);
  return at == std::string::npos ? -1 : std::atol(text.c_str() + at + label.size());
}

SessionCounters session_counters(const std::string& ctl_socket) {
  auto r = harness::run({harness::find_program("ovs-appctl"), "-t", ctl_socket, "capsule/db-show"},
                        std::chrono::seconds(10));
  return {number_after(r.out, "connections made: "), number_after(r.out, "status transactions sent: "),
          number_after(r.out, "sent again: ")};
}

// A line of an OVS log file: its time ("2026-12-02T07:49:16.123Z|...").
std::optional<std::chrono::system_clock::time_point> log_time(const std::string& line) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(line.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
                  &tm.tm_min, &tm.tm_sec, &ms) != 7)
    return std::nullopt;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return std::chrono::system_clock::from_time_t(::timegm(&tm)) + std::chrono::milliseconds(ms);
}

// Raft's side of a failover, from the members' logs: elections started
// in [since, until], and when the first and the last of them was won.
struct ElectionsSeen {
  int started = 0;
  std::optional<std::chrono::system_clock::time_point> first_won, last_won;
};

void elections_in(const std::string& log, std::chrono::system_clock::time_point since,
                  std::chrono::system_clock::time_point until, ElectionsSeen& e) {
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    const auto t = log_time(line);
    if (!t || *t < since || *t > until) continue;
    if (line.find("starting election") != std::string::npos) ++e.started;
    if (line.find("elected leader by") != std::string::npos) {
      if (!e.first_won || *t < *e.first_won) e.first_won = t;
      if (!e.last_won || *t > *e.last_won) e.last_won = t;
    }
  }
}

// One change the controller made, and the line(s) its agent must log once.
struct Change {
  std::string op, chassis, vm;
  std::vector<std::string> expect;  // each must occur exactly once in the agent's log
  double ms = -1;                   // change -> applied (--wait round trip)
};

int cluster_scale(const std::vector<std::string>& args) {
  const int chassis = std::stoi(arg(args, "--chassis", "100"));
  const int per_chassis = std::stoi(arg(args, "--vms-per-chassis", "50"));
  const int changes = std::stoi(arg(args, "--changes", "1000"));
  const int members = std::stoi(arg(args, "--members", "3"));
  const bool agents_leader_only = std::find(args.begin(), args.end(), "--agents-leader-only") != args.end();
  std::mt19937 rng(unsigned(std::stoul(arg(args, "--seed", "1"))));
  if (chassis < 1 || per_chassis < 1 || changes < 1 || members < 1) {
    std::cerr << "--chassis, --vms-per-chassis, --changes and --members must be at least 1\n";
    return 1;
  }

  harness::TempDir dir("capsule-cluster-scale");
  auto cluster = harness::OvsdbCluster::start(dir.path(), members);
  if (!cluster) {
    std::cerr << cluster.error().message << "\n";
    return 1;
  }
  auto& c = **cluster;
  // --election-timer-ms (default OVS's 1000, what capsule-service's
  // clusters get): while the agents spun on their status writes during an
  // election, a 1 s timer on 2 starved cores expired again and again (six
  // elections, 25 s); now that they are quiet it holds (docs/scale.md).
  const int election_ms = std::stoi(arg(args, "--election-timer-ms", "1000"));
  if (Status st = c.set_election_timer(election_ms); !st) {
    std::cerr << st.error().message << "\n";
    return 1;
  }
  const std::string remotes = c.remotes();
  auto ctl = [&](const std::vector<std::string>& a, int timeout_s = 30) {
    return harness::ctl(remotes, a, std::chrono::seconds(timeout_s));
  };

  // The simulated hosts.
  std::vector<std::unique_ptr<testkit::ChildProcess>> agents;
  std::vector<std::string> names, logs;
  const auto t_agents = Clock::now();
  for (int i = 0; i < chassis; ++i) {
    const std::string name = "sim-" + std::to_string(i), rundir = dir.file(name);
    if (::mkdir(rundir.c_str(), 0755) != 0) {
      std::cerr << rundir << ": " << std::strerror(errno) << "\n";
      return 1;
    }
    names.push_back(name);
    logs.push_back(rundir + "/capsuled.log");
    // Each agent's run directory in its own environment only (ChildProcess
    // ends it by pid, SIGTERM then SIGKILL, when `agents` goes).
    std::vector<std::string> argv{testkit::sibling_binary("capsule-simhost"),
                                  "-vconsole:off",
                                  "--db=" + remotes,
                                  "--chassis=" + name,
                                  "--unixctl=" + rundir + "/capsuled.ctl",
                                  "--log-file=" + logs.back(),
                                  "--metrics-port=off",
                                  "--no-chdir"};
    if (agents_leader_only) argv.push_back("--leader-only");
    auto agent = testkit::ChildProcess::spawn(argv, "/dev/null", {"CAPSULE_RUNDIR=" + rundir});
    if (!agent) {
      std::cerr << "cannot start capsule-simhost for " << name << ": " << std::strerror(errno) << "\n";
      return 1;
    }
    agents.push_back(std::move(agent));
  }
  auto running_hosts = [&] {
    auto r = ctl({"--bare", "--columns=chassis", "find", "Host", "status:state=running"});
    return r.rc == 0 ? testkit::count_of(r.out, "sim-") : -1;
  };
  if (!testkit::wait_until([&] { return running_hosts() == chassis; }, std::chrono::seconds(120))) {
    std::cerr << "only " << running_hosts() << " of " << chassis << " simulated hosts registered\n";
    return 1;
  }
  const double agents_up_s = ms_since(t_agents) / 1000;

  // Each host's VMs in one transaction per host.
  std::map<std::string, std::vector<std::string>> vms_of;  // chassis -> VM names
  int next_vm = 0;
  auto new_vm = [&](const std::string& ch, std::vector<std::string>& cmd) {
    const int n = next_vm++;
    const std::string vm = "vm" + std::to_string(n);
    for (const auto& a : std::vector<std::string>{
             "add-vm", vm, "chassis=" + ch, "pid=" + std::to_string(rsv::SimulatedHost::kFirstPid + n),
             "vcpu_runtime_us=100", "period_us=20000", "--", "add-port", vm, vm + "-p0",
             "/run/capsule/" + vm + ".sock", "mac=" + mac_of(n), "--", "set-qos", vm + "-p0", "egress-policer",
             "cir=1250000", "cbs=12500", "--"})
      cmd.push_back(a);
    vms_of[ch].push_back(vm);
    return vm;
  };
  const auto t_fill = Clock::now();
  std::vector<double> fill_ms;
  for (const auto& ch : names) {
    std::vector<std::string> cmd{"--wait", "--chassis=" + ch};
    for (int v = 0; v < per_chassis; ++v) new_vm(ch, cmd);
    cmd.pop_back();
    const auto t0 = Clock::now();
    auto r = ctl(cmd, 120);
    if (r.rc != 0) {
      std::cerr << "filling " << ch << " failed: " << r.err.substr(0, 2000);
      return 1;
    }
    fill_ms.push_back(ms_since(t0));
  }
  const double fill_s = ms_since(t_fill) / 1000;
  const auto [rss_agent_full, cpu_agent_before] = usage(agents[0]->pid());

  // The controller stand-in. A change that fails (the cluster electing a
  // leader past capsule-ctl's timeout) is made again, as a controller
  // would; an insert or delete that turns out to have been committed the
  // first time counts as done.
  std::vector<Change> done;
  std::uniform_int_distribution<int> pick_chassis(0, chassis - 1), pick_op(0, 3);
  const int kill_at = changes / 2;
  double failover_s = -1;
  int killed = -1, retries = 0;
  // Where the failover's time goes: elections (Raft terms), and the CPU the
  // surviving servers and all agents used from the kill until writes
  // succeed again.
  long term_before = -1, term_after_failover = -1;
  double agents_cpu_failover = 0;
  // ...and what the agents' sessions did meanwhile (capsule/db-show
  // before the kill and once writes succeed again), and when Raft had a
  // leader again (the members' logs) as against when a client could write.
  std::vector<SessionCounters> sessions_before, sessions_after;
  auto all_session_counters = [&] {
    std::vector<SessionCounters> v;
    for (const auto& name : names) v.push_back(session_counters(dir.file(name) + "/capsuled.ctl"));
    return v;
  };
  double first_election_s = -1, election_s = -1, counters_window_s = 0;
  int elections_started = 0;
  std::vector<double> servers_cpu_failover(std::size_t(c.size()), 0);
  auto agents_cpu = [&] {
    double sum = 0;
    for (const auto& a : agents) sum += cpu_seconds(a->pid());
    return sum;
  };
  for (int i = 0; i < changes; ++i) {
    if (i == kill_at) {
      killed = c.leader();
      if (killed >= 0) sessions_before = all_session_counters();
      if (killed >= 0) {
        term_before = c.term();
        const double agents_cpu0 = agents_cpu();
        std::vector<double> servers_cpu0;
        for (int m = 0; m < c.size(); ++m) servers_cpu0.push_back(c.pid(m) ? cpu_seconds(c.pid(m)) : 0);
        const auto t_kill = Clock::now();
        const auto wall_kill = std::chrono::system_clock::now();
        c.kill(killed);
        // Writes succeed again when a commit through the new leader does.
        for (int probe = 0; ms_since(t_kill) < 60000; ++probe)
          if (ctl({"set", "Host", names[0], "other_config:probe=" + std::to_string(probe)}, 10).rc == 0) break;
        failover_s = ms_since(t_kill) / 1000;
        agents_cpu_failover = agents_cpu() - agents_cpu0;
        for (int m = 0; m < c.size(); ++m)
          if (m != killed) servers_cpu_failover[std::size_t(m)] = cpu_seconds(c.pid(m)) - servers_cpu0[std::size_t(m)];
        term_after_failover = c.term();
        sessions_after = all_session_counters();
        counters_window_s = ms_since(t_kill) / 1000;
        ElectionsSeen e;
        for (int m = 0; m < c.size(); ++m)
          if (m != killed)
            elections_in(testkit::read_file(c.log_file(m)), wall_kill,
                         wall_kill + std::chrono::milliseconds(long(failover_s * 1000)), e);
        elections_started = e.started;
        auto since_kill = [&](const auto& t) { return std::chrono::duration<double>(t - wall_kill).count(); };
        if (e.first_won) first_election_s = since_kill(*e.first_won);
        if (e.last_won) election_s = since_kill(*e.last_won);
      }
    }
    if (i == kill_at + changes / 10 && killed >= 0) (void)c.start_again(killed);  // back as a follower
    Change ch;
    ch.chassis = names[std::size_t(pick_chassis(rng))];
    auto& vms = vms_of[ch.chassis];
    int op = pick_op(rng);
    if (vms.empty()) op = 0;
    std::vector<std::string> cmd{"--wait", "--chassis=" + ch.chassis};
    std::string tolerated;  // an error that means "already done"
    if (op == 0) {
      ch.op = "add-vm";
      ch.vm = new_vm(ch.chassis, cmd);
      cmd.pop_back();
      ch.expect = {"VM " + ch.vm + ": reserved: "};
      tolerated = "already exists";
    } else {
      const std::size_t at = std::uniform_int_distribution<std::size_t>(0, vms.size() - 1)(rng);
      ch.vm = vms[at];
      if (op == 1) {
        ch.op = "set-rsv";
        // A runtime never used before: the change is recognisable.
        const int runtime_us = 1000 + i;
        cmd.insert(cmd.end(), {"set-rsv", ch.vm, std::to_string(runtime_us) + "us", "20ms"});
        ch.expect = {"VM " + ch.vm + ": reservation changed: vcpu0 " +
                     rsv::format_duration(std::chrono::microseconds(runtime_us)) + " every "};
      } else if (op == 2) {
        ch.op = "set-qos";
        const std::string cir = std::to_string(2'000'000 + i);
        cmd.insert(cmd.end(), {"set-qos", ch.vm + "-p0", "egress-policer", "cir=" + cir, "cbs=12500"});
        ch.expect = {"datapath: VM " + ch.vm + " configured: port " + ch.vm + "-p0 mac " +
                     mac_of(std::stoi(ch.vm.substr(2))).substr(1, 17) + " egress-policer cbs=12500 cir=" + cir + ";"};
      } else {
        ch.op = "del-vm";
        cmd.insert(cmd.end(), {"del-vm", ch.vm});
        ch.expect = {"VM " + ch.vm + ": reservation released", "datapath: VM " + ch.vm + " removed"};
        tolerated = "no VM";
        vms.erase(vms.begin() + long(at));
      }
    }
    const auto t0 = Clock::now();
    for (int attempt = 0;; ++attempt) {
      auto r = ctl(cmd, 30);
      if (r.rc == 0 || (attempt > 0 && !tolerated.empty() && r.err.find(tolerated) != std::string::npos)) break;
      if (attempt == 5) {
        std::cerr << "change " << i << " (" << ch.op << " " << ch.vm << ") failed 6 times: " << r.err;
        break;
      }
      ++retries;
    }
    ch.ms = ms_since(t0);
    done.push_back(std::move(ch));
  }

  // Resources at the end of the run.
  const long term_end = c.term();
  const auto [rss_agent, cpu_agent] = usage(agents[0]->pid());
  std::vector<std::pair<long, double>> servers;
  for (int m = 0; m < c.size(); ++m) servers.push_back(c.pid(m) ? usage(c.pid(m)) : std::make_pair(-1L, 0.0));

  // Exactly once: every expected line in its agent's log.
  std::map<std::string, std::string> log_of;
  for (std::size_t i = 0; i < names.size(); ++i) log_of[names[i]] = testkit::read_file(logs[i]);
  int lost = 0, doubled = 0;
  for (const auto& ch : done)
    for (const auto& e : ch.expect) {
      const int n = testkit::count_of(log_of[ch.chassis], e);
      if (n == 0) {
        ++lost;
        std::cerr << "lost: " << ch.op << " " << ch.vm << " on " << ch.chassis << " (\"" << e << "\")\n";
      } else if (n > 1) {
        ++doubled;
        std::cerr << "doubled (" << n << "x): " << ch.op << " " << ch.vm << " on " << ch.chassis << "\n";
      }
    }

  std::vector<double> all;
  std::map<std::string, std::vector<double>> by_op;
  for (const auto& ch : done) {
    all.push_back(ch.ms);
    by_op[ch.op].push_back(ch.ms);
  }
  auto stats_row = [](Table& t, const std::string& what, std::vector<double> v) {
    if (v.empty()) return;
    t.row({what, std::to_string(v.size()), fmt("%.1f", percentile(v, 0)), fmt("%.1f", percentile(v, 50)),
           fmt("%.1f", percentile(v, 90)), fmt("%.1f", percentile(v, 99)), fmt("%.1f", percentile(v, 100))});
  };
  std::cout << chassis << " simulated hosts (capsule-simhost), " << per_chassis << " VMs each (1 port + policer), "
            << members << "-member cluster on loopback (election timer " << election_ms << " ms), agents on "
            << (agents_leader_only ? "the leader only" : "any member") << "; " << changes
            << " changes, leader killed at change " << kill_at << "\n\n";
  Table t({"change -> applied (capsule-ctl --wait)", "n", "min ms", "p50 ms", "p90 ms", "p99 ms", "max ms"});
  for (const auto& [op, v] : by_op) stats_row(t, op, v);
  stats_row(t, "all changes", all);
  stats_row(t, "initial fill (one host's VMs, one txn)", fill_ms);
  t.print();
  std::cout << "\n";
  Table r({"measure", "value"});
  r.row({"hosts registered (s)", fmt("%.1f", agents_up_s)});
  r.row({"initial fill, all hosts (s)", fmt("%.1f", fill_s)});
  r.row({"leader killed: writes succeed again after (s)", fmt("%.2f", failover_s)});
  r.row({"Raft term: before kill / writes again / end", std::to_string(term_before) + " / " +
                                                             std::to_string(term_after_failover) + " / " +
                                                             std::to_string(term_end)});
  r.row({"failover: a leader elected after (s, members' logs): first / last",
         fmt("%.2f", first_election_s) + " / " + fmt("%.2f", election_s)});
  r.row({"failover: elections started by the surviving members", std::to_string(elections_started)});
  r.row({"failover: CPU s of all agents (kill -> writes again)", fmt("%.2f", agents_cpu_failover)});
  if (sessions_before.size() == names.size() && sessions_after.size() == names.size()) {
    // Per agent, from the kill until the counters were read again.
    std::vector<double> sessions, sent, again;
    for (std::size_t a = 0; a < names.size(); ++a) {
      sessions.push_back(double(sessions_after[a].sessions - sessions_before[a].sessions));
      sent.push_back(double(sessions_after[a].sent - sessions_before[a].sent));
      again.push_back(double(sessions_after[a].sent_again - sessions_before[a].sent_again));
    }
    auto spread = [](std::vector<double> v) {
      double sum = 0;
      for (double x : v) sum += x;
      return fmt("%.0f", sum) + " (median " + fmt("%.0f", percentile(v, 50)) + ", max " +
             fmt("%.0f", percentile(v, 100)) + ")";
    };
    r.row({"failover: agents' connections made, all (per agent) in " + fmt("%.1f", counters_window_s) + " s",
           spread(sessions)});
    r.row({"failover: agents' status transactions sent", spread(sent)});
    r.row({"failover: agents' status transactions sent again", spread(again)});
  }
  for (int m = 0; m < c.size(); ++m)
    if (m != killed)
      r.row({"failover: CPU s of server " + std::to_string(m), fmt("%.2f", servers_cpu_failover[std::size_t(m)])});
  for (int m = 0; m < c.size(); ++m)
    r.row({"server " + std::to_string(m) + ": long poll intervals logged",
           std::to_string(testkit::count_of(testkit::read_file(c.log_file(m)), "Unreasonably long"))});
  r.row({"changes retried by the controller", std::to_string(retries)});
  r.row({"one agent: RSS KiB (after fill / end)", std::to_string(rss_agent_full) + " / " + std::to_string(rss_agent)});
  r.row({"one agent: CPU s during the changes", fmt("%.2f", cpu_agent - cpu_agent_before)});
  for (int m = 0; m < c.size(); ++m)
    r.row({"server " + std::to_string(m) + (m == killed ? " (killed, restarted)" : "") + ": RSS KiB / CPU s",
           std::to_string(servers[std::size_t(m)].first) + " / " + fmt("%.1f", servers[std::size_t(m)].second)});
  r.row({"expected agent events", std::to_string([&] {
           std::size_t n = 0;
           for (const auto& ch : done) n += ch.expect.size();
           return n;
         }())});
  r.print();
  std::cout << "cluster apply p99: " << fmt("%.0f", percentile(all, 99)) << " ms, failover: " << fmt("%.2f", failover_s)
            << " s, lost: " << lost << ", doubled: " << doubled << "\n";
  // The agents stop first (SIGTERM, their last status), then the cluster.
  agents.clear();
  return 0;
}

CAPSULE_BENCH("cluster-scale",
              "clustered Capsule DB, --chassis N simulated hosts x --vms-per-chassis M: change -> applied, failover",
              cluster_scale,
              {{"--chassis", BenchOption::Kind::kCount, "simulated hosts (capsule-simhost)"},
               {"--vms-per-chassis", BenchOption::Kind::kCount, "VMs per host"},
               {"--changes", BenchOption::Kind::kCount, "row changes timed to applied"},
               {"--members", BenchOption::Kind::kCount, "cluster members (3 or 5)"},
               {"--seed", BenchOption::Kind::kCount, "random seed of the changes"},
               {"--election-timer-ms", BenchOption::Kind::kCount, "Raft election timer"}},
              {"--chassis", "2", "--vms-per-chassis", "2", "--changes", "5"});

}  // namespace
}  // namespace capsule::bench

#endif
