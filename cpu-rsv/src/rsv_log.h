// Failures cpu-rsv cannot hand back to its caller: a rollback that failed
// after the error it returns, the journal written after a change, a
// partition removed in a destructor. Each leaves the host other than the
// caller believes, so it is logged (capsule/log.h, module "rsv",
// rate-limited as OVS does).
#pragma once

#include <string>

#include "capsule/log.h"
#include "capsule/result.h"

namespace capsule::rsv::detail {

inline void log_if_failed(const Status& st, const std::string& what) {
  static log::RateLimit rate_limit;
  if (!st) rate_limit.write(log::Level::kWarn, "rsv", what + ": " + st.error().message);
}

}  // namespace capsule::rsv::detail
