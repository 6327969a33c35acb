// capsule-bench: benchmarks of capsule against its baselines.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <signal.h>
#include <unistd.h>

#include "bench.h"
#include "capsule/log.h"
#include "capsule/number.h"

namespace capsule::bench {

std::vector<BenchInfo>& registry() {
  static std::vector<BenchInfo> r;
  return r;
}

void Table::print() const {
  std::vector<std::size_t> w;
  for (const auto& r : rows_)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  for (std::size_t n = 0; n < rows_.size(); ++n) {
    std::string line;
    for (std::size_t i = 0; i < rows_[n].size(); ++i) {
      std::string cell = rows_[n][i];
      cell.resize(w[i], ' ');
      line += (i ? "  " : "") + cell;
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::cout << line << "\n";
    if (n == 0) {
      std::size_t total = 0;
      for (auto x : w) total += x + 2;
      std::cout << std::string(total - 2, '-') << "\n";
    }
  }
  std::cout.flush();
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

namespace {
const BenchInfo* g_running = nullptr;  // the benchmark main() runs, for arg()

// Counts are read by arg() with std::stoi: they must fit an int.
bool whole_number(const std::string& v) { return parse_whole(v, std::numeric_limits<int>::max()).has_value(); }

bool decimal_number(const std::string& v) { return parse_nonnegative(v).has_value(); }

std::vector<std::string> split(const std::string& v) {
  std::vector<std::string> items;
  std::stringstream in(v);
  for (std::string x; std::getline(in, x, ',');) items.push_back(x);
  return items;
}

const char* kind_text(BenchOption::Kind k) {
  switch (k) {
    case BenchOption::Kind::kCount: return "N";
    case BenchOption::Kind::kSeconds: return "X";
    case BenchOption::Kind::kList: return "N,N,...";
    case BenchOption::Kind::kText: return "TEXT";
    case BenchOption::Kind::kFlag: return "";
  }
  return "";
}
}  // namespace

std::string check_options(const BenchInfo& b, const std::vector<std::string>& args) {
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto it = std::find_if(b.options.begin(), b.options.end(), [&](const BenchOption& o) { return o.name == a; });
    if (it == b.options.end()) {
      std::string known;
      for (const auto& o : b.options) known += (known.empty() ? "" : ", ") + o.name;
      return "unknown option '" + a + "' (" + b.name + " takes " + (known.empty() ? "none" : known) + ", and --smoke)";
    }
    if (it->kind == BenchOption::Kind::kFlag) continue;
    if (i + 1 >= args.size()) return "option " + a + " needs a value (" + kind_text(it->kind) + ")";
    const std::string& v = args[++i];
    bool ok = true;
    switch (it->kind) {
      case BenchOption::Kind::kCount: ok = whole_number(v); break;
      case BenchOption::Kind::kSeconds: ok = decimal_number(v); break;
      case BenchOption::Kind::kList: {
        const auto items = split(v);
        ok = !items.empty() && v.back() != ',' && std::all_of(items.begin(), items.end(), whole_number);
        break;
      }
      case BenchOption::Kind::kText:
        if (!it->choices.empty())
          for (const auto& item : split(v))
            ok = ok && std::find(it->choices.begin(), it->choices.end(), item) != it->choices.end();
        break;
      case BenchOption::Kind::kFlag: break;
    }
    if (!ok) {
      std::string want = it->kind == BenchOption::Kind::kCount     ? "a whole number"
                         : it->kind == BenchOption::Kind::kSeconds ? "a number >= 0"
                         : it->kind == BenchOption::Kind::kList    ? "whole numbers separated by commas"
                                                                   : "one of";
      if (it->kind == BenchOption::Kind::kText)
        for (const auto& c : it->choices) want += " " + c;
      return "option " + a + ": '" + v + "' is not " + want;
    }
  }
  return "";
}

namespace {
// A programming error, not the user's: the benchmark reads an option its
// registration does not list (and so check_options refuses it).
void require_registered(const std::string& key) {
  if (g_running && std::none_of(g_running->options.begin(), g_running->options.end(),
                                [&](const BenchOption& o) { return o.name == key; })) {
    std::cerr << "capsule-bench " << g_running->name << ": reads option " << key << ", which it does not register\n";
    std::abort();
  }
}
}  // namespace

std::string arg(const std::vector<std::string>& args, const std::string& key, const std::string& def) {
  require_registered(key);
  for (std::size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == key) return args[i + 1];
  return def;
}

bool flag(const std::vector<std::string>& args, const std::string& key) {
  require_registered(key);
  return std::find(args.begin(), args.end(), key) != args.end();
}

long rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(f, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

double cpu_seconds(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  const std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream in(stat.substr(paren + 2));  // from field 3 (state) on
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int n = 3; n <= 15 && in >> field; ++n) {
    if (n == 14) utime = std::stoull(field);
    if (n == 15) stime = std::stoull(field);
  }
  return double(utime + stime) / double(::sysconf(_SC_CLK_TCK));
}

std::atomic<bool> g_stop{false};

namespace {
void on_stop_signal(int) { g_stop.store(true); }
}  // namespace

void catch_stop_signals() {
  struct sigaction sa{};
  sa.sa_handler = on_stop_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // A stop signal sent to a whole process group also ends a `tee` reading
  // our output; the next write must fail, not kill us before we have
  // undone the host's partition and scheduling policies.
  ::signal(SIGPIPE, SIG_IGN);
}

std::string loadavg(int fields) {
  std::ifstream f("/proc/loadavg");
  std::string out, field;
  for (int n = 0; n < fields && f >> field; ++n) out += (n ? " " : "") + field;
  return out;
}

}  // namespace capsule::bench

int main(int argc, char** argv) {
  using capsule::bench::registry;
  auto& reg = registry();
  std::sort(reg.begin(), reg.end(), [](auto& a, auto& b) { return a.name < b.name; });
  if (argc == 2 && std::string(argv[1]) == "--list") {  // names only, for scripts (the smoke tests' coverage)
    int rc = 0;
    for (const auto& b : reg) {
      std::cout << b.name << "\n";
      // A benchmark's own --smoke arguments must pass its own checks.
      if (std::string why = capsule::bench::check_options(b, b.smoke); !why.empty()) {
        std::cerr << "capsule-bench " << b.name << ": its --smoke arguments: " << why << "\n";
        rc = 1;
      }
    }
    return rc;
  }
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << "usage: capsule-bench BENCHMARK [options]\n\nbenchmarks:\n";
    for (const auto& b : reg) std::cout << "  " << b.name << std::string(18 - std::min<std::size_t>(17, b.name.size()), ' ') << b.summary << "\n";
    return argc < 2 ? 2 : 0;
  }
  for (const auto& b : reg)
    if (b.name == argv[1]) {
      std::vector<std::string> args(argv + 2, argv + argc);
      // A benchmark takes the CPUs and real-time bandwidth for minutes: a
      // request for help must not start one.
      if (std::find_if(args.begin(), args.end(), [](const std::string& a) { return a == "--help" || a == "-h"; }) !=
          args.end()) {
        std::cout << "capsule-bench " << b.name << ": " << b.summary << "\n\noptions:\n";
        for (const auto& o : b.options) {
          std::string left = o.name + " " + capsule::bench::kind_text(o.kind);
          std::cout << "  " << left << std::string(left.size() < 26 ? 26 - left.size() : 1, ' ') << o.help;
          if (!o.choices.empty()) {
            std::cout << " (";
            for (std::size_t i = 0; i < o.choices.size(); ++i) std::cout << (i ? ", " : "") << o.choices[i];
            std::cout << ")";
          }
          std::cout << "\n";
        }
        std::cout << "  --smoke                   one tiny run to the summary line (adds:";
        for (const auto& s : b.smoke) std::cout << " " << s;
        std::cout << ")\n(defaults are listed in docs/ beside its results)\n";
        return 0;
      }
      // --smoke: the benchmark's own tiny settings after the user's (the
      // first occurrence of an option wins).
      if (auto s = std::find(args.begin(), args.end(), "--smoke"); s != args.end()) {
        args.erase(s);
        args.insert(args.end(), b.smoke.begin(), b.smoke.end());
      }
      if (std::string why = capsule::bench::check_options(b, args); !why.empty()) {
        std::cerr << "capsule-bench " << b.name << ": " << why << "\n";
        return 2;
      }
      capsule::bench::g_running = &b;
      capsule::log::set_sink(&capsule::log::warnings_to_stderr);
      return b.fn(args);
    }
  std::cerr << "capsule-bench: unknown benchmark '" << argv[1] << "' (capsule-bench --help lists them)\n";
  return 2;
}
