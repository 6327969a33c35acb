#include "capsule/rsv/io_steering.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "capsule/rsv/cpuset.h"
#include "rsv_log.h"

namespace capsule::rsv {

namespace fs = std::filesystem;

namespace {

bool subset_of(const std::vector<int>& a, const std::vector<int>& b) {
  return std::all_of(a.begin(), a.end(), [&](int c) { return std::find(b.begin(), b.end(), c) != b.end(); });
}

// "path<TAB>original" per line, replaced atomically (temporary, fsync,
// rename): a reader sees all of the originals or the previous file.
Status write_journal(const std::string& path, const std::vector<HostSetting>& settings) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return errno_error("cannot write the host-settings journal " + tmp, errno ? errno : EIO);
    for (const auto& s : settings) f << s.path << '\t' << s.original << '\n';
    if (!f.flush()) return errno_error("cannot write the host-settings journal " + tmp, errno ? errno : EIO);
  }
  const int fd = ::open(tmp.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) return errno_error("cannot put the host-settings journal in place at " + path, errno);
  return Status::Ok();
}

}  // namespace

std::string format_cpu_mask(const std::vector<int>& cpus) {
  if (cpus.empty()) return "";
  const int top = *std::max_element(cpus.begin(), cpus.end());
  std::vector<unsigned> words(std::size_t(top / 32 + 1), 0);
  for (int c : cpus)
    if (c >= 0) words[std::size_t(c / 32)] |= 1u << (c % 32);
  std::string out;
  char buf[16];
  for (std::size_t i = words.size(); i-- > 0;) {
    std::snprintf(buf, sizeof buf, out.empty() ? "%x" : "%08x", words[i]);
    out += (out.empty() ? "" : ",") + std::string(buf);
  }
  return out;
}

Result<std::vector<int>> parse_cpu_mask(const std::string& mask) {
  std::vector<std::string> words;
  std::stringstream ss(mask);
  for (std::string w; std::getline(ss, w, ',');) words.push_back(w);
  std::vector<int> cpus;
  if (words.empty()) return Error{"'" + mask + "' is not a CPU mask (hex words separated by commas)", EINVAL};
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[words.size() - 1 - i];  // lowest word last
    if (w.empty() || w.size() > 8 || w.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
      return Error{"'" + mask + "' is not a CPU mask (hex words separated by commas)", EINVAL};
    const unsigned long v = std::stoul(w, nullptr, 16);
    for (int b = 0; b < 32; ++b)
      if (v & (1ul << b)) cpus.push_back(int(i) * 32 + b);
  }
  std::sort(cpus.begin(), cpus.end());
  return cpus;
}

Result<std::unique_ptr<IoSteering>> IoSteering::apply(const std::vector<int>& housekeeping, const std::string& journal,
                                                      const IoSteeringPaths& paths) {
  if (housekeeping.empty()) return Error{"steering interrupts needs at least one housekeeping CPU", EINVAL};
  std::unique_ptr<IoSteering> s(new IoSteering());
  s->housekeeping_ = housekeeping;
  s->journal_ = journal;
  const std::string hk_list = format_cpu_list(housekeeping);

  // The plan first: every setting to change with its value now.
  std::vector<HostSetting> plan;
  std::vector<std::string> irq_names;
  std::error_code ec;
  std::vector<fs::path> irqs;
  for (const auto& e : fs::directory_iterator(paths.proc_irq, ec))
    if (e.is_directory() && e.path().filename().string().find_first_not_of("0123456789") == std::string::npos)
      irqs.push_back(e.path());
  std::sort(irqs.begin(), irqs.end(), [](const fs::path& a, const fs::path& b) {
    return std::stoi(a.filename().string()) < std::stoi(b.filename().string());
  });
  for (const auto& dir : irqs) {
    // A device interrupt has a handler, shown as a directory named after it.
    std::string handler;
    for (const auto& h : fs::directory_iterator(dir, ec))
      if (h.is_directory()) handler = h.path().filename().string();
    if (handler.empty()) continue;
    const std::string file = (dir / "smp_affinity_list").string();
    auto now = read_text_file(file);
    if (!now) continue;
    if (subset_of(parse_cpu_list(*now), housekeeping)) continue;
    plan.push_back({file, *now, hk_list});
    irq_names.push_back("irq " + dir.filename().string() + " (" + handler + ")");
  }
  bool steer_wq = false;
  if (auto wq = read_text_file(paths.workqueue_cpumask)) {
    auto cpus = parse_cpu_mask(*wq);
    if (cpus && !subset_of(*cpus, housekeeping)) {
      plan.push_back({paths.workqueue_cpumask, *wq, format_cpu_mask(housekeeping)});
      steer_wq = true;
    }
  }
  if (!journal.empty())
    if (Status st = write_journal(journal, plan); !st) return st.error();

  for (std::size_t i = 0; i < plan.size(); ++i) {
    const bool is_wq = steer_wq && i + 1 == plan.size();
    Status st = write_text_file(plan[i].path, plan[i].applied);
    if (st) {
      s->changed_.push_back(plan[i]);
      continue;
    }
    const std::string what = is_wq ? "the unbound workqueues" : irq_names[i];
    // EIO / EPERM: an interrupt whose affinity the kernel manages itself
    // (a multi-queue device's vectors, virtio-blk's among them).
    const int e = st.error().errnum;
    s->unmoved_.push_back(what + (e == EIO || e == EPERM ? ": its affinity is managed by the kernel"
                                                         : ": " + st.error().message));
  }
  // The journal names only what changed (a refused write needs no undo).
  if (!journal.empty())
    detail::log_if_failed(write_journal(journal, s->changed_), "cannot narrow the host-settings journal");
  return s;
}

IoSteering::~IoSteering() {
  detail::log_if_failed(restore(), "cannot restore the interrupt and workqueue affinity capsule changed");
}

Status IoSteering::restore() {
  if (restored_) return Status::Ok();
  restored_ = true;
  std::string failed;
  // Workqueues were changed last: back first.
  for (auto it = changed_.rbegin(); it != changed_.rend(); ++it)
    if (Status st = write_text_file(it->path, it->original); !st) failed += (failed.empty() ? "" : "; ") + st.error().message;
  if (!failed.empty()) return Error{"could not restore every host setting (the journal " + journal_ + " keeps them): " + failed, EIO};
  if (!journal_.empty()) ::unlink(journal_.c_str());
  return Status::Ok();
}

Result<int> IoSteering::recover(const std::string& journal) {
  std::ifstream f(journal);
  if (!f) return 0;
  int n = 0;
  std::string failed;
  for (std::string line; std::getline(f, line);) {
    const auto tab = line.find('\t');
    if (tab == std::string::npos) continue;
    const std::string path = line.substr(0, tab), original = line.substr(tab + 1);
    if (Status st = write_text_file(path, original); st) ++n;
    else failed += (failed.empty() ? "" : "; ") + st.error().message;
  }
  if (!failed.empty()) return Error{"could not restore every host setting recorded in " + journal + ": " + failed, EIO};
  ::unlink(journal.c_str());
  return n;
}

std::string IoSteering::describe() const {
  int irqs = 0;
  bool wq = false;
  for (const auto& c : changed_) {
    if (c.path.find("/irq/") != std::string::npos) ++irqs;
    else wq = true;
  }
  std::string out = std::to_string(irqs) + " device interrupt" + (irqs == 1 ? "" : "s") + (wq ? " and the unbound workqueues" : "") +
                    " moved to cpu " + format_cpu_list(housekeeping_);
  if (!unmoved_.empty()) {
    out += "; not movable: ";
    for (std::size_t i = 0; i < unmoved_.size(); ++i) out += (i ? ", " : "") + unmoved_[i];
  }
  return out;
}

}  // namespace capsule::rsv
