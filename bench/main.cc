// capsule-bench: benchmarks of capsule against its baselines.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>
#include <unistd.h>

#include "bench.h"
#include "capsule/log.h"

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

std::string arg(const std::vector<std::string>& args, const std::string& key, const std::string& def) {
  for (std::size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == key) return args[i + 1];
  return def;
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

}  // namespace capsule::bench

int main(int argc, char** argv) {
  using capsule::bench::registry;
  auto& reg = registry();
  std::sort(reg.begin(), reg.end(), [](auto& a, auto& b) { return a.name < b.name; });
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << "usage: capsule-bench BENCHMARK [options]\n\nbenchmarks:\n";
    for (const auto& b : reg) std::cout << "  " << b.name << std::string(18 - std::min<std::size_t>(17, b.name.size()), ' ') << b.summary << "\n";
    return argc < 2 ? 2 : 0;
  }
  for (const auto& b : reg)
    if (b.name == argv[1]) {
      const std::vector<std::string> args(argv + 2, argv + argc);
      // A benchmark takes the CPUs and real-time bandwidth for minutes: a
      // request for help must not start one.
      if (std::find_if(args.begin(), args.end(), [](const std::string& a) { return a == "--help" || a == "-h"; }) !=
          args.end()) {
        std::cout << "capsule-bench " << b.name << ": " << b.summary
                  << "\n(its options and defaults are listed in docs/ beside its results)\n";
        return 0;
      }
      capsule::log::set_sink(&capsule::log::warnings_to_stderr);
      return b.fn(args);
    }
  std::cerr << "capsule-bench: unknown benchmark '" << argv[1] << "' (capsule-bench --help lists them)\n";
  return 2;
}
