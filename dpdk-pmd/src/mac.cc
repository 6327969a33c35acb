#include "capsule/pmd/mac.h"

#include <cstdio>

namespace capsule::pmd {

Result<MacAddr> MacAddr::parse(const std::string& text) {
  unsigned v[6];
  char tail;
  if (std::sscanf(text.c_str(), "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
    return Error{"'" + text + "' is not a MAC address (want six hex bytes like 02:00:00:00:00:01)", EINVAL};
  MacAddr m;
  for (int i = 0; i < 6; ++i) m.b[i] = uint8_t(v[i]);
  return m;
}

std::string MacAddr::str() const {
  char buf[18];
  std::snprintf(buf, sizeof buf, "%02x:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4], b[5]);
  return buf;
}

uint64_t MacAddr::u64() const {
  uint64_t v = 0;
  for (auto x : b) v = (v << 8) | x;
  return v;
}

MacAddr MacAddr::from_u64(uint64_t v) {
  MacAddr m;
  for (int i = 5; i >= 0; --i, v >>= 8) m.b[i] = uint8_t(v & 0xff);
  return m;
}

}  // namespace capsule::pmd
