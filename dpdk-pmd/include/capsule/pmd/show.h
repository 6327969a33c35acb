// What the datapath does, as text for operators: the answers of the
// `capsule/pmd-stats-show` and `capsule/fdb-show` unixctl commands (modelled
// on OVS's dpif-netdev/pmd-stats-show and fdb/show). Functions of the
// datapath, so whichever process runs it can serve them.
#pragma once

#include <string>

#include "capsule/pmd/datapath.h"

namespace capsule::pmd {

// Per VM: its PMD thread, traffic, drops by cause, busy/idle rounds and how
// the thread waited; then the uplink. `vm` = "" for every VM; an unknown VM
// gives an error naming it.
Result<std::string> format_pmd_stats(const Datapath& dp, const std::string& vm = "");

// The forwarding table: port, MAC, age (seconds since last seen; "static"
// for a VM's configured MAC), then its size against its limits.
std::string format_fdb(const Datapath& dp);

}  // namespace capsule::pmd
