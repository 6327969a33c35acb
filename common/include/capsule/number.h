// Numbers a person typed (command-line options): read whole or refused, so
// that "6o" is not taken as 6, "-1" not as a huge count, "" not as 0. The
// callers name the option in their error; these only say yes or no.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string_view>

namespace capsule {

// A whole number 0..max in decimal digits only (no sign, no blanks).
inline std::optional<uint64_t> parse_whole(std::string_view text, uint64_t max = UINT64_MAX) {
  uint64_t v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || p != end || v > max) return std::nullopt;
  return v;
}

// A finite decimal number >= 0 ("2", "0.5", "1e6").
inline std::optional<double> parse_nonnegative(std::string_view text) {
  double v = 0;
  const char* end = text.data() + text.size();
  auto [p, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || ec != std::errc() || p != end || !std::isfinite(v) || v < 0) return std::nullopt;
  return v;
}

}  // namespace capsule
