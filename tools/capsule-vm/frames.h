// Frames the emulated VM sends and understands: UDP test frames with a small
// capsule header, ARP and ICMP echo (so kernel tools can talk to it).
#pragma once

#include <rte_arp.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_udp.h>

#include <cstdint>

namespace capsule::vm {

inline constexpr uint32_t kMagic = 0x43415053;  // "CAPS"
inline constexpr uint16_t kUdpPort = 9;         // discard
inline constexpr uint32_t kHeaders = sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr) + sizeof(rte_udp_hdr);
inline constexpr uint32_t kResponseChunk = 1400;  // response data bytes per frame

enum class Kind : uint8_t { kData = 0, kRequest = 1, kResponse = 2 };

// Every test frame carries the short part (fits a 60-byte frame); requests
// and responses, which are larger, carry all of it.
struct __attribute__((packed)) TestHeader {
  uint32_t magic;
  uint8_t kind;
  uint8_t pad;
  uint64_t seq;
  // long part
  uint64_t send_ns;
  uint32_t index;   // response: frame index
  uint32_t total;   // request: response bytes wanted; response: frames in total
};
inline constexpr uint32_t kShortHeader = 14;

struct Addressing {
  rte_ether_addr src{}, dst{};
  uint32_t src_ip = 0, dst_ip = 0;  // network order
};

// Builds an Ethernet/IPv4/UDP frame of `frame_len` bytes (>= 60) carrying h.
void build_udp(rte_mbuf* m, const Addressing& a, uint32_t frame_len, const TestHeader& h);

// The capsule header of a frame, or nullptr.
const TestHeader* test_header(const rte_mbuf* m);

// Turns an ARP request for `ip` or an ICMP echo request to `ip` into its
// reply in place. Returns 1 for ARP, 2 for ICMP, 0 when it is neither.
int answer_in_place(rte_mbuf* m, const rte_ether_addr& mac, uint32_t ip);

}  // namespace capsule::vm
