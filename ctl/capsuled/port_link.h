// What a port's status says about the guest behind it. Status tells the
// truth: a port is `attached` only while the VM's virtio device is up on it
// (vhost new_device seen, not destroyed since); a port the datapath holds
// while no VM is connected is `waiting`, and the reason says since when.
#pragma once

#include <string>

#include "capsule/wall_clock.h"
#include "datapath.h"

namespace capsule::agent {

struct PortLinkStatus {
  std::string state;   // "attached" or "waiting"
  std::string reason;  // "" when attached
  std::string since;   // attached: when the VM connected
};

inline PortLinkStatus port_link_status(const PortCounters& c) {
  if (c.connected) return {"attached", "", format_utc(c.last_connect_ms)};
  if (c.connects) return {"waiting", "VM disconnected at " + format_utc(c.last_disconnect_ms), ""};
  return {"waiting", "the VM has not connected to " + c.socket + " (since " + format_utc(c.since_ms) + ")", ""};
}

}  // namespace capsule::agent
