#include "capsule/rsv/journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <nlohmann/json.hpp>

namespace capsule::rsv {
namespace {

using nlohmann::json;
constexpr int kVersion = 1;

json sched_to_json(const SchedParams& p) {
  return json{{"policy", p.policy},         {"flags", p.flags},
              {"nice", p.nice},             {"priority", p.priority},
              {"runtime_ns", p.runtime.count()}, {"deadline_ns", p.deadline.count()},
              {"period_ns", p.period.count()}};
}

SchedParams sched_from_json(const json& j) {
  SchedParams p;
  p.policy = j.at("policy").get<int>();
  p.flags = j.at("flags").get<uint64_t>();
  p.nice = j.at("nice").get<int>();
  p.priority = j.at("priority").get<int>();
  p.runtime = nanoseconds(j.at("runtime_ns").get<int64_t>());
  p.deadline = nanoseconds(j.at("deadline_ns").get<int64_t>());
  p.period = nanoseconds(j.at("period_ns").get<int64_t>());
  return p;
}

json thread_to_json(const JournalThread& t) {
  const ThreadSnapshot& o = t.original;
  return json{{"tid", t.budget.tid},
              {"role", t.budget.role},
              {"runtime_ns", t.budget.runtime.count()},
              {"cpu", t.budget.cpu},
              {"start_time", o.start_time},
              {"comm", o.comm},
              {"original",
               {{"sched", sched_to_json(o.sched)}, {"affinity", affinity_cpus(o.affinity)}, {"cpuset", o.cpuset}}}};
}

JournalThread thread_from_json(const json& j) {
  JournalThread t;
  t.budget.tid = j.at("tid").get<pid_t>();
  t.budget.role = j.at("role").get<std::string>();
  t.budget.runtime = nanoseconds(j.at("runtime_ns").get<int64_t>());
  t.budget.cpu = j.at("cpu").get<int>();
  ThreadSnapshot& o = t.original;
  o.tid = t.budget.tid;
  o.start_time = j.at("start_time").get<unsigned long long>();
  o.comm = j.at("comm").get<std::string>();
  const json& orig = j.at("original");
  o.sched = sched_from_json(orig.at("sched"));
  CPU_ZERO(&o.affinity);
  for (int c : orig.at("affinity").get<std::vector<int>>())
    if (c >= 0 && c < CPU_SETSIZE) CPU_SET(c, &o.affinity);
  o.cpuset = orig.at("cpuset").get<std::string>();
  return t;
}

Status write_all(int fd, const std::string& text, const std::string& path) {
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error("cannot write the reservation journal " + path, errno);
    done += std::size_t(n);
  }
  return Status::Ok();
}

}  // namespace

std::string journal_to_json(const JournalState& state) {
  json vms = json::array();
  for (const auto& [name, vm] : state) {
    json threads = json::array();
    for (const auto& t : vm.threads) threads.push_back(thread_to_json(t));
    vms.push_back(json{{"name", vm.name},
                       {"period_ns", vm.period.count()},
                       {"deadline_ns", vm.deadline.count()},
                       {"reclaim", vm.reclaim},
                       {"threads", threads}});
  }
  return json{{"capsule_reservation_journal", kVersion}, {"vms", vms}}.dump(1) + "\n";
}

Result<JournalState> journal_from_json(const std::string& text) {
  try {
    const json j = json::parse(text);
    const int version = j.at("capsule_reservation_journal").get<int>();
    if (version != kVersion)
      return Error{"journal version " + std::to_string(version) + " is not " + std::to_string(kVersion), EINVAL};
    JournalState state;
    for (const json& v : j.at("vms")) {
      JournalVm vm;
      vm.name = v.at("name").get<std::string>();
      vm.period = nanoseconds(v.at("period_ns").get<int64_t>());
      vm.deadline = nanoseconds(v.at("deadline_ns").get<int64_t>());
      vm.reclaim = v.at("reclaim").get<bool>();
      for (const json& t : v.at("threads")) {
        vm.threads.push_back(thread_from_json(t));
        const ThreadBudget& b = vm.threads.back().budget;
        if (b.tid <= 0 || b.cpu < -1)
          return Error{"VM '" + vm.name + "': thread " + std::to_string(b.tid) + " on cpu " + std::to_string(b.cpu) +
                           " is not a thread capsule could have changed",
                       EINVAL};
      }
      if (state.count(vm.name)) return Error{"VM '" + vm.name + "' is recorded twice", EINVAL};
      state[vm.name] = std::move(vm);
    }
    return state;
  } catch (const json::exception& e) {
    return Error{std::string("not a reservation journal: ") + e.what(), EINVAL};
  }
}

Result<JournalState> Journal::load() const {
  if (::access(path_.c_str(), F_OK) != 0 && errno == ENOENT) return JournalState{};
  auto text = read_text_file(path_);
  if (!text)
    return Error{"cannot read the reservation journal " + path_ + ": " + text.error().message, text.error().errnum};
  auto state = journal_from_json(*text);
  if (!state) return Error{"reservation journal " + path_ + ": " + state.error().message, EINVAL};
  return state;
}

Status Journal::store(const JournalState& state) const {
  const std::string tmp = path_ + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return errno_error("cannot write the reservation journal " + tmp, errno);
  Status st = write_all(fd, journal_to_json(state), tmp);
  if (st && ::fsync(fd) != 0) st = errno_error("cannot sync the reservation journal " + tmp, errno);
  ::close(fd);
  if (st && ::rename(tmp.c_str(), path_.c_str()) != 0)
    st = errno_error("cannot replace the reservation journal " + path_, errno);
  if (!st) {
    ::unlink(tmp.c_str());
    return st;
  }
  // The rename itself must reach the disk before the kernel change it guards.
  const auto slash = path_.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path_.substr(0, slash);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0 || ::fsync(dfd) != 0) {
    const int err = errno;
    if (dfd >= 0) ::close(dfd);
    return errno_error("cannot sync the directory of the reservation journal " + path_, err);
  }
  ::close(dfd);
  return Status::Ok();
}

}  // namespace capsule::rsv
