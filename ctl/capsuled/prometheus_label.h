// A label value in Prometheus' text exposition format: backslash, double
// quote and newline escaped. Every /metrics writer of capsuled uses it.
#pragma once

#include <string>

namespace capsule::agent {

inline std::string prometheus_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace capsule::agent
