#include "capsule/rsv/partition.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "rsv_log.h"

namespace capsule::rsv {
namespace {

constexpr const char* kSystemCpuset = "capsule-system";

std::vector<pid_t> tasks_of(const std::string& dir) {
  std::vector<pid_t> tids;
  auto s = read_text_file(dir + "/tasks");
  if (!s) return tids;
  std::stringstream ss(*s);
  pid_t t;
  while (ss >> t) tids.push_back(t);
  return tids;
}

Status make_dir(const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) == 0 || errno == EEXIST) return Status::Ok();
  return errno_error("cannot create cpuset " + dir, errno);
}

Status remove_dir(const std::string& dir) {
  if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return Status::Ok();
  return errno_error("cannot remove cpuset " + dir, errno);
}

std::string sibling_holding(const std::string& root, int cpu) {
  DIR* d = ::opendir(root.c_str());
  if (!d) return "";
  std::string found;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (e->d_type != DT_DIR || n == "." || n == ".." || n.rfind("capsule-", 0) == 0) continue;
    auto cpus = read_text_file(root + "/" + n + "/cpuset.cpus");
    if (!cpus) continue;
    const auto list = parse_cpu_list(*cpus);
    if (std::find(list.begin(), list.end(), cpu) != list.end()) {
      found = "/" + n + " (cpus " + *cpus + ")";
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace

std::string PartitionSet::foreign_cpuset_holding(int cpu, const CpusetFs& fs) {
  if (fs.kind() != CpusetFs::Kind::kV1) return "";
  return sibling_holding(fs.path("/"), cpu);
}

PartitionSet::PartitionSet(CpusetFs fs) : fs_(std::move(fs)) {}

PartitionSet::~PartitionSet() {
  std::lock_guard lk(mu_);
  std::vector<int> cpus;
  for (auto& [cpu, n] : refs_) cpus.push_back(cpu);
  for (int cpu : cpus)
    detail::log_if_failed(remove_locked(cpu), "cannot remove the partition of core " + std::to_string(cpu));
}

std::string PartitionSet::partition_name(int cpu) { return "/capsule-c" + std::to_string(cpu); }

std::vector<int> PartitionSet::partitioned_cpus() const {
  std::lock_guard lk(mu_);
  std::vector<int> v;
  for (auto& [cpu, n] : refs_) v.push_back(cpu);
  return v;
}

Status PartitionSet::update_system_cpuset_locked() {
  const std::string sys = fs_.path(std::string("/") + kSystemCpuset);
  std::vector<int> rest;
  for (int c : online_cpus())
    if (!refs_.count(c)) rest.push_back(c);
  if (refs_.empty()) return remove_dir(sys);
  if (Status st = make_dir(sys); !st) return st;
  auto mems = read_text_file(fs_.path("/") + "/cpuset.mems");
  if (!mems) return mems.error();
  if (Status st = write_text_file(sys + "/cpuset.cpus", format_cpu_list(rest)); !st) return st;
  return write_text_file(sys + "/cpuset.mems", *mems);
}

Status PartitionSet::make_partition_locked(int cpu) {
  const std::string dir = fs_.path(partition_name(cpu));
  const std::string root = fs_.path("/");
  // The system sibling must give the core up before the partition can
  // claim it exclusively.
  Status st = update_system_cpuset_locked();
  auto mems = read_text_file(root + "/cpuset.mems");
  if (st && !mems) st = mems.error();
  if (st) st = make_dir(dir);
  if (st) st = write_text_file(dir + "/cpuset.cpus", std::to_string(cpu));
  if (st) st = write_text_file(dir + "/cpuset.mems", *mems);
  if (st) {
    st = write_text_file(dir + "/cpuset.cpu_exclusive", "1");
    if (!st && st.error().errnum == EINVAL)
      if (std::string other = sibling_holding(root, cpu); !other.empty())
        st = Error{"cpuset " + other + " also holds core " + std::to_string(cpu) +
                       ", and an exclusive partition must hold its core alone (libvirt makes /machine for its "
                       "VMs): take the core out of that cpuset's cpus, or use global admission mode",
                   EBUSY};
  }
  if (st) st = write_text_file(dir + "/cpuset.sched_load_balance", "1");
  if (st) st = write_text_file(root + "/cpuset.sched_load_balance", "0");
  return st;
}

Result<std::string> PartitionSet::acquire(int cpu) {
  if (fs_.kind() == CpusetFs::Kind::kNone)
    return Error{"cannot pin a SCHED_DEADLINE thread to core " + std::to_string(cpu) +
                     ": no cpuset cgroup hierarchy is mounted (mount -t cgroup -o cpuset cpuset "
                     "/sys/fs/cgroup/cpuset)",
                 ENOENT};
  if (fs_.kind() == CpusetFs::Kind::kV2)
    return Error{"per-core partitions need the cgroup v1 cpuset controller; this host has cpuset "
                     "on the unified (v2) hierarchy only, where single threads cannot be moved "
                     "between partitions. Use global mode (unpinned threads) on this host",
                 EOPNOTSUPP};
  std::lock_guard lk(mu_);
  const auto online = online_cpus();
  if (std::find(online.begin(), online.end(), cpu) == online.end())
    return Error{"core " + std::to_string(cpu) + " is not an online CPU (online: " +
                     format_cpu_list(online) + ")",
                 EINVAL};
  const std::string name = partition_name(cpu);
  if (auto it = refs_.find(cpu); it != refs_.end()) {
    ++it->second;
    return name;
  }
  if (refs_.size() + 1 >= online.size())
    return Error{"cannot make core " + std::to_string(cpu) +
                     " a partition: it is the last core left for the rest of the system",
                 EBUSY};

  if (refs_.empty()) {
    auto lb = read_text_file(fs_.path("/") + "/cpuset.sched_load_balance");
    if (!lb) return lb.error();
    saved_root_load_balance_ = *lb;
  }
  refs_[cpu] = 1;
  if (Status st = make_partition_locked(cpu); !st) {
    (void)remove_locked(cpu);
    return Error{"cannot make core " + std::to_string(cpu) + " a partition: " + st.error().message,
                 st.error().errnum};
  }
  return name;
}

Result<std::string> PartitionSet::adopt(int cpu) {
  {
    std::lock_guard lk(mu_);
    const std::string name = partition_name(cpu);
    if (auto it = refs_.find(cpu); it != refs_.end()) {
      ++it->second;
      return name;
    }
    if (fs_.kind() == CpusetFs::Kind::kV1 && ::access(fs_.path(name).c_str(), F_OK) == 0) {
      // Made by our predecessor, who saw the root balanced (cleanup_stale
      // assumes the same): that is what removing the last partition restores.
      if (refs_.empty() && saved_root_load_balance_.empty()) saved_root_load_balance_ = "1";
      refs_[cpu] = 1;
      return name;
    }
  }
  return acquire(cpu);
}

Status PartitionSet::ensure(int cpu) {
  std::lock_guard lk(mu_);
  if (!refs_.count(cpu)) return Error{"core " + std::to_string(cpu) + " has no capsule partition", EINVAL};
  if (::access(fs_.path(partition_name(cpu)).c_str(), F_OK) == 0) return Status::Ok();
  if (Status st = make_partition_locked(cpu); !st)
    return Error{"cannot make core " + std::to_string(cpu) + " a partition again: " + st.error().message,
                 st.error().errnum};
  return Status::Ok();
}

Status PartitionSet::add_thread(int cpu, pid_t tid) {
  {
    std::lock_guard lk(mu_);
    if (!refs_.count(cpu))
      return Error{"core " + std::to_string(cpu) + " has no capsule partition", EINVAL};
  }
  return fs_.move_thread(tid, partition_name(cpu));
}

Status PartitionSet::release(int cpu) {
  std::lock_guard lk(mu_);
  auto it = refs_.find(cpu);
  if (it == refs_.end()) return Status::Ok();
  if (--it->second > 0) return Status::Ok();
  return remove_locked(cpu);
}

Status PartitionSet::remove_locked(int cpu) {
  const std::string dir = fs_.path(partition_name(cpu));
  const std::string root = fs_.path("/");
  Status first;
  // Threads still inside go back to the root cpuset; rmdir needs it empty.
  for (pid_t t : tasks_of(dir)) {
    Status st = fs_.move_thread(t, "/");
    if (!st && st.error().errnum != ESRCH && first) first = st;
  }
  if (Status st = remove_dir(dir); !st && first) first = st;
  refs_.erase(cpu);
  if (Status st = update_system_cpuset_locked(); !st && first) first = st;
  if (refs_.empty() && !saved_root_load_balance_.empty()) {
    if (Status st = write_text_file(root + "/cpuset.sched_load_balance", saved_root_load_balance_);
        !st && first)
      first = st;
    saved_root_load_balance_.clear();
  }
  return first;
}

std::vector<PartitionSet::Existing> PartitionSet::existing(const CpusetFs& fs) {
  std::vector<Existing> found;
  if (fs.kind() != CpusetFs::Kind::kV1) return found;
  const std::string root = fs.path("/");
  DIR* d = ::opendir(root.c_str());
  if (!d) return found;
  while (dirent* e = ::readdir(d)) {
    const std::string n = e->d_name;
    if (n.rfind("capsule-c", 0) == 0 && e->d_type == DT_DIR) found.push_back({"/" + n, tasks_of(root + "/" + n)});
  }
  ::closedir(d);
  std::sort(found.begin(), found.end(), [](const Existing& a, const Existing& b) { return a.name < b.name; });
  return found;
}

std::string PartitionSet::root_split(const CpusetFs& fs) {
  if (fs.kind() != CpusetFs::Kind::kV1) return "";
  auto lb = read_text_file(fs.path("/") + "/cpuset.sched_load_balance");
  if (!lb || *lb != "0") return "";
  std::string names;
  for (const Existing& p : existing(fs))
    names += (names.empty() ? "" : ", ") + p.name + (p.tasks.empty() ? " (no tasks: left by a killed owner)" : "");
  return "the root cpuset does not balance load, so the CPUs are split into several root domains" +
         (names.empty() ? std::string(" by someone other than capsule")
                        : "; capsule partitions: " + names + " (`capsule-rsv cleanup` removes those without tasks)");
}

Result<std::vector<std::string>> PartitionSet::cleanup_stale(const CpusetFs& fs) {
  std::vector<std::string> removed;
  if (fs.kind() != CpusetFs::Kind::kV1) return removed;
  const std::string root = fs.path("/");
  if (::access(root.c_str(), R_OK) != 0) return errno_error("cannot list " + root, errno);
  bool busy = false;
  for (const Existing& p : existing(fs)) {
    if (!p.tasks.empty()) {
      busy = true;  // someone still uses it: not stale
      continue;
    }
    if (remove_dir(fs.path(p.name))) removed.push_back(p.name.substr(1));
  }
  // capsule-system only exists beside partitions; with none left, it and
  // the root's disabled load balancing are leftovers too.
  const std::string sys = root + "/" + kSystemCpuset;
  if (!busy && ::access(sys.c_str(), F_OK) == 0) {
    if (remove_dir(sys)) removed.push_back(kSystemCpuset);
    (void)write_text_file(root + "/cpuset.sched_load_balance", "1");
  }
  return removed;
}

}  // namespace capsule::rsv
