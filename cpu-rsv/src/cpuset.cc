#include "capsule/rsv/cpuset.h"

#include <algorithm>
#include <fstream>
#include <sstream>

namespace capsule::rsv {

Result<std::string> read_text_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) return errno_error("cannot read " + path, errno ? errno : ENOENT);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

Status write_text_file(const std::string& path, const std::string& value) {
  // One write(2) per value: cgroup files act on each write call.
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) return errno_error("cannot open " + path, errno);
  std::setvbuf(f, nullptr, _IONBF, 0);
  int err = 0;
  if (std::fwrite(value.data(), 1, value.size(), f) != value.size()) err = errno;
  if (std::fclose(f) != 0 && !err) err = errno;
  if (err) return errno_error("cannot write '" + value + "' to " + path, err);
  return Status::Ok();
}

std::vector<int> parse_cpu_list(const std::string& list) {
  std::vector<int> cpus;
  std::stringstream ss(list);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (part.empty()) continue;
    auto dash = part.find('-');
    try {
      int lo = std::stoi(part.substr(0, dash));
      int hi = dash == std::string::npos ? lo : std::stoi(part.substr(dash + 1));
      for (int c = lo; c <= hi; ++c) cpus.push_back(c);
    } catch (...) {
      // malformed piece: skip it, the kernel never writes one
    }
  }
  std::sort(cpus.begin(), cpus.end());
  cpus.erase(std::unique(cpus.begin(), cpus.end()), cpus.end());
  return cpus;
}

std::string format_cpu_list(const std::vector<int>& in) {
  std::vector<int> cpus = in;
  std::sort(cpus.begin(), cpus.end());
  std::string out;
  for (std::size_t i = 0; i < cpus.size();) {
    std::size_t j = i;
    while (j + 1 < cpus.size() && cpus[j + 1] == cpus[j] + 1) ++j;
    if (!out.empty()) out += ',';
    out += std::to_string(cpus[i]);
    if (j > i) out += "-" + std::to_string(cpus[j]);
    i = j + 1;
  }
  return out;
}

std::vector<int> online_cpus() {
  auto s = read_text_file("/sys/devices/system/cpu/online");
  return s ? parse_cpu_list(*s) : std::vector<int>{0};
}

bool rebuild_kernel_dl_accounting() {
  const CpusetFs fs = CpusetFs::detect();
  if (fs.kind() != CpusetFs::Kind::kV1) return false;
  for (const char* rel : {"/", "/capsule-system"}) {
    const std::string file = fs.path(rel) + "/cpuset.sched_load_balance";
    auto cur = read_text_file(file);
    if (!cur || *cur != "1") continue;
    if (!write_text_file(file, "0")) return false;
    return bool(write_text_file(file, "1"));
  }
  return false;
}

CpusetFs CpusetFs::detect() {
  CpusetFs fs;
  std::ifstream mounts("/proc/mounts");
  std::string dev, dir, type, opts, rest;
  std::string v2_root;
  while (mounts >> dev >> dir >> type >> opts && std::getline(mounts, rest)) {
    if (type == "cgroup") {
      std::stringstream o(opts);
      std::string opt;
      while (std::getline(o, opt, ','))
        if (opt == "cpuset") {
          fs.kind_ = Kind::kV1;
          fs.root_ = dir;
          return fs;
        }
    } else if (type == "cgroup2" && v2_root.empty()) {
      auto ctl = read_text_file(dir + "/cgroup.controllers");
      if (ctl && (" " + *ctl + " ").find(" cpuset ") != std::string::npos) v2_root = dir;
    }
  }
  if (!v2_root.empty()) {
    fs.kind_ = Kind::kV2;
    fs.root_ = v2_root;
  }
  return fs;
}

std::string CpusetFs::path(const std::string& rel) const {
  if (rel.empty() || rel == "/") return root_;
  return root_ + (rel.front() == '/' ? "" : "/") + rel;
}

Result<std::string> CpusetFs::thread_cpuset(pid_t tid) const {
  if (kind_ == Kind::kNone) return std::string("/");
  // /proc/<tid>/cpuset names the thread's cpuset in the hierarchy that has
  // the cpuset controller, v1 or v2 alike.
  auto s = read_text_file("/proc/" + std::to_string(tid) + "/cpuset");
  if (!s) return Error{"thread " + std::to_string(tid) + " does not exist (it exited)", ESRCH};
  return s->empty() ? std::string("/") : *s;
}

Status CpusetFs::move_thread(pid_t tid, const std::string& rel) const {
  if (kind_ == Kind::kNone) return Error{"no cpuset cgroup hierarchy is mounted", ENOENT};
  // v1 "tasks" takes thread ids; v2 "cgroup.threads" takes them only inside a
  // threaded subtree, and the kernel's EOPNOTSUPP then says so.
  const std::string file = path(rel) + (kind_ == Kind::kV1 ? "/tasks" : "/cgroup.threads");
  Status st = write_text_file(file, std::to_string(tid));
  if (!st && st.error().errnum == ESRCH)
    return Error{"thread " + std::to_string(tid) + " does not exist (it exited)", ESRCH};
  if (!st)
    return Error{"cannot move thread " + std::to_string(tid) + " into cpuset " + rel + ": " +
                     st.error().message,
                 st.error().errnum};
  return st;
}

}  // namespace capsule::rsv
