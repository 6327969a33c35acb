// The QoS rules (ctl/qos/qos-rules.h) on arbitrary rows: a type and
// KEY=VALUE pairs split from the input. Accepted values must be decimal
// digits within the documented ranges; every refusal has a message.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "qos/qos-rules.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> parts;
  for (size_t s = 0, e; s <= in.size(); s = e + 1) {
    e = in.find('\n', s);
    if (e == std::string::npos) e = in.size();
    parts.push_back(in.substr(s, e - s));
  }
  static const char* types[] = {"egress-policer", "trtcm-policer", "pkt-policer"};
  const std::string type = parts[0].size() == 1 ? types[uint8_t(parts[0][0]) % 3] : parts[0];
  std::vector<std::string> keys, values;
  for (size_t i = 1; i < parts.size(); ++i) {
    const auto eq = parts[i].find('=');
    keys.push_back(parts[i].substr(0, eq));
    values.push_back(eq == std::string::npos ? "" : parts[i].substr(eq + 1));
  }
  std::vector<const char*> k, v;
  for (size_t i = 0; i < keys.size(); ++i) k.push_back(keys[i].c_str()), v.push_back(values[i].c_str());
  char err[256];
  err[0] = 0;
  const int bad = capsule_qos_check(type.c_str(), k.size(), k.data(), v.data(), err, sizeof err);
  if (bad && (!err[0] || std::strlen(err) >= sizeof err)) std::abort();
  for (size_t i = 0; i < k.size(); ++i) {
    uint64_t value = 0;
    if (capsule_qos_parse(type.c_str(), k[i], v[i], &value, err, sizeof err) == 0) {
      if (!v[i][0] || std::strspn(v[i], "0123456789") != std::strlen(v[i])) std::abort();  // digits only
      if (std::to_string(value) != std::string(v[i]).erase(0, std::min(std::strspn(v[i], "0"), std::strlen(v[i]) - 1)))
        std::abort();  // the value is the text's
    } else if (!bad) {
      std::abort();  // a row with a bad value cannot pass as a whole
    }
  }
  return 0;
}
