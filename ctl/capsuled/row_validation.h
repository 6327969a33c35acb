// A row of the Capsule database, written by any OVSDB client, turned into
// what the kernel and the datapath should hold, or refused with the sentence
// that goes into its status:reason. Rows are untrusted input (fuzz/rows_fuzz.cc).
#pragma once

#include <sys/types.h>

#include "capsule/ovs/db.h"
#include "capsule/result.h"
#include "capsule/rsv/reservation.h"
#include "datapath.h"
#include "reservations.h"

namespace capsule::agent {

// A VM row turned into what the kernel and the datapath should hold.
struct DesiredVm {
  pid_t pid = 0;
  rsv::VmReservationSpec spec;  // vCPU threads (+ the PMD thread when attached)
  VmNetConfig net;
};

// Validates a VM row and resolves its threads (pid/pidfile, vCPU discovery
// on `host`: the kernel, or a simulated host in scale runs).
Result<DesiredVm> desired_from_row(const ovs::VmRow& row, const Reservations& host);
// Validates one port row (vhost path, MAC, QoS type and keys).
Result<PortConfig> port_from_row(const ovs::PortRow& row);

}  // namespace capsule::agent
