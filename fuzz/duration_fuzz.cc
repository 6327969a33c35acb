// parse_duration (capsule-ctl set-rsv, capsule-rsv, VM rows): any text is
// either refused with a message or gives a non-negative duration, and the
// same text gives the same duration again.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "capsule/rsv/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto d = capsule::rsv::parse_duration(text);
  if (!d) {
    if (d.error().message.empty()) std::abort();  // a refusal must say why
    return 0;
  }
  if (d->count() < 0) std::abort();
  auto again = capsule::rsv::parse_duration(text);
  if (!again || *again != *d) std::abort();
  (void)capsule::rsv::format_duration(*d);
  return 0;
}
