// One VM's poll-mode thread: everything the host does for that VM's packets.
#pragma once

#include "capsule/result.h"
#include "core.h"

namespace capsule::pmd::detail {

// Starts vm->thread ("cpmd-<vm>"); returns once it runs (tid known) or failed.
Status pmd_thread_start(Core* core, Vm* vm);
// Asks the thread to stop and joins it.
void pmd_thread_stop(Vm* vm);

}  // namespace capsule::pmd::detail
