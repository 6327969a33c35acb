// The datapath's per-frame L2 decisions on frames a VM controls: port
// security (source must be the port's MAC), learning (port security off),
// lookup. Each 13-byte record is: port (1 byte), destination MAC, source
// MAC. Invariants: configured MACs never move; no port holds more learned
// entries than its cap; the table holds no more than its size; counts match
// what the table lists.
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "fwd_table.h"

using capsule::pmd::detail::FwdTable;
using capsule::pmd::detail::kUplinkPort;

namespace {

uint64_t mac_of(const uint8_t* b) {
  uint64_t v = 0;
  for (int i = 0; i < 6; ++i) v = (v << 8) | b[i];
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static FwdTable t;
  t.reset({.table_size = 64, .aging_s = 2, .vm_port_max = 8});
  constexpr unsigned kPorts = 4;  // ports 0..3; port 3 has no port security
  uint64_t own[kPorts];
  for (unsigned p = 0; p < kPorts; ++p) {
    own[p] = 0x020000000100ull + p;
    if (!t.configure(own[p], uint16_t(p))) std::abort();
  }
  uint32_t now = FwdTable::clock_s();
  for (size_t off = 0; off + 13 <= size; off += 13) {
    const uint8_t* r = data + off;
    const unsigned in = r[0] % (kPorts + 1);  // kPorts = the uplink
    const uint16_t port = in == kPorts ? kUplinkPort : uint16_t(in);
    const uint64_t dst = mac_of(r + 1), src = mac_of(r + 7);
    now += r[0] >> 6;  // time passes now and then
    const bool multicast_src = r[7] & 1;
    if (port != kUplinkPort && port != 3 && src != own[port]) continue;  // port security: dropped
    if (!multicast_src && src != 0) t.learn(src, port, now);
    (void)t.lookup(dst);
  }
  for (unsigned p = 0; p < kPorts; ++p)
    if (t.lookup(own[p]) != int(p) || t.configured_port(own[p]) != int(p)) std::abort();
  unsigned per[kPorts + 1] = {}, total = 0;
  t.for_each([&](uint64_t, uint16_t port, bool cfg, uint32_t) {
    if (cfg) return;
    ++per[port == kUplinkPort ? kPorts : port];
    ++total;
  });
  for (unsigned p = 0; p < kPorts; ++p) {
    if (per[p] > 8) std::abort();
    if (p != 3 && per[p] != 0) std::abort();  // port security: nothing learned there
  }
  if (total > 64 || t.learned_entries() > 64) std::abort();
  return 0;
}
