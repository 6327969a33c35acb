#include "vhost_path_check.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace capsule::agent {
namespace {

const char* kind(mode_t m) {
  if (S_ISREG(m)) return "a regular file";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m) || S_ISBLK(m)) return "a device";
  return "something other than a socket";
}

}  // namespace

std::string vhost_server_obstacle(const std::string& path, bool vhost_client) {
  if (vhost_client || path.empty() || path[0] != '/') return "";
  const std::string dir = path.substr(0, std::max<std::size_t>(path.rfind('/'), 1));
  struct stat st{};
  if (::stat(dir.c_str(), &st) != 0)
    return "server mode: the socket directory " + dir + " " +
           (errno == ENOENT ? std::string("does not exist (capsule does not create it)")
                            : std::string("cannot be read: ") + std::strerror(errno));
  if (!S_ISDIR(st.st_mode)) return "server mode: " + dir + " (the socket's directory) is not a directory";
  if (::lstat(path.c_str(), &st) == 0 && !S_ISSOCK(st.st_mode))
    return "server mode: vhost_path " + path + " names an existing file, " + kind(st.st_mode) +
           ", that capsule will not replace with its socket (remove it or choose another path)";
  return "";
}

}  // namespace capsule::agent
