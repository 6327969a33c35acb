// Why a server-mode vhost-user port (capsule creates the socket, the VM
// connects) cannot come up, read from the file system: the socket's
// directory is missing, or the path names something that is not a socket
// (capsule never replaces a regular file or a directory with its socket).
// The agent puts the answer in the Port's status, so the operator learns why
// the port never attaches.
#pragma once

#include <string>

namespace capsule::agent {

// "" when nothing is in the way (or the port is client-mode).
std::string vhost_server_obstacle(const std::string& vhost_path, bool vhost_client);

}  // namespace capsule::agent
