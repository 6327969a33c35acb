// Ethernet addresses as plain values: parse, print, classify.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "capsule/result.h"

namespace capsule::pmd {

struct MacAddr {
  std::array<uint8_t, 6> b{};

  static Result<MacAddr> parse(const std::string& text);  // "02:00:00:00:00:01"
  std::string str() const;
  uint64_t u64() const;  // 48 bits, b[0] most significant
  static MacAddr from_u64(uint64_t v);
  bool is_zero() const { return u64() == 0; }
  bool is_multicast() const { return b[0] & 1; }  // includes broadcast
  bool operator==(const MacAddr&) const = default;
};

}  // namespace capsule::pmd
