// Datapath: the control side. Owns the mbuf pool, the uplink and its
// dispatcher, the VMs; publishes VMs to the fast path through atomic slots
// and retires them after an RCU grace period (rte_rcu_qsbr).
#include "capsule/pmd/datapath.h"

#include <rte_errno.h>
#include <rte_malloc.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/un.h>

#include <atomic>
#include <chrono>
#include <cctype>
#include <map>
#include <mutex>

#include "core.h"
#include "dispatcher.h"
#include "drop_report.h"
#include "pmd_thread.h"
#include "rx_rings.h"
#include "uplink.h"
#include "vhost_port.h"

namespace capsule::pmd {

using namespace detail;

Result<PollPolicy> parse_poll_policy(const std::string& t) {
  if (t == "interrupt") return PollPolicy::kInterrupt;
  if (t == "busy") return PollPolicy::kBusy;
  if (t == "sleep") return PollPolicy::kSleep;
  if (t == "yield") return PollPolicy::kYield;
  return Error{"unknown poll policy '" + t + "' (interrupt, busy, sleep or yield)", EINVAL};
}

std::string to_string(PollPolicy p) {
  switch (p) {
    case PollPolicy::kInterrupt: return "interrupt";
    case PollPolicy::kBusy: return "busy";
    case PollPolicy::kSleep: return "sleep";
    case PollPolicy::kYield: return "yield";
  }
  return "?";
}

constexpr unsigned kMempoolCache = 256;  // per lcore; DPDK flushes above 1.5 times this

struct Datapath::Impl {
  DatapathConfig cfg;
  Core core;
  std::unique_ptr<Uplink> uplink;
  std::unique_ptr<Dispatcher> dispatcher;
  mutable std::mutex mu;
  std::map<std::string, std::unique_ptr<Vm>> vms;
  unsigned generation = 0;
  static inline std::atomic<unsigned> instances{0};
  unsigned instance = 0;
  uint64_t fdb_refusals_reported = 0;  // log_drops, under mu
  log::RateLimit fdb_log_rl;

  ~Impl() {
    while (!vms.empty()) retire(vms.begin()->first);
    if (dispatcher) dispatcher->stop();
    dispatcher.reset();
    core.uplink = nullptr;
    uplink.reset();
    if (core.qsbr) rte_free(core.qsbr);
    if (core.pool) rte_mempool_free(core.pool);
  }

  // Takes a VM out of service: thread, slot, table entries, port.
  void retire(const std::string& name) {
    auto it = vms.find(name);
    if (it == vms.end()) return;
    Vm* vm = it->second.get();
    pmd_thread_stop(vm);
    core.slots[vm->slot].store(nullptr, std::memory_order_release);
    core.fdb.remove_port(uint16_t(vm->slot));
    // After this no other thread holds a pointer to vm (or its rings).
    rte_rcu_qsbr_synchronize(core.qsbr, RTE_QSBR_THRID_INVALID);
    disconnect_rings(vm);
    vhost_port_stop(vm);
    vms.erase(it);  // ~Vm drains its rings
  }

  // One single-producer ring from every sender to the new VM, and from the
  // new VM to every other VM (rx_rings.h). All or nothing.
  Status connect_rings(Vm* vm) {
    std::vector<std::pair<Vm*, unsigned>> made;
    auto add = [&](Vm* rx, unsigned sender) {
      const std::string name = "cpmd_r" + std::to_string(instance) + "_" + std::to_string(generation++);
      rte_ring* r = rte_ring_create(name.c_str(), cfg.ring_size, SOCKET_ID_ANY, RING_F_SP_ENQ | RING_F_SC_DEQ);
      if (r) rx->in[sender].store(r, std::memory_order_release), made.emplace_back(rx, sender);
      return r != nullptr;
    };
    bool ok = !core.uplink || add(vm, core.dispatcher_qsbr_id());
    for (auto it = vms.begin(); ok && it != vms.end(); ++it)
      ok = add(vm, it->second->slot) && add(it->second.get(), vm->slot);
    if (ok) return Status::Ok();
    const int err = rte_errno;
    for (auto [rx, sender] : made) rte_ring_free(rx->in[sender].exchange(nullptr));  // never published
    return Error{"VM '" + vm->cfg.name + "': cannot create its rx rings (" + rte_strerror(err) +
                     "): lower ring_size or give DPDK more memory",
                 err};
  }

  // Takes the rings from vm to the other VMs out of service (vm's thread has
  // stopped), once their readers have moved on.
  void disconnect_rings(Vm* vm) {
    std::vector<std::pair<Vm*, rte_ring*>> gone;
    for (const auto& [n, o] : vms)
      if (o.get() != vm)
        if (rte_ring* r = o->in[vm->slot].exchange(nullptr, std::memory_order_acq_rel)) gone.emplace_back(o.get(), r);
    if (gone.empty()) return;
    rte_rcu_qsbr_synchronize(core.qsbr, RTE_QSBR_THRID_INVALID);
    for (auto [o, r] : gone) drain_ring(o, r);
  }

  // Mbufs one VM can tie up whatever it does: frames waiting for it (its rx
  // rings together hold at most ring_size), frames waiting for room in its
  // virtio ring and in its thread's hands, its thread's mempool cache, and
  // its uplink tx queue. The pool backs every admitted VM's worst case, so a
  // VM that stops draining takes only its own quota (DESIGN.md "Hostile VMs").
  unsigned mbuf_quota() const {
    return cfg.ring_size + 6 * kBurst + kMempoolCache * 3 / 2 + (core.uplink ? Uplink::kTxDesc : 0u);
  }
  // Mbufs the datapath itself needs: the uplink's rx descriptors and the
  // dispatcher's burst and cache, the control thread's cache.
  unsigned mbuf_reserve() const {
    return kMempoolCache * 3 / 2 +
           (core.uplink ? core.uplink->rx_queues() * Uplink::kRxDesc + kBurst + kMempoolCache * 3 / 2 : 0u);
  }

  Status check_vm(const VmConfig& v) const {
    if (v.name.empty() || v.name.size() > 32)
      return Error{"VM name '" + v.name + "' must have 1 to 32 characters", EINVAL};
    for (char ch : v.name)
      if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-' || ch == '.'))
        return Error{"VM name '" + v.name + "' may use only letters, digits, '_', '-' and '.'", EINVAL};
    if (vms.count(v.name)) return Error{"VM '" + v.name + "' already exists", EEXIST};
    const std::string who = "VM '" + v.name + "': ";
    if (v.port.socket_path.empty()) return Error{who + "no vhost-user socket path given", EINVAL};
    if (v.port.socket_path.size() >= sizeof(sockaddr_un::sun_path))
      return Error{who + "vhost-user socket path is longer than " + std::to_string(sizeof(sockaddr_un::sun_path) - 1) +
                       " characters",
                   ENAMETOOLONG};
    for (const auto& [n, other] : vms)
      if (other->cfg.port.socket_path == v.port.socket_path)
        return Error{who + "socket " + v.port.socket_path + " is already the port of VM '" + n + "'", EEXIST};
    if (v.mac.is_zero() || v.mac.is_multicast())
      return Error{who + "MAC " + v.mac.str() + " is not a unicast address", EINVAL};
    const int owner = core.fdb.configured_port(v.mac.u64());
    if (owner >= 0) {
      std::string other = "another port";
      for (const auto& [n, o] : vms)
        if (int(o->slot) == owner) other = "VM '" + n + "'";
      return Error{who + "MAC " + v.mac.str() + " is already configured on " + other, EADDRINUSE};
    }
    if (v.poll.empty_polls == 0) return Error{who + "empty_polls must be at least 1", EINVAL};
    if (v.poll.policy == PollPolicy::kSleep && (v.poll.sleep_us == 0 || v.poll.sleep_us > 1'000'000))
      return Error{who + "sleep_us must be 1..1000000", EINVAL};
    if (v.pin_cpu >= 0) {
      cpu_set_t set;
      CPU_ZERO(&set);
      if (v.pin_cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof set, &set) != 0 || !CPU_ISSET(v.pin_cpu, &set))
        return Error{who + "CPU " + std::to_string(v.pin_cpu) + " is not one this process may run on", EINVAL};
    }
    return Status::Ok();
  }
};

Datapath::Datapath(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Datapath::~Datapath() = default;

Result<std::unique_ptr<Datapath>> Datapath::create(const DatapathConfig& config) {
  if (config.max_vms == 0 || config.max_vms > kMaxVms)
    return Error{"max_vms must be 1.." + std::to_string(kMaxVms), EINVAL};
  if (config.ring_size < 64 || (config.ring_size & (config.ring_size - 1)))
    return Error{"ring_size " + std::to_string(config.ring_size) + " must be a power of two, at least 64", EINVAL};
  if (config.mbufs != 0 && config.mbufs < 1024) return Error{"mbufs must be 0 (derived) or at least 1024", EINVAL};
  if (config.dispatcher_poll.empty_polls == 0) return Error{"dispatcher empty_polls must be at least 1", EINVAL};
  if (config.mac_table_size == 0 || config.mac_table_size > (1u << 20))
    return Error{"mac_table_size " + std::to_string(config.mac_table_size) + " must be 1..1048576", EINVAL};
  if (config.mac_vm_max == 0) return Error{"mac_vm_max must be at least 1", EINVAL};
  if (auto s = eal_init(config.eal); !s) return s.error();

  auto impl = std::make_unique<Impl>();
  impl->cfg = config;
  impl->instance = Impl::instances.fetch_add(1);
  impl->core.max_vms = config.max_vms;
  impl->core.fdb.reset({config.mac_table_size, config.mac_aging_time, config.mac_vm_max});
  const std::string pool_name = "cpmd_pool_" + std::to_string(impl->instance);
  // Derived: every slot's quota (with an uplink's tx queue if there is an
  // uplink) and the uplink's rx descriptors.
  const bool with_uplink = !config.uplink_devargs.empty();
  const unsigned mbufs =
      config.mbufs ? config.mbufs
                   : config.max_vms * (config.ring_size + 6 * kBurst + kMempoolCache * 3 / 2 + (with_uplink ? Uplink::kTxDesc : 0u)) +
                         kMempoolCache * 3 + (with_uplink ? config.max_vms * Uplink::kRxDesc + kBurst : 0u);  // rx queues <= max_vms
  impl->cfg.mbufs = mbufs;
  impl->core.pool = rte_pktmbuf_pool_create(pool_name.c_str(), mbufs, kMempoolCache, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                            SOCKET_ID_ANY);
  if (!impl->core.pool)
    return Error{"cannot create a pool of " + std::to_string(mbufs) + " mbufs (" + rte_strerror(rte_errno) +
                     "): lower DatapathConfig::mbufs (or max_vms, ring_size) or give DPDK more memory",
                 rte_errno};
  const size_t qsz = rte_rcu_qsbr_get_memsize(config.max_vms + 1);
  impl->core.qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("cpmd_qsbr", qsz, RTE_CACHE_LINE_SIZE));
  if (!impl->core.qsbr || rte_rcu_qsbr_init(impl->core.qsbr, config.max_vms + 1) != 0)
    return Error{"cannot set up RCU state", ENOMEM};
  if (!config.uplink_devargs.empty()) {
    auto up = Uplink::open(config.uplink_devargs, config.max_vms, impl->core.pool,
                           config.dispatcher_poll.policy == PollPolicy::kInterrupt && config.uplink_receive);
    if (!up) return up.error();
    impl->uplink = std::move(up.value());
    impl->core.uplink = impl->uplink.get();
    if (config.uplink_receive) {
      impl->dispatcher = std::make_unique<Dispatcher>(&impl->core, config.dispatcher_poll, config.dispatcher_cpu);
      if (auto s = impl->dispatcher->start(); !s) return s.error();
    }
  }
  return std::unique_ptr<Datapath>(new Datapath(std::move(impl)));
}

Status Datapath::add_vm(const VmConfig& v) {
  std::lock_guard lk(impl_->mu);
  auto& core = impl_->core;
  if (auto s = impl_->check_vm(v); !s) return s;
  auto pol = make_policers(v.qos, v.name);
  if (!pol) return pol.error();
  int slot = -1;
  std::vector<bool> used(core.max_vms, false);
  for (const auto& [n, o] : impl_->vms) used[o->slot] = true;
  for (unsigned s = 0; s < core.max_vms; ++s)
    if (!used[s]) {
      slot = int(s);
      break;
    }
  if (slot < 0)
    return Error{"VM '" + v.name + "': all " + std::to_string(core.max_vms) + " VM slots are in use (DatapathConfig::max_vms)",
                 ENOSPC};

  if (const uint64_t need = impl_->mbuf_reserve() + uint64_t(impl_->vms.size() + 1) * impl_->mbuf_quota();
      need > impl_->cfg.mbufs)
    return Error{"VM '" + v.name + "': the datapath's " + std::to_string(impl_->cfg.mbufs) + " mbufs cannot back " +
                     std::to_string(impl_->vms.size() + 1) + " VMs of " + std::to_string(impl_->mbuf_quota()) +
                     " each (rx ring " + std::to_string(impl_->cfg.ring_size) +
                     " + uplink tx queue + frames in flight): a VM that stops draining would take mbufs its "
                     "neighbours need; raise mbufs (" + std::to_string(need) + " needed) or lower ring_size",
                 ENOSPC};

  auto vm = std::make_unique<Vm>();
  vm->cfg = v;
  vm->slot = unsigned(slot);
  vm->txq = core.uplink ? core.uplink->queue_for_slot(vm->slot) : 0;
  vm->policers.store(pol.value().release());
  vm->ring_cap = impl_->cfg.ring_size;
  vm->drops_reported_at = std::chrono::steady_clock::now();
  // The eventfd first: nothing else to undo when it fails.
  vm->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (vm->wake_fd < 0) return errno_error("VM '" + v.name + "': eventfd", errno);
  if (auto s = impl_->connect_rings(vm.get()); !s) return s;
  if (auto s = pmd_thread_start(&core, vm.get()); !s) {
    impl_->disconnect_rings(vm.get());
    return s;
  }
  if (!core.fdb.configure(v.mac.u64(), uint16_t(slot))) {
    pmd_thread_stop(vm.get());
    impl_->disconnect_rings(vm.get());
    return Error{"VM '" + v.name + "': MAC " + v.mac.str() + " is configured elsewhere (table full?)", EADDRINUSE};
  }
  if (auto s = vhost_port_start(vm.get()); !s) {
    pmd_thread_stop(vm.get());
    impl_->disconnect_rings(vm.get());
    core.fdb.remove_port(uint16_t(slot));
    return s;
  }
  core.slots[slot].store(vm.get(), std::memory_order_release);
  impl_->vms[v.name] = std::move(vm);
  return Status::Ok();
}

Status Datapath::remove_vm(const std::string& name) {
  std::lock_guard lk(impl_->mu);
  if (!impl_->vms.count(name)) return Error{"no VM '" + name + "' in this datapath", ENOENT};
  impl_->retire(name);
  return Status::Ok();
}

Status Datapath::set_qos(const std::string& name, const VmQos& qos) {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->vms.find(name);
  if (it == impl_->vms.end()) return Error{"no VM '" + name + "' in this datapath", ENOENT};
  auto pol = make_policers(qos, name);
  if (!pol) return pol.error();
  Policers* old = it->second->policers.exchange(pol.value().release(), std::memory_order_acq_rel);
  rte_rcu_qsbr_synchronize(impl_->core.qsbr, RTE_QSBR_THRID_INVALID);
  delete old;
  it->second->cfg.qos = qos;
  // A thread asleep until the old policer's tokens come (up to a second)
  // judges its waiting frames by the new one now.
  it->second->wake();
  return Status::Ok();
}

Result<pid_t> Datapath::pmd_tid(const std::string& name) const {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->vms.find(name);
  if (it == impl_->vms.end()) return Error{"no VM '" + name + "' in this datapath", ENOENT};
  return it->second->tid.load();
}

pid_t Datapath::dispatcher_tid() const { return impl_->dispatcher ? impl_->dispatcher->tid() : 0; }

namespace {
VmStats read_stats(const Vm& vm) {
  const auto& c = vm.c;
  auto r = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  VmStats s;
  s.connected = vm.connected.load();
  s.connects = vm.connects.load();
  s.last_connect_ms = vm.last_connect_ms.load();
  s.last_disconnect_ms = vm.last_disconnect_ms.load();
  s.from_vm_packets = r(c.from_vm_packets);
  s.from_vm_bytes = r(c.from_vm_bytes);
  s.to_vm_packets = r(c.to_vm_packets);
  s.to_vm_bytes = r(c.to_vm_bytes);
  s.from_vm_drops_red = r(c.from_vm_drops_red);
  s.from_vm_drops_pps = r(c.from_vm_drops_pps);
  s.from_vm_drops_port_security = r(c.from_vm_drops_port_security);
  s.to_vm_drops_red = r(c.to_vm_drops_red);
  s.to_vm_drops_pps = r(c.to_vm_drops_pps);
  s.ring_full_drops = r(vm.ring_full_drops);
  s.vhost_enqueue_drops = r(c.vhost_enqueue_drops);
  s.not_connected_drops = r(c.not_connected_drops);
  s.uplink_tx_drops = r(c.uplink_tx_drops);
  s.busy_iterations = r(c.busy_iterations);
  s.idle_iterations = r(c.idle_iterations);
  s.busy_cycles = r(c.busy_cycles);
  s.blocks = r(c.blocks);
  s.wakeups_by_kick = r(c.wakeups_by_kick);
  s.wakeups_by_ring = r(c.wakeups_by_ring);
  s.wakeups_by_room = r(c.wakeups_by_room);
  s.wakeups_by_policer = r(c.wakeups_by_policer);
  s.sleeps = r(c.sleeps);
  s.yields = r(c.yields);
  const uint64_t pk = s.from_vm_packets + s.to_vm_packets;
  s.cycles_per_packet = pk ? double(s.busy_cycles) / double(pk) : 0;
  return s;
}
}  // namespace

Result<VmStats> Datapath::stats(const std::string& name) const {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->vms.find(name);
  if (it == impl_->vms.end()) return Error{"no VM '" + name + "' in this datapath", ENOENT};
  return read_stats(*it->second);
}

void Datapath::log_drops() {
  std::lock_guard lk(impl_->mu);
  const auto at = std::chrono::steady_clock::now();
  for (auto& [name, vm] : impl_->vms) {
    const VmStats now = read_stats(*vm);
    const auto d =
        drops_between(vm->drops_reported, now, std::chrono::duration<double>(at - vm->drops_reported_at).count());
    // Policing, or a guest not there, is what the operator set up: a debug
    // line. Any other loss is news.
    if (d.total)
      vm->drop_log_rl.write(d.only_expected ? log::Level::kDbg : log::Level::kWarn, "pmd", "VM " + name + ": " + d.text);
    vm->drops_reported = now;
    vm->drops_reported_at = at;
  }
  const uint64_t refusals = impl_->core.fdb.refusals();
  if (refusals > impl_->fdb_refusals_reported)
    impl_->fdb_log_rl.write(log::Level::kWarn, "pmd",
                            "forwarding table full: " + std::to_string(refusals - impl_->fdb_refusals_reported) +
                                " source MACs not learned (fdb-show says which ports hold the table)");
  impl_->fdb_refusals_reported = refusals;
}

UplinkStats Datapath::uplink_stats() const {
  UplinkStats u;
  if (!impl_->uplink) return u;
  u.present = true;
  u.name = impl_->uplink->name();
  u.port_id = impl_->uplink->port();
  u.tx_queues = impl_->uplink->tx_queues();
  if (impl_->dispatcher) {
    u.rx_interrupts = impl_->dispatcher->interrupt_mode();
    u.rx_packets = impl_->dispatcher->rx_packets.load();
    u.rx_no_vm = impl_->dispatcher->rx_no_vm.load();
    u.dispatcher_blocks = impl_->dispatcher->blocks.load();
    u.dispatcher_busy_cycles = impl_->dispatcher->busy_cycles.load();
    u.dispatcher_busy_rounds = impl_->dispatcher->busy_rounds.load();
  }
  return u;
}

std::vector<std::string> Datapath::vm_names() const {
  std::lock_guard lk(impl_->mu);
  std::vector<std::string> v;
  for (const auto& [n, vm] : impl_->vms) v.push_back(n);
  return v;
}

std::vector<Datapath::FdbEntry> Datapath::fdb() const {
  std::lock_guard lk(impl_->mu);
  std::map<unsigned, std::string> by_slot;
  for (const auto& [n, vm] : impl_->vms) by_slot[vm->slot] = n;
  std::vector<FdbEntry> out;
  impl_->core.fdb.for_each([&](uint64_t mac, uint16_t port, bool cfg, uint32_t age_s) {
    FdbEntry e{MacAddr::from_u64(mac), port == kUplinkPort ? "uplink" : by_slot.count(port) ? by_slot[port] : "?", cfg,
               age_s};
    out.push_back(e);
  });
  return out;
}

Datapath::FdbSummary Datapath::fdb_summary() const {
  const auto& t = impl_->core.fdb;
  return FdbSummary{t.learned_entries(), t.evictions(), t.refusals(), t.limits().table_size, t.limits().aging_s,
                    t.limits().vm_port_max};
}

}  // namespace capsule::pmd
