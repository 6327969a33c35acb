#include "cfs_bandwidth_group.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "capsule/rsv/cpuset.h"

namespace capsule::bench {
namespace {

// Mount point of the cgroup v1 hierarchy that has the "cpu" controller.
std::string cpu_cgroup_root() {
  std::ifstream mounts("/proc/mounts");
  std::string dev, dir, type, opts, rest;
  while (mounts >> dev >> dir >> type >> opts && std::getline(mounts, rest)) {
    if (type != "cgroup") continue;
    std::stringstream o(opts);
    std::string opt;
    while (std::getline(o, opt, ','))
      if (opt == "cpu") return dir;
  }
  return "";
}

}  // namespace

Result<CfsBandwidthGroup> CfsBandwidthGroup::create(const std::string& name, std::chrono::nanoseconds quota,
                                                    std::chrono::nanoseconds period) {
  const std::string root = cpu_cgroup_root();
  if (root.empty()) return Error{"no cgroup v1 'cpu' hierarchy is mounted (needed for CFS bandwidth control)", ENOENT};
  const std::string dir = root + "/" + name;
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) return errno_error("cannot create " + dir, errno);
  CfsBandwidthGroup g(root, dir);
  const auto us = [](std::chrono::nanoseconds d) { return std::to_string(d.count() / 1000); };
  if (Status st = rsv::write_text_file(dir + "/cpu.cfs_period_us", us(period)); !st) return st.error();
  if (Status st = rsv::write_text_file(dir + "/cpu.cfs_quota_us", us(quota)); !st) return st.error();
  return g;
}

CfsBandwidthGroup::CfsBandwidthGroup(CfsBandwidthGroup&& o) noexcept
    : root_(std::move(o.root_)), dir_(std::move(o.dir_)), tids_(std::move(o.tids_)) {
  o.dir_.clear();
}

Status CfsBandwidthGroup::add_thread(pid_t tid) {
  if (Status st = rsv::write_text_file(dir_ + "/tasks", std::to_string(tid)); !st) return st;
  tids_.push_back(tid);
  return Status::Ok();
}

CfsBandwidthGroup::~CfsBandwidthGroup() {
  if (dir_.empty()) return;
  for (pid_t t : tids_) (void)rsv::write_text_file(root_ + "/tasks", std::to_string(t));
  ::rmdir(dir_.c_str());
}

}  // namespace capsule::bench
