#include "detached_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>

namespace capsule::agent {

Result<pid_t> spawn_detached(const std::vector<std::string>& argv, const std::string& output) {
  if (argv.empty()) return Error{"nothing to run", EINVAL};
  // Everything the children need is prepared here: after fork() in a
  // threaded process only async-signal-safe calls are allowed.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) return errno_error("cannot open /dev/null", errno);
  const int out_fd = ::open(output.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out_fd < 0) {
    const int err = errno;
    ::close(null_fd);
    return errno_error("cannot open " + output, err);
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) {
    const int err = errno;
    ::close(null_fd);
    ::close(out_fd);
    return errno_error("pipe", err);
  }
  const pid_t first = ::fork();
  if (first == 0) {
    ::setsid();
    const pid_t daemon = ::fork();
    if (daemon != 0) {  // the intermediate child: report the pid and leave
      (void)!::write(pipe_fds[1], &daemon, sizeof daemon);
      ::_exit(daemon > 0 ? 0 : 1);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    struct sigaction dfl{};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);
    ::dup2(null_fd, STDIN_FILENO);
    ::dup2(out_fd, STDOUT_FILENO);
    ::dup2(out_fd, STDERR_FILENO);
    ::syscall(SYS_close_range, 3u, ~0u, 0u);
    (void)!::chdir("/");
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(null_fd);
  ::close(out_fd);
  ::close(pipe_fds[1]);
  if (first < 0) {
    const int err = errno;
    ::close(pipe_fds[0]);
    return errno_error("fork", err);
  }
  pid_t daemon = -1;
  const bool got = ::read(pipe_fds[0], &daemon, sizeof daemon) == ssize_t(sizeof daemon);
  ::close(pipe_fds[0]);
  int status = 0;
  while (::waitpid(first, &status, 0) < 0 && errno == EINTR) {
  }
  if (!got || daemon <= 0) return Error{"cannot start " + argv[0] + ": fork failed", EAGAIN};
  return daemon;
}


}  // namespace capsule::agent
