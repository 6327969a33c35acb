// The uplink: any DPDK ethdev given by devargs, probed at run time. One rx
// queue where the driver allows (more when it wants rx = tx queues; the
// dispatcher reads them all) and up to one tx queue per VM slot; when
// the port has fewer tx queues than slots, VMs share queues under a
// spinlock.
#pragma once

#include <rte_ethdev.h>
#include <rte_spinlock.h>

#include <memory>
#include <string>
#include <vector>

#include "capsule/result.h"

namespace capsule::pmd::detail {

class Uplink {
 public:
  static constexpr uint16_t kRxDesc = 1024;  // asked for; a driver may adjust (down)
  static constexpr uint16_t kTxDesc = 1024;
  static Result<std::unique_ptr<Uplink>> open(const std::string& devargs, unsigned max_vms, rte_mempool* pool,
                                              bool want_rx_interrupts);
  ~Uplink();

  uint16_t port() const { return port_; }
  const std::string& name() const { return name_; }
  unsigned tx_queues() const { return ntxq_; }
  unsigned rx_queues() const { return nrxq_; }
  bool rx_interrupts() const { return rx_intr_; }
  uint16_t queue_for_slot(unsigned slot) const { return uint16_t(slot % ntxq_); }

  uint16_t tx(uint16_t q, rte_mbuf** pkts, uint16_t n) {
    if (!shared_) return rte_eth_tx_burst(port_, q, pkts, n);
    rte_spinlock_lock(&locks_[q].l);
    const uint16_t sent = rte_eth_tx_burst(port_, q, pkts, n);
    rte_spinlock_unlock(&locks_[q].l);
    return sent;
  }

 private:
  Uplink() = default;
  void free_net_ring_rings();
  struct alignas(64) Lock {
    rte_spinlock_t l = RTE_SPINLOCK_INITIALIZER;
  };
  uint16_t port_ = 0;
  std::string name_;
  std::string devargs_;
  unsigned ntxq_ = 1;
  unsigned nrxq_ = 1;
  bool shared_ = false;
  bool rx_intr_ = false;
  bool started_ = false;
  bool attached_ = false;
  std::vector<Lock> locks_;
};

}  // namespace capsule::pmd::detail
