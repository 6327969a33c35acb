#include "disk_writer.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

namespace capsule::bench {

namespace {

constexpr long kChunk = 1 << 20;  // one write() of 1 MiB

double seconds_now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// The child's whole life: only system calls, no allocation (the parent has
// threads, and a forked child of a threaded process may not malloc).
[[noreturn]] void write_loop(const char* file, const DiskWriterOptions& o, const char* buf,
                             volatile long* counter, pid_t parent) {
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(0);  // the parent died before prctl
  const double end = seconds_now() + double(o.max_time.count());
  while (seconds_now() < end) {
    const int fd = ::open(file, O_WRONLY | O_CREAT | O_TRUNC | (o.direct ? O_DIRECT : 0), 0600);
    if (fd < 0) ::_exit(2);
    for (long i = 0; i < o.file_mib && seconds_now() < end; ++i) {
      if (::write(fd, buf, kChunk) != kChunk) ::_exit(3);
      *counter = *counter + kChunk / 1024;
    }
    ::fsync(fd);
    ::close(fd);
    ::unlink(file);
  }
  ::_exit(0);
}

}  // namespace

Result<std::unique_ptr<DiskWriter>> DiskWriter::start(const DiskWriterOptions& options) {
  if (options.file_mib <= 0) return Error{"the disk writer's file size must be at least 1 MiB", EINVAL};
  std::unique_ptr<DiskWriter> w(new DiskWriter());
  std::string tmpl = options.parent_dir + "/capsule-diskwriter-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return errno_error("cannot make a directory for the disk writer in " + options.parent_dir, errno);
  w->dir_ = tmpl;
  void* shared = ::mmap(nullptr, sizeof(long), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) return errno_error("cannot map the disk writer's counter", errno);
  w->counter_ = static_cast<volatile long*>(shared);
  *w->counter_ = 0;
  void* buf = nullptr;
  if (::posix_memalign(&buf, 4096, kChunk) != 0) return Error{"cannot allocate the disk writer's buffer", ENOMEM};
  std::memset(buf, 0xa5, kChunk);
  const std::string file = w->dir_ + "/data";
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::free(buf);
    return errno_error("cannot start the disk writer", errno);
  }
  if (pid == 0) write_loop(file.c_str(), options, static_cast<const char*>(buf), w->counter_, parent);
  ::free(buf);
  w->pid_ = pid;
  return w;
}

DiskWriter::~DiskWriter() {
  if (pid_ > 0 && !reaped_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  if (counter_) ::munmap(const_cast<long*>(counter_), sizeof(long));
}

double DiskWriter::mib_written() const { return counter_ ? double(*counter_) / 1024.0 : 0; }

bool DiskWriter::running() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == pid_) reaped_ = true;
  return !reaped_;
}

}  // namespace capsule::bench
