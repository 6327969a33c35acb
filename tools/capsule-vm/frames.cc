#include "frames.h"

#include <cstring>
#include <utility>

namespace capsule::vm {

void build_udp(rte_mbuf* m, const Addressing& a, uint32_t frame_len, const TestHeader& h) {
  if (frame_len < 60) frame_len = 60;
  char* p = rte_pktmbuf_append(m, uint16_t(frame_len));
  std::memset(p, 0, frame_len);
  auto* eth = reinterpret_cast<rte_ether_hdr*>(p);
  eth->dst_addr = a.dst;
  eth->src_addr = a.src;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  ip->version_ihl = RTE_IPV4_VHL_DEF;
  ip->total_length = rte_cpu_to_be_16(uint16_t(frame_len - sizeof(rte_ether_hdr)));
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_UDP;
  ip->src_addr = a.src_ip;
  ip->dst_addr = a.dst_ip;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  auto* udp = reinterpret_cast<rte_udp_hdr*>(ip + 1);
  udp->src_port = rte_cpu_to_be_16(kUdpPort);
  udp->dst_port = rte_cpu_to_be_16(kUdpPort);
  udp->dgram_len = rte_cpu_to_be_16(uint16_t(frame_len - sizeof(rte_ether_hdr) - sizeof(rte_ipv4_hdr)));
  const uint32_t room = frame_len - kHeaders;
  std::memcpy(udp + 1, &h, room < sizeof h ? kShortHeader : sizeof h);
}

const TestHeader* test_header(const rte_mbuf* m) {
  if (rte_pktmbuf_data_len(m) < kHeaders + kShortHeader) return nullptr;
  const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
  if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) return nullptr;
  const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(eth + 1);
  if (ip->next_proto_id != IPPROTO_UDP) return nullptr;
  const auto* h = reinterpret_cast<const TestHeader*>(reinterpret_cast<const char*>(ip + 1) + sizeof(rte_udp_hdr));
  return h->magic == kMagic ? h : nullptr;
}

int answer_in_place(rte_mbuf* m, const rte_ether_addr& mac, uint32_t ip_addr) {
  if (ip_addr == 0) return 0;
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  const uint32_t len = rte_pktmbuf_data_len(m);
  if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP) && len >= sizeof(*eth) + sizeof(rte_arp_hdr)) {
    auto* arp = reinterpret_cast<rte_arp_hdr*>(eth + 1);
    if (arp->arp_opcode != rte_cpu_to_be_16(RTE_ARP_OP_REQUEST) || arp->arp_data.arp_tip != ip_addr) return 0;
    arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
    arp->arp_data.arp_tha = arp->arp_data.arp_sha;
    arp->arp_data.arp_tip = arp->arp_data.arp_sip;
    arp->arp_data.arp_sha = mac;
    arp->arp_data.arp_sip = ip_addr;
    eth->dst_addr = eth->src_addr;
    eth->src_addr = mac;
    return 1;
  }
  if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) || len < sizeof(*eth) + sizeof(rte_ipv4_hdr) + 8) return 0;
  auto* ip = reinterpret_cast<rte_ipv4_hdr*>(eth + 1);
  if (ip->next_proto_id != IPPROTO_ICMP || ip->dst_addr != ip_addr) return 0;
  const uint32_t ihl = (ip->version_ihl & 0xf) * 4;
  auto* icmp = reinterpret_cast<rte_icmp_hdr*>(reinterpret_cast<char*>(ip) + ihl);
  if (icmp->icmp_type != RTE_IP_ICMP_ECHO_REQUEST) return 0;
  icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
  const uint32_t icmp_len = rte_be_to_cpu_16(ip->total_length) - ihl;
  icmp->icmp_cksum = 0;
  const uint16_t sum = rte_raw_cksum(icmp, icmp_len);
  icmp->icmp_cksum = uint16_t(~sum);
  const uint32_t sip = ip->src_addr;
  ip->src_addr = ip->dst_addr;
  ip->dst_addr = sip;
  ip->time_to_live = 64;
  ip->hdr_checksum = 0;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  eth->dst_addr = eth->src_addr;
  eth->src_addr = mac;
  return 2;
}

}  // namespace capsule::vm
