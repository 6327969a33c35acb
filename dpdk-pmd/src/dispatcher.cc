#include "dispatcher.h"

#include <pthread.h>
#include <rte_cycles.h>
#include <rte_ether.h>
#include <rte_interrupts.h>
#include <rte_lcore.h>
#include <sys/syscall.h>
#include <time.h>

#include "rx_rings.h"
#include "uplink.h"

namespace capsule::pmd::detail {
namespace {

}  // namespace

Status Dispatcher::start() {
  std::promise<Status> started;
  auto fut = started.get_future();
  thread_ = std::thread([this, &started] { run(&started); });
  Status s = fut.get();
  if (!s) thread_.join();
  return s;
}

void Dispatcher::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true);
  thread_.join();
}

void Dispatcher::flood(rte_mbuf* m) {
  Vm* targets[kMaxVms];
  unsigned n = 0;
  for (unsigned s = 0; s < core_->max_vms; ++s) {
    Vm* d = core_->slots[s].load(std::memory_order_acquire);
    if (d && d->vid.load(std::memory_order_relaxed) >= 0) targets[n++] = d;
  }
  if (n == 0) {
    rte_pktmbuf_free(m);
    return;
  }
  if (n > 1) rte_mbuf_refcnt_update(m, int16_t(n - 1));
  for (unsigned i = 0; i < n; ++i) deliver(targets[i], core_->dispatcher_qsbr_id(), &m, 1);
}

void Dispatcher::dispatch(rte_mbuf** pkts, uint16_t n) {
  // Group consecutive packets for the same VM so rings see bursts.
  Vm* cur = nullptr;
  rte_mbuf* batch[kBurst];
  unsigned nb = 0;
  uint64_t no_vm = 0;
  const uint32_t now_s = FwdTable::clock_s();
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    if (rte_pktmbuf_pkt_len(m) < sizeof(rte_ether_hdr)) {
      rte_pktmbuf_free(m);
      continue;
    }
    const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
    if (!(eth->src_addr.addr_bytes[0] & 1)) core_->fdb.learn(mac_u64(eth->src_addr), kUplinkPort, now_s);
    if (eth->dst_addr.addr_bytes[0] & 1) {
      flood(m);
      continue;
    }
    const int port = core_->fdb.lookup(mac_u64(eth->dst_addr));
    Vm* d = port >= 0 && unsigned(port) < core_->max_vms ? core_->slots[port].load(std::memory_order_acquire) : nullptr;
    if (!d) {
      ++no_vm;
      rte_pktmbuf_free(m);
      continue;
    }
    if (d != cur && nb) {
      deliver(cur, core_->dispatcher_qsbr_id(), batch, nb);
      nb = 0;
    }
    cur = d;
    batch[nb++] = m;
  }
  if (nb) deliver(cur, core_->dispatcher_qsbr_id(), batch, nb);
  bump(rx_packets, n);
  if (no_vm) bump(rx_no_vm, no_vm);
}

void Dispatcher::run(std::promise<Status>* started) {
  if (rte_thread_register() != 0) {
    started->set_value(Error{"the uplink dispatcher got no DPDK lcore", EBUSY});
    return;
  }
  pthread_setname_np(pthread_self(), "cdisp-uplink");
  if (cpu_ >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_, &set);
    if (int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set); rc != 0) {
      rte_thread_unregister();
      started->set_value(errno_error("cannot pin the uplink dispatcher to CPU " + std::to_string(cpu_), rc));
      return;
    }
  }
  const uint16_t port = core_->uplink->port();
  const uint16_t nrxq = uint16_t(core_->uplink->rx_queues());
  const unsigned qid = core_->dispatcher_qsbr_id();
  PollPolicy policy = poll_.policy;
  if (policy == PollPolicy::kInterrupt) {
    bool ok = core_->uplink->rx_interrupts();
    for (uint16_t q = 0; ok && q < nrxq; ++q)
      ok = rte_eth_dev_rx_intr_ctl_q(port, q, RTE_EPOLL_PER_THREAD, RTE_INTR_EVENT_ADD, nullptr) == 0;
    if (!ok) policy = PollPolicy::kSleep;  // no rx interrupts from this driver
  }
  interrupt_mode_.store(policy == PollPolicy::kInterrupt);
  rte_rcu_qsbr_thread_register(core_->qsbr, qid);
  rte_rcu_qsbr_thread_online(core_->qsbr, qid);
  tid_.store(pid_t(syscall(SYS_gettid)));
  started->set_value(Status::Ok());

  rte_mbuf* pkts[kBurst];
  unsigned empty = 0;
  while (!stop_.load(std::memory_order_relaxed)) {
    rte_rcu_qsbr_quiescent(core_->qsbr, qid);
    const uint64_t t0 = rte_rdtsc();
    unsigned total = 0;
    for (uint16_t q = 0; q < nrxq; ++q) {
      const uint16_t n = rte_eth_rx_burst(port, q, pkts, kBurst);
      if (n) dispatch(pkts, n);
      total += n;
    }
    if (total) {
      bump(busy_cycles, rte_rdtsc() - t0);
      bump(busy_rounds);
      empty = 0;
      continue;
    }
    if (++empty < poll_.empty_polls) continue;
    empty = 0;
    switch (policy) {
      case PollPolicy::kBusy: break;
      case PollPolicy::kYield: sched_yield(); break;
      case PollPolicy::kSleep: {
        rte_rcu_qsbr_thread_offline(core_->qsbr, qid);
        timespec ts{0, long(poll_.sleep_us) * 1000};
        nanosleep(&ts, nullptr);
        rte_rcu_qsbr_thread_online(core_->qsbr, qid);
        break;
      }
      case PollPolicy::kInterrupt: {
        for (uint16_t q = 0; q < nrxq; ++q) rte_eth_dev_rx_intr_enable(port, q);
        unsigned late = 0;  // arrived while arming
        for (uint16_t q = 0; q < nrxq; ++q) {
          const uint16_t n = rte_eth_rx_burst(port, q, pkts, kBurst);
          if (n) dispatch(pkts, n);
          late += n;
        }
        if (late == 0) {
          rte_rcu_qsbr_thread_offline(core_->qsbr, qid);
          bump(blocks);
          rte_epoll_event ev[8];
          rte_epoll_wait(RTE_EPOLL_PER_THREAD, ev, 8, 200);  // 200 ms: re-check stop_
          rte_rcu_qsbr_thread_online(core_->qsbr, qid);
        }
        for (uint16_t q = 0; q < nrxq; ++q) rte_eth_dev_rx_intr_disable(port, q);
        break;
      }
    }
  }
  if (policy == PollPolicy::kInterrupt)
    for (uint16_t q = 0; q < nrxq; ++q)
      rte_eth_dev_rx_intr_ctl_q(port, q, RTE_EPOLL_PER_THREAD, RTE_INTR_EVENT_DEL, nullptr);
  rte_rcu_qsbr_thread_offline(core_->qsbr, qid);
  rte_rcu_qsbr_thread_unregister(core_->qsbr, qid);
  rte_thread_unregister();
}

}  // namespace capsule::pmd::detail
