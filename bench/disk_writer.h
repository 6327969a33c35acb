// A disk-writing neighbour for benchmarks: a child process that writes files
// of a given size into a temporary directory of its own, fsyncs each one
// (as `dd ... conv=fsync` does), deletes it and starts again, until it is
// stopped or its own time limit passes. The parent ends it by PID and
// removes the directory with whatever it left; the child also dies with its
// parent (PR_SET_PDEATHSIG), so a killed benchmark leaves no writer behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>

#include "capsule/result.h"

namespace capsule::bench {

struct DiskWriterOptions {
  std::string parent_dir = "/var/tmp";  // on a disk, not a tmpfs
  long file_mib = 512;                  // written, fsynced and deleted per round
  bool direct = false;                  // O_DIRECT instead of page cache + fsync
  std::chrono::seconds max_time{600};   // the child stops by itself after this
};

class DiskWriter {
 public:
  static Result<std::unique_ptr<DiskWriter>> start(const DiskWriterOptions& options);
  ~DiskWriter();  // SIGKILL to the child, reaped, directory removed
  DiskWriter(const DiskWriter&) = delete;
  DiskWriter& operator=(const DiskWriter&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }
  // MiB the child has written so far (shared-memory counter).
  double mib_written() const;
  // Whether the child still runs (it stops at max_time or on a write error).
  bool running();

 private:
  DiskWriter() = default;
  pid_t pid_ = -1;
  bool reaped_ = false;
  std::string dir_;
  volatile long* counter_ = nullptr;  // KiB written, shared with the child
};

}  // namespace capsule::bench
