#include "uplink.h"

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_ring.h>

namespace capsule::pmd::detail {
namespace {

constexpr uint16_t kRxDesc = Uplink::kRxDesc;
constexpr uint16_t kTxDesc = Uplink::kTxDesc;

Status configure(uint16_t port, unsigned nrxq, unsigned ntxq, rte_mempool* pool, bool rx_intr,
                 const std::string& name) {
  rte_eth_conf conf{};
  conf.intr_conf.rxq = rx_intr ? 1 : 0;
  if (int rc = rte_eth_dev_configure(port, uint16_t(nrxq), uint16_t(ntxq), &conf); rc < 0)
    return Error{"uplink " + name + ": cannot configure " + std::to_string(nrxq) + " rx and " + std::to_string(ntxq) +
                     " tx queues (" + rte_strerror(-rc) + ")",
                 -rc};
  uint16_t nrx = kRxDesc, ntx = kTxDesc;
  rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx);
  const int socket = rte_eth_dev_socket_id(port);
  for (unsigned q = 0; q < nrxq; ++q)
    if (int rc = rte_eth_rx_queue_setup(port, uint16_t(q), nrx, socket < 0 ? SOCKET_ID_ANY : socket, nullptr, pool); rc < 0)
      return Error{"uplink " + name + ": rx queue setup failed (" + std::string(rte_strerror(-rc)) + ")", -rc};
  for (unsigned q = 0; q < ntxq; ++q)
    if (int rc = rte_eth_tx_queue_setup(port, uint16_t(q), ntx, socket < 0 ? SOCKET_ID_ANY : socket, nullptr); rc < 0)
      return Error{"uplink " + name + ": tx queue " + std::to_string(q) + " setup failed (" + rte_strerror(-rc) + ")",
                   -rc};
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Uplink>> Uplink::open(const std::string& devargs, unsigned max_vms, rte_mempool* pool,
                                             bool want_rx_interrupts) {
  const std::string name = devargs.substr(0, devargs.find(','));
  if (name.empty()) return Error{"uplink devargs '" + devargs + "' do not start with a device name", EINVAL};
  uint16_t existing;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &existing) == 0)
    return Error{"uplink " + name + " is already attached in this process", EEXIST};
  if (int rc = rte_dev_probe(devargs.c_str()); rc < 0)
    return Error{"DPDK refused uplink devargs '" + devargs + "' (" + rte_strerror(-rc) +
                     "): check the driver name (net_tap, net_null, net_ring, net_virtio_user, a PCI address) and its keys",
                 -rc};
  auto up = std::unique_ptr<Uplink>(new Uplink());
  up->devargs_ = devargs;
  up->attached_ = true;
  up->name_ = name;
  if (rte_eth_dev_get_port_by_name(name.c_str(), &up->port_) != 0) {
    // The devargs created something, but not an ethdev by that name.
    rte_eal_hotplug_remove("vdev", name.c_str());
    up->attached_ = false;
    return Error{"uplink devargs '" + devargs + "' did not create an ethernet port named " + name, ENODEV};
  }
  rte_eth_dev_info info{};
  if (int rc = rte_eth_dev_info_get(up->port_, &info); rc < 0)
    return Error{"uplink " + name + ": cannot read device info (" + std::string(rte_strerror(-rc)) + ")", -rc};
  up->ntxq_ = std::max(1u, std::min<unsigned>(max_vms, info.max_tx_queues));
  // net_tap passes one fd per queue pair over EAL's multi-process channel,
  // which carries at most 8 (more crash DPDK 22.11 at start): stay at 4.
  if (name.rfind("net_tap", 0) == 0) up->ntxq_ = std::min(up->ntxq_, 4u);
  up->shared_ = up->ntxq_ < max_vms;
  up->locks_.resize(up->ntxq_);

  // One rx queue for the dispatcher; drivers that want as many rx as tx
  // queues (net_tap) get them, and the dispatcher reads them all.
  Status st;
  bool configured = false;
  for (bool intr : {true, false}) {
    if (intr && !want_rx_interrupts) continue;
    for (unsigned nrxq : {1u, up->ntxq_}) {
      st = configure(up->port_, nrxq, up->ntxq_, pool, intr, name);
      if (st) {
        up->nrxq_ = nrxq;
        up->rx_intr_ = intr;
        configured = true;
        break;
      }
    }
    if (configured) break;
  }
  if (!st) return st.error();
  if (int rc = rte_eth_dev_start(up->port_); rc < 0)
    return Error{"uplink " + name + ": start failed (" + std::string(rte_strerror(-rc)) + ")", -rc};
  up->started_ = true;
  for (unsigned q = 0; q < up->nrxq_; ++q)
    if (up->rx_intr_ && rte_eth_dev_rx_intr_ctl_q_get_fd(up->port_, uint16_t(q)) < 0) up->rx_intr_ = false;
  rte_eth_promiscuous_enable(up->port_);  // frames for VM MACs must come in
  rte_eth_dev_set_link_up(up->port_);
  return up;
}

Uplink::~Uplink() {
  if (!attached_) return;
  rte_eth_dev_info info{};
  const bool have_info = rte_eth_dev_info_get(port_, &info) == 0;
  if (started_) rte_eth_dev_stop(port_);
  rte_eth_dev_close(port_);
  if (have_info && info.device) rte_dev_remove(info.device);
  free_net_ring_rings();
}

// net_ring ("net_ring0", no nodeaction) creates its rings ETH_RXTX<i>_<name>
// and DPDK 22.11 does not free them when the device is closed or removed.
// The next net_ring0 of this process then fails to create them (EAL logs
// "RING: Cannot reserve memory"), attaches to the old ones and reads what
// was left in them: mbufs of the pool of a datapath that is gone (the ring
// is rx and tx at once). Every port is closed by now, so nothing uses them.
void Uplink::free_net_ring_rings() {
  if (name_.rfind("net_ring", 0) != 0 || devargs_.find("nodeaction") != std::string::npos) return;
  for (unsigned i = 0; i < RTE_MAX_QUEUES_PER_PORT; ++i) {
    rte_ring* r = rte_ring_lookup(("ETH_RXTX" + std::to_string(i) + "_" + name_).c_str());
    if (!r) break;
    rte_ring_free(r);  // frames left in it belong to pools that are gone or going: not freed
  }
}

}  // namespace capsule::pmd::detail
