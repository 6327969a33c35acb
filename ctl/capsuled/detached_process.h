// Starting a daemon that must outlive its starter: capsuled starts
// capsule-datapathd this way, so that SIGKILL of capsuled, of its process
// group or of a supervisor that started it does not reach the datapath.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::agent {

// Runs argv (argv[0] a path) in a new session, as a grandchild that init
// reaps (double fork): no signal mask, default signal handlers, stdin from
// /dev/null, stdout and stderr appended to `output` (created if absent), no
// other descriptor, cwd "/". Returns its pid once it has been exec'd or has
// failed to (then it exits 127 at once).
Result<pid_t> spawn_detached(const std::vector<std::string>& argv, const std::string& output);

}  // namespace capsule::agent
