// The per-VM poll loop. One round: take from the VM's virtio tx ring what
// its policer passes, forward it (uplink tx queue of this VM, another VM's
// ring, or flood); take from this VM's ring what its policer passes,
// enqueue it into the VM's virtio rx ring. What a policer cannot pass yet
// waits (policed_input.h). When rounds come up empty the poll policy
// decides what the thread does with the CPU (see PollPolicy).
#include "pmd_thread.h"

#include <pthread.h>
#include <rte_cycles.h>
#include <rte_ether.h>
#include <rte_lcore.h>
#include <rte_vhost.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <future>

#include "policed_input.h"
#include "port_security.h"
#include "rx_rings.h"
#include "uplink.h"

namespace capsule::pmd::detail {
namespace {

constexpr uint16_t kGuestTxQueue = 1;
constexpr uint16_t kGuestRxQueue = 0;
// A thread whose frames wait for a policer's tokens sleeps at least this
// long: the buckets fill on while frames wait (meter.h), so waking later
// costs no rate, and a wake-up per frame at high rates would cost more CPU
// than the frames.
constexpr uint64_t kMinPolicerSleepNs = 500'000;

// The VM's virtio tx ring as a policed input.
struct GuestTxInput {
  int vid;
  rte_mempool* pool;
  unsigned size;
  unsigned take(rte_mbuf** m, unsigned n) { return rte_vhost_dequeue_burst(vid, kGuestTxQueue, pool, m, uint16_t(n)); }
  unsigned backlog() { return rte_vhost_rx_queue_count(vid, kGuestTxQueue) & 0xffff; }  // bits above 16 are noise
  unsigned capacity() { return size; }
};

// What the other threads delivered to the VM (its senders' rings, see
// rx_rings.h) as a policed input.
struct DeliveredInput {
  Vm* vm;
  unsigned take(rte_mbuf** m, unsigned n) { return take_delivered(vm, m, n); }
  unsigned backlog() { return unsigned(std::max<int64_t>(0, vm->held.load(std::memory_order_relaxed))); }
  unsigned capacity() { return unsigned(vm->ring_cap); }
};

class Pmd {
 public:
  Pmd(Core* core, Vm* vm) : core_(core), vm_(vm), qid_(vm->slot) {}
  void run(std::promise<Status>& started);

 private:
  unsigned from_vm(int vid, uint64_t now);
  unsigned to_vm(int vid, uint64_t now);
  void flood(rte_mbuf* m);
  void to_vm_bucket(Vm* dst, rte_mbuf* m);
  void flush();
  void idle(int vid);
  void park(int vid);
  void watch_kick_fds();
  unsigned push_pending(int vid);
  bool pending_moved(int vid);
  void count_drops(const PolicerDrops& d, bool from_vm);
  void arm_policer_timer(uint64_t wake_tsc, uint64_t now);

  Core* core_;
  Vm* vm_;
  unsigned qid_;
  int epfd_ = -1;
  int timer_fd_ = -1;  // wakes the thread when a policer's tokens come
  bool timer_armed_ = false;
  uint64_t watched_gen_ = 0;
  unsigned guest_tx_size_ = 256;  // the VM's virtio tx ring
  // What the policers cannot pass yet, per direction.
  PolicedInput from_in_;
  PolicedInput to_in_;
  // The policers each input's wait was computed with.
  const Policers* from_judged_by_ = nullptr;
  const Policers* to_judged_by_ = nullptr;

  // Frames wait for tokens that come at wake_tsc(): nothing to take before
  // then, unless the policers were replaced (set_qos) since.
  static bool asleep_until_tokens(const PolicedInput& in, const Policers* pol, const Policers* judged_by, uint64_t now) {
    return pol == judged_by && in.waiting() && now < in.wake_tsc();
  }
  // Frames for the VM that did not fit its virtio rx ring: they wait here
  // (and new ones in our ring) instead of being dropped; only when our ring
  // is full do senders drop (ring_full_drops).
  rte_mbuf* pending_[kBurst];
  unsigned npending_ = 0;
  bool rx_kicks_on_ = false;
  unsigned empty_ = 0;
  bool guest_kicks_on_ = true;  // the library starts with guest notifications on

  rte_mbuf* up_[kBurst * 2];
  unsigned nup_ = 0;
  struct Bucket {
    Vm* dst;
    unsigned n;
    rte_mbuf* m[kBurst];
  };
  Bucket buckets_[4];
  unsigned nbuckets_ = 0;
};

// A fresh epoll set whenever the device changed: kick eventfds are closed
// and replaced on reconnects and vring resets, and their numbers get reused,
// so registrations are never patched, only rebuilt.
void Pmd::watch_kick_fds() {
  const uint64_t gen = vm_->device_gen.load();
  if (gen == watched_gen_ && epfd_ >= 0) return;
  watched_gen_ = gen;
  if (epfd_ >= 0) ::close(epfd_);
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  auto add = [&](int fd, uint32_t tag, uint32_t events) {
    if (fd < 0) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.u32 = tag;
    epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
  };
  add(vm_->wake_fd, 1, EPOLLIN);
  add(vm_->kick_fd.load(), 2, EPOLLIN | EPOLLET);  // each kick is an edge: no need to drain
  add(vm_->rx_kick_fd.load(), 3, EPOLLIN | EPOLLET);
  add(timer_fd_, 4, EPOLLIN);
}

void Pmd::arm_policer_timer(uint64_t wake_tsc, uint64_t now) {
  itimerspec its{};
  if (wake_tsc != kNever) {
    const double wait_ns = double(wake_tsc > now ? wake_tsc - now : 0) * 1e9 / double(rte_get_tsc_hz());
    const uint64_t ns = std::max<uint64_t>(kMinPolicerSleepNs, uint64_t(std::min(wait_ns, 1e9)));
    its.it_value.tv_sec = time_t(ns / 1'000'000'000ull);
    its.it_value.tv_nsec = long(ns % 1'000'000'000ull);
  } else if (!timer_armed_) {
    return;
  }
  timerfd_settime(timer_fd_, 0, &its, nullptr);
  timer_armed_ = wake_tsc != kNever;
}

void Pmd::count_drops(const PolicerDrops& d, bool from_vm) {
  auto& c = vm_->c;
  if (d.red) bump(from_vm ? c.from_vm_drops_red : c.to_vm_drops_red, d.red);
  if (d.pps) bump(from_vm ? c.from_vm_drops_pps : c.to_vm_drops_pps, d.pps);
}

void Pmd::to_vm_bucket(Vm* dst, rte_mbuf* m) {
  for (unsigned i = 0; i < nbuckets_; ++i)
    if (buckets_[i].dst == dst) {
      buckets_[i].m[buckets_[i].n++] = m;
      return;
    }
  if (nbuckets_ == std::size(buckets_)) {
    deliver(dst, qid_, &m, 1);
    return;
  }
  buckets_[nbuckets_++] = Bucket{dst, 1, {m}};
}

void Pmd::flood(rte_mbuf* m) {
  Vm* targets[kMaxVms];
  unsigned n = 0;
  for (unsigned s = 0; s < core_->max_vms; ++s) {
    if (s == vm_->slot) continue;
    Vm* d = core_->slots[s].load(std::memory_order_acquire);
    if (d && d->vid.load(std::memory_order_relaxed) >= 0) targets[n++] = d;
  }
  const bool up = core_->uplink != nullptr;
  const unsigned copies = n + (up ? 1 : 0);
  if (copies == 0) {
    rte_pktmbuf_free(m);
    return;
  }
  // Receivers only read the frame (vhost enqueue copies it): share it.
  if (copies > 1) rte_mbuf_refcnt_update(m, int16_t(copies - 1));
  for (unsigned i = 0; i < n; ++i) to_vm_bucket(targets[i], m);
  if (up) up_[nup_++] = m;
}

void Pmd::flush() {
  for (unsigned i = 0; i < nbuckets_; ++i) deliver(buckets_[i].dst, qid_, buckets_[i].m, buckets_[i].n);
  nbuckets_ = 0;
  if (nup_) {
    const uint16_t sent = core_->uplink->tx(vm_->txq, up_, uint16_t(nup_));
    if (sent < nup_) {
      rte_pktmbuf_free_bulk(up_ + sent, nup_ - sent);
      bump(vm_->c.uplink_tx_drops, nup_ - sent);
    }
    nup_ = 0;
  }
}

unsigned Pmd::from_vm(int vid, uint64_t now) {
  rte_mbuf* pkts[kBurst];
  Policers* pol = vm_->policers.load(std::memory_order_acquire);
  if (asleep_until_tokens(from_in_, pol, from_judged_by_, now)) return 0;
  from_judged_by_ = pol;
  DirectionMeter* meter = pol && pol->from_vm.enabled() ? &pol->from_vm : nullptr;
  GuestTxInput in{vid, core_->pool, guest_tx_size_};
  PolicerDrops drops;
  unsigned dropped = 0;
  const unsigned n = from_in_.pull(in, meter, pol ? pol->max_wait_us : 0, now, pkts, kBurst, drops, &dropped);
  if (dropped) count_drops(drops, true);
  if (n == 0) return dropped;
  uint64_t pk = 0, bytes = 0, dsec = 0;
  const uint32_t now_s = FwdTable::clock_s();
  for (unsigned i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    const uint32_t len = rte_pktmbuf_pkt_len(m);
    if (len < sizeof(rte_ether_hdr)) {
      rte_pktmbuf_free(m);
      continue;
    }
    const auto* eth = rte_pktmbuf_mtod(m, const rte_ether_hdr*);
    if (!source_allowed(*vm_, eth)) {
      ++dsec;
      rte_pktmbuf_free(m);
      continue;
    }
    // With port security the source is the VM's own MAC, configured in the
    // table: nothing to learn. Without it, every frame refreshes its source's
    // age (cheap when known), or a source in use would age out.
    if (!vm_->cfg.port_security && !(eth->src_addr.addr_bytes[0] & 1)) {
      const uint64_t src = mac_u64(eth->src_addr);
      if (src != 0) core_->fdb.learn(src, uint16_t(vm_->slot), now_s);
    }
    ++pk;
    bytes += len;
    if (eth->dst_addr.addr_bytes[0] & 1) {
      flood(m);
      continue;
    }
    const int port = core_->fdb.lookup(mac_u64(eth->dst_addr));
    if (port >= 0 && unsigned(port) < core_->max_vms) {
      Vm* d = port == int(vm_->slot) ? nullptr : core_->slots[port].load(std::memory_order_acquire);
      if (d)
        to_vm_bucket(d, m);
      else
        rte_pktmbuf_free(m);  // to itself, or a VM being removed
    } else if (core_->uplink) {
      up_[nup_++] = m;  // the uplink's MAC, or unknown: out to the wire
    } else {
      flood(m);
    }
  }
  flush();
  auto& c = vm_->c;
  bump(c.from_vm_packets, pk);
  bump(c.from_vm_bytes, bytes);
  if (dsec) bump(c.from_vm_drops_port_security, dsec);
  return n + dropped;
}

// Enqueues the waiting frames into the VM (copy into guest memory; the
// library calls the guest only if it asked to be interrupted). Returns how
// many went in.
unsigned Pmd::push_pending(int vid) {
  if (npending_ == 0) return 0;
  const uint16_t sent = rte_vhost_enqueue_burst(vid, kGuestRxQueue, pending_, uint16_t(npending_));
  if (sent == 0) return 0;
  uint64_t bytes = 0;
  for (unsigned i = 0; i < sent; ++i) bytes += rte_pktmbuf_pkt_len(pending_[i]);
  rte_pktmbuf_free_bulk(pending_, sent);
  npending_ -= sent;
  std::memmove(pending_, pending_ + sent, npending_ * sizeof(rte_mbuf*));
  bump(vm_->c.to_vm_packets, sent);
  bump(vm_->c.to_vm_bytes, bytes);
  return sent;
}

unsigned Pmd::to_vm(int vid, uint64_t now) {
  auto& c = vm_->c;
  if (vid < 0 && npending_) {  // the device went away with frames waiting
    rte_pktmbuf_free_bulk(pending_, npending_);
    bump(c.vhost_enqueue_drops, npending_);
    npending_ = 0;
  }
  unsigned work = 0;
  if (npending_) {
    work += push_pending(vid);
    if (npending_) return work;  // the VM has no room: take no more
  }
  if (vid < 0) {
    rte_mbuf* pkts[kBurst];
    unsigned n = to_in_.clear();
    if (n) bump(c.not_connected_drops, n);
    const unsigned taken = take_delivered(vm_, pkts, kBurst);
    if (taken) {
      rte_pktmbuf_free_bulk(pkts, taken);
      bump(c.not_connected_drops, taken);
    }
    return n + taken;
  }
  Policers* pol = vm_->policers.load(std::memory_order_acquire);
  if (asleep_until_tokens(to_in_, pol, to_judged_by_, now)) return work;
  to_judged_by_ = pol;
  DirectionMeter* meter = pol && pol->to_vm.enabled() ? &pol->to_vm : nullptr;
  DeliveredInput in{vm_};
  PolicerDrops drops;
  unsigned dropped = 0;
  npending_ = to_in_.pull(in, meter, pol ? pol->max_wait_us : 0, now, pending_, kBurst, drops, &dropped);
  if (dropped) count_drops(drops, false);
  const unsigned n = npending_;
  push_pending(vid);
  return work + n + dropped;
}

// While frames wait for room in the VM: ask the guest to kick us when it
// refills its rx ring, then try once more. True if frames moved.
bool Pmd::pending_moved(int vid) {
  if (npending_ == 0 || vid < 0) return false;
  if (!rx_kicks_on_) {
    rte_vhost_enable_guest_notification(vid, kGuestRxQueue, 1);
    rx_kicks_on_ = true;
  }
  return push_pending(vid) > 0;
}

// Arm notifications, check once more, block. A blocked thread is offline
// for RCU and does not touch the device.
//
// An input whose frames wait for the policer's tokens is not work until the
// tokens come: the thread sleeps on a timer for it, the guest is not asked
// to kick (what it adds only waits too) and senders into our ring need not
// wake us.
void Pmd::park(int vid) {
  const bool from_waits = vid >= 0 && from_in_.waiting();
  const bool to_waits = npending_ == 0 && to_in_.waiting();
  if (vid >= 0 && !guest_kicks_on_ && !from_waits) {
    rte_vhost_enable_guest_notification(vid, kGuestTxQueue, 1);
    guest_kicks_on_ = true;
  }
  vm_->parked.store(!to_waits, std::memory_order_seq_cst);
  const uint64_t now = rte_rdtsc();
  const uint64_t wake = std::min(from_waits ? from_in_.wake_tsc() : kNever, to_waits ? to_in_.wake_tsc() : kNever);
  const bool work = vm_->stop.load() || wake <= now || (npending_ == 0 && !to_waits && has_delivered(*vm_)) ||
                    pending_moved(vid) ||
                    (vid >= 0 && !from_waits && rte_vhost_rx_queue_count(vid, kGuestTxQueue) > 0) ||
                    vm_->vid.load() != vid || vm_->device_gen.load() != watched_gen_;
  if (!work) {
    arm_policer_timer(wake, now);
    rte_rcu_qsbr_thread_offline(core_->qsbr, qid_);
    vm_->blocked.store(true);
    bump(vm_->c.blocks);
    epoll_event ev[4];
    const int n = epoll_wait(epfd_, ev, 4, 1000);
    vm_->blocked.store(false);
    rte_rcu_qsbr_thread_online(core_->qsbr, qid_);
    for (int i = 0; i < n; ++i) {
      if (ev[i].data.u32 == 1) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(vm_->wake_fd, &v, sizeof v);
        bump(vm_->c.wakeups_by_ring);
      } else if (ev[i].data.u32 == 2) {
        bump(vm_->c.wakeups_by_kick);
      } else if (ev[i].data.u32 == 4) {
        uint64_t v;
        [[maybe_unused]] ssize_t r = ::read(timer_fd_, &v, sizeof v);
        timer_armed_ = false;
        bump(vm_->c.wakeups_by_policer);
      } else {
        bump(vm_->c.wakeups_by_room);
      }
    }
  }
  vm_->wake_pending.store(false);
  vm_->parked.store(false, std::memory_order_relaxed);
}

void Pmd::idle(int vid) {
  const auto& po = vm_->cfg.poll;
  // Frames wait for a policer's tokens: sleep until they come (park()'s
  // timer), whatever the policy; polling, yielding or napping meanwhile
  // would burn the capsule's budget on nothing (DESIGN.md, shared-core trap).
  if (po.policy != PollPolicy::kBusy && (from_in_.waiting() || (npending_ == 0 && to_in_.waiting()))) {
    empty_ = 0;
    park(vid);
    return;
  }
  if (++empty_ < po.empty_polls) return;
  empty_ = 0;
  switch (po.policy) {
    case PollPolicy::kBusy: break;
    case PollPolicy::kYield:
      rte_rcu_qsbr_quiescent(core_->qsbr, qid_);
      sched_yield();
      bump(vm_->c.yields);
      break;
    case PollPolicy::kSleep: {
      rte_rcu_qsbr_thread_offline(core_->qsbr, qid_);
      timespec ts{0, long(po.sleep_us) * 1000};
      nanosleep(&ts, nullptr);
      rte_rcu_qsbr_thread_online(core_->qsbr, qid_);
      bump(vm_->c.sleeps);
      break;
    }
    case PollPolicy::kInterrupt: park(vid); break;
  }
}

void Pmd::run(std::promise<Status>& started) {
  if (rte_thread_register() != 0) {
    started.set_value(Error{"VM '" + vm_->cfg.name + "': DPDK has no free lcore for its PMD thread", EBUSY});
    return;
  }
  const std::string tname = ("cpmd-" + vm_->cfg.name).substr(0, 15);
  pthread_setname_np(pthread_self(), tname.c_str());
  if (vm_->cfg.pin_cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(vm_->cfg.pin_cpu, &set);
    if (int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set); rc != 0) {
      rte_thread_unregister();
      started.set_value(errno_error("VM '" + vm_->cfg.name + "': cannot pin its PMD thread to CPU " +
                                        std::to_string(vm_->cfg.pin_cpu),
                                    rc));
      return;
    }
  }
  timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (timer_fd_ < 0) {
    const int err = errno;
    rte_thread_unregister();
    started.set_value(errno_error("VM '" + vm_->cfg.name + "': cannot create its PMD thread's policer timer", err));
    return;
  }
  watch_kick_fds();
  rte_rcu_qsbr_thread_register(core_->qsbr, qid_);
  rte_rcu_qsbr_thread_online(core_->qsbr, qid_);
  vm_->tid.store(pid_t(syscall(SYS_gettid)));
  vm_->running.store(true);
  started.set_value(Status::Ok());

  auto& c = vm_->c;
  int last_vid = -1;
  while (!vm_->stop.load(std::memory_order_relaxed)) {
    vm_->iteration.store(vm_->iteration.load(std::memory_order_relaxed) + 1, std::memory_order_seq_cst);
    const int vid = vm_->vid.load(std::memory_order_seq_cst);
    if (vid != last_vid) {
      last_vid = vid;
      guest_kicks_on_ = true;  // a new device starts with notifications on
      rx_kicks_on_ = false;    // ... and we switched them off on its rx ring
      if (unsigned lost = from_in_.clear()) bump(c.not_connected_drops, lost);  // of the device that went away
      rte_vhost_vring vr{};
      if (vid >= 0 && rte_vhost_get_vhost_vring(vid, kGuestTxQueue, &vr) == 0 && vr.size) guest_tx_size_ = vr.size;
    }
    watch_kick_fds();
    rte_rcu_qsbr_quiescent(core_->qsbr, qid_);
    const uint64_t t0 = rte_rdtsc();
    unsigned n = 0;
    if (vid >= 0) {
      // While we poll, the guest need not kick us (each kick is a syscall in the guest).
      if (guest_kicks_on_) {
        rte_vhost_enable_guest_notification(vid, kGuestTxQueue, 0);
        guest_kicks_on_ = false;
      }
      if (rx_kicks_on_ && npending_ == 0) {
        rte_vhost_enable_guest_notification(vid, kGuestRxQueue, 0);
        rx_kicks_on_ = false;
      }
      n += from_vm(vid, t0);
    }
    n += to_vm(vid, t0);
    if (n) {
      empty_ = 0;
      bump(c.busy_iterations);
      bump(c.busy_cycles, rte_rdtsc() - t0);
    } else {
      bump(c.idle_iterations);
      idle(vid);
    }
  }
  if (npending_) {
    rte_pktmbuf_free_bulk(pending_, npending_);
    npending_ = 0;
  }
  from_in_.clear();
  to_in_.clear();
  vm_->running.store(false);
  rte_rcu_qsbr_thread_offline(core_->qsbr, qid_);
  rte_rcu_qsbr_thread_unregister(core_->qsbr, qid_);
  ::close(epfd_);
  ::close(timer_fd_);
  rte_thread_unregister();
}

}  // namespace

Status pmd_thread_start(Core* core, Vm* vm) {
  std::promise<Status> started;
  auto fut = started.get_future();
  vm->thread = std::thread([core, vm, &started] {
    Pmd pmd(core, vm);
    pmd.run(started);
  });
  Status s = fut.get();
  if (!s) vm->thread.join();
  return s;
}

void pmd_thread_stop(Vm* vm) {
  if (!vm->thread.joinable()) return;
  vm->stop.store(true);
  vm->wake_pending.store(false);
  vm->wake();
  vm->thread.join();
}

}  // namespace capsule::pmd::detail
