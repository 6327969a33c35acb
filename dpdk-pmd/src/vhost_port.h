// A VM's vhost-user port on rte_vhost: client mode (capsule connects and
// reconnects, like OVS dpdkvhostuserclient) or server mode. The library's
// callbacks attach the device to the VM's context (vid, kick eventfd) and,
// on disconnect, detach it only once the VM's PMD thread has stopped using
// it.
#pragma once

#include "capsule/result.h"
#include "core.h"

namespace capsule::pmd::detail {

// Registers and starts the port. On error nothing is registered.
Status vhost_port_start(Vm* vm);
// Unregisters (closing the connection; the destroy callback runs). Blocks
// until the library has let go of the socket.
void vhost_port_stop(Vm* vm);

}  // namespace capsule::pmd::detail
