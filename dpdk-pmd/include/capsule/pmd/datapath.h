// capsule's per-VM datapath: the one header the control agent (capsuled)
// needs.
//
//   auto dp = Datapath::create({.uplink_devargs = "net_tap0,iface=ctap0"});
//   VmConfig vm{.name = "vm1", .port = {"/run/capsule/vm1.sock"},
//               .mac = *MacAddr::parse("02:00:00:00:00:01")};
//   vm.qos.to_vm.bytes = BytePolicerConfig::egress_policer(1'250'000, 15'000);
//   dp.value()->add_vm(vm);                   // port + PMD thread "cpmd-vm1"
//   pid_t tid = *dp.value()->pmd_tid("vm1");  // put it in vm1's reservation
//   VmStats s = *dp.value()->stats("vm1");    // lock-free snapshot
//   dp.value()->remove_vm("vm1");
//
// Each VM gets one poll-mode thread that does all of that VM's packet work:
// it dequeues from the VM's virtio tx ring (copy out of guest memory),
// polices, and forwards (uplink tx queue of its own, or another VM's rx
// ring); and it drains its own rx ring (filled by the uplink dispatcher and
// other VMs' threads), polices and enqueues into the VM's virtio rx ring
// (copy into guest memory). Every per-byte cost of a VM's traffic is paid
// in that VM's thread.
//
// Threads: "cpmd-<vm>" per VM (name cut to 15 characters), "cdisp-uplink"
// for the uplink receive dispatcher. None is pinned unless asked: a
// SCHED_DEADLINE thread must span its root domain.
//
// Control methods are for one control thread (they serialise on a mutex);
// adding/removing a VM never stops other VMs' threads: tables are swapped
// RCU-style (rte_rcu_qsbr), nothing on the fast path takes a lock.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "capsule/pmd/eal.h"
#include "capsule/pmd/mac.h"
#include "capsule/pmd/policer.h"
#include "capsule/result.h"

namespace capsule::pmd {

// How a datapath thread waits when it has no work.
enum class PollPolicy {
  kInterrupt,  // poll while there is work; after `empty_polls` empty rounds arm
               // notifications (vhost kick eventfd, rx interrupt, ring eventfd)
               // and block in epoll. The default, and the only policy that
               // shares a core under SCHED_DEADLINE (DESIGN.md, the shared-core trap).
  kBusy,       // spin (a core of its own)
  kSleep,      // after `empty_polls` empty rounds sleep `sleep_us` (OVS pmd-maxsleep)
  kYield,      // after `empty_polls` empty rounds sched_yield() (for comparison)
};
Result<PollPolicy> parse_poll_policy(const std::string& text);  // "interrupt", "busy", ...
std::string to_string(PollPolicy p);

struct PollOptions {
  PollPolicy policy = PollPolicy::kInterrupt;
  unsigned empty_polls = 32;  // empty rounds before blocking / sleeping / yielding
  unsigned sleep_us = 100;    // kSleep only
};

struct DatapathConfig {
  EalOptions eal;                // used if the EAL is not running yet
  std::string uplink_devargs;    // "" = no uplink; e.g. "net_tap0,iface=ctap0",
                                 // "net_null0", "net_ring0", "net_virtio_user0,path=/x.sock",
                                 // a PCI address (needs eal.allow_pci)
  bool uplink_receive = true;    // false: never poll the uplink (transmit-only benchmarks)
  PollOptions dispatcher_poll;   // the uplink dispatcher thread (interrupt needs rx
                                 // interrupts from the port, else it falls back to sleep)
  int dispatcher_cpu = -1;       // -1: not pinned
  unsigned max_vms = 16;         // VM slots (also the number of uplink tx queues wanted)
  unsigned mbufs = 0;            // mbuf pool size; 0 = derived so that every VM slot's
                                 // worst case is backed (max_vms x (ring_size + uplink tx
                                 // queue + ~600)). add_vm refuses a VM the pool cannot
                                 // back: a VM that stops draining holds its quota, no more.
  unsigned ring_size = 4096;     // per-VM rx capacity (power of two). It must hold what
                                 // arrives while the VM's thread is not running: in a
                                 // reservation that is up to P - Q (e.g. 9000 frames at
                                 // 100 kpps with Q = 10 ms of P = 100 ms).
  // The forwarding table, bounded as OVS's mac-learning (a VM is untrusted):
  unsigned mac_table_size = 8192;  // learned MACs in all; beyond it the port with the
                                   // most entries loses one (OVS mac-table-size)
  unsigned mac_aging_time = 300;   // seconds a learned MAC lives unseen (OVS mac-aging-time)
  unsigned mac_vm_max = 256;       // learned MACs per VM port (VMs without port security)
};

struct VhostPortConfig {
  enum class Mode {
    kClient,  // capsule connects (and reconnects) to a socket the VM/QEMU serves,
              // like OVS dpdkvhostuserclient. The default.
    kServer,  // capsule creates the socket and the VM connects to it
  };
  std::string socket_path;
  Mode mode = Mode::kClient;
};

// Policing of one direction. Both policers may be set; a packet must pass
// the packet-rate policer first, then the byte policer.
struct DirectionQos {
  BytePolicerConfig bytes;
  PacketPolicerConfig packets;
};

// Which way is which: from_vm = traffic the VM sends (leaves its virtio tx
// ring), to_vm = traffic the VM receives. capsuled maps the Capsule
// database in OVS's switch-centric directions: a Port's QoS
// (`egress-policer`, `trtcm-policer`, `pkt-policer`) goes on to_vm (OVS
// polices it in netdev_dpdk_vhost_send), ingress policing on from_vm (OVS:
// netdev_dpdk_vhost_rxq_recv). Both are policed in the VM's own thread, so
// inside its capsule, before the frames move on: from_vm as it dequeues
// from the guest, to_vm as it takes from the datapath's ring for the VM,
// before the copy into guest memory.
//
// A frame a policer cannot pass yet waits for its tokens, in the VM's own
// virtio tx ring (from_vm: back-pressure, as behind a NIC that shapes) or in
// the datapath's ring for the VM (to_vm), up to about `max_wait_us`; the
// thread sleeps until the tokens come. So a policer passes its rate
// although the VM's thread runs in stretches (a capsule) and although a VM
// in a capsule sends in bursts of a period's worth, whatever the policer's
// burst. Traffic that really exceeds the rate is dropped, as OVS's policers
// drop it, by colour: what would wait longer than max_wait_us (or fill more
// than half of the ring) goes. 0: nothing waits, every frame is policed
// when it is taken, exactly as OVS's PMD does. The default covers a capsule
// period of up to 100 ms.
struct VmQos {
  DirectionQos from_vm;
  DirectionQos to_vm;
  uint32_t max_wait_us = 100'000;
};

struct VmConfig {
  std::string name;     // [A-Za-z0-9_.-], 1..32 characters; thread "cpmd-<name>"
  VhostPortConfig port;
  MacAddr mac;          // the VM's MAC (configured, never learned away); must be unicast
  bool port_security = true;  // forward only frames whose source is `mac` (OVN port_security);
                              // false: learn the VM's sources, up to DatapathConfig::mac_vm_max
  VmQos qos;
  PollOptions poll;
  int pin_cpu = -1;     // -1: not pinned (default); >= 0 pins the PMD thread
};

// Counters of one VM, read lock-free (each a relaxed atomic written by one
// thread). Rates come from two snapshots.
struct VmStats {
  bool connected = false;        // a virtio device is attached now
  uint64_t connects = 0;         // how many times a device attached
  int64_t last_connect_ms = 0;   // Unix ms of the last attach (vhost new_device), 0 = never
  int64_t last_disconnect_ms = 0;  // ... of the last detach (destroy_device), 0 = never
  uint64_t from_vm_packets = 0;  // dequeued from the VM and passed policing
  uint64_t from_vm_bytes = 0;
  uint64_t to_vm_packets = 0;    // enqueued into the VM's virtio ring
  uint64_t to_vm_bytes = 0;
  // Policer drops: red (over the rate; yellow passes, as in OVS) and over
  // the packet rate.
  uint64_t from_vm_drops_red = 0;
  uint64_t from_vm_drops_pps = 0;
  uint64_t from_vm_drops_port_security = 0;  // source MAC not the VM's (port security)
  uint64_t to_vm_drops_red = 0;
  uint64_t to_vm_drops_pps = 0;
  uint64_t ring_full_drops = 0;     // senders found this VM's rx ring full
  uint64_t vhost_enqueue_drops = 0; // frames that waited for room in the VM's virtio rx
                                    // ring when its device went away (a full ring is
                                    // back-pressure: frames wait, then ring_full_drops)
  uint64_t not_connected_drops = 0; // packets for the VM while no device was attached
  uint64_t uplink_tx_drops = 0;     // the uplink tx queue was full
  uint64_t busy_iterations = 0;     // rounds that moved packets
  uint64_t idle_iterations = 0;     // empty rounds
  uint64_t busy_cycles = 0;         // TSC cycles spent in busy rounds
  uint64_t blocks = 0;              // interrupt policy: times blocked in epoll
  uint64_t wakeups_by_kick = 0;     // ... woken by the VM's kick
  uint64_t wakeups_by_ring = 0;     // ... woken by the rx ring eventfd
  uint64_t wakeups_by_room = 0;     // ... woken by the VM refilling its rx ring
  uint64_t wakeups_by_policer = 0;  // ... woken when tokens came for frames waiting
                                    // for the policer (VmQos::max_wait_us)
  uint64_t sleeps = 0;              // sleep policy
  uint64_t yields = 0;              // yield policy
  double cycles_per_packet = 0;     // busy_cycles / (from_vm + to_vm packets)
};

struct UplinkStats {
  bool present = false;
  std::string name;        // ethdev name ("net_tap0")
  uint16_t port_id = 0;
  unsigned tx_queues = 0;
  bool rx_interrupts = false;  // dispatcher blocks on rx interrupts
  uint64_t rx_packets = 0;     // received by the dispatcher
  uint64_t rx_no_vm = 0;       // unicast for no VM (dropped: never flooded back)
  uint64_t dispatcher_blocks = 0;
  uint64_t dispatcher_busy_cycles = 0;  // TSC cycles of rounds that moved frames
  uint64_t dispatcher_busy_rounds = 0;  // ... and their number (rx_packets / this = burst)
};

class Datapath {
 public:
  // Starts the EAL if needed (config.eal), probes and starts the uplink and
  // its dispatcher thread. Refuses malformed devargs, unknown drivers, a
  // ring size that is not a power of two, ...
  static Result<std::unique_ptr<Datapath>> create(const DatapathConfig& config);
  ~Datapath();  // removes every VM, stops the threads, detaches the uplink
  Datapath(const Datapath&) = delete;
  Datapath& operator=(const Datapath&) = delete;

  // Registers the vhost-user port, starts the VM's PMD thread. All or
  // nothing: on error nothing of the VM remains and other VMs are untouched.
  Status add_vm(const VmConfig& vm);
  // Stops the VM's thread, unregisters its port (the VM sees the socket
  // close), forgets its MACs. Other VMs keep forwarding.
  Status remove_vm(const std::string& name);
  // Replaces a VM's policers at run time (RCU swap; buckets start full).
  Status set_qos(const std::string& name, const VmQos& qos);

  Result<pid_t> pmd_tid(const std::string& name) const;
  pid_t dispatcher_tid() const;  // 0 when there is no dispatcher
  Result<VmStats> stats(const std::string& name) const;
  UplinkStats uplink_stats() const;
  std::vector<std::string> vm_names() const;
  // Logs (capsule/log.h, rate-limited per VM) the frames each VM lost since
  // the last call, by cause, and source MACs the full forwarding table
  // refused. For a control thread, every second or so: the PMD threads only
  // count.
  void log_drops();

  // The forwarding table: (MAC, port) with port = VM name or "uplink".
  struct FdbEntry {
    MacAddr mac;
    std::string port;
    bool configured = false;  // from VmConfig::mac (not learned)
    unsigned age_s = 0;       // learned: seconds since last seen
  };
  struct FdbSummary {
    unsigned learned = 0;      // learned entries now
    uint64_t evictions = 0;    // learned entries pushed out by newer ones (caps, full table)
    uint64_t refusals = 0;     // MACs not learned for want of room
    unsigned table_size = 0, aging_s = 0, vm_max = 0;
  };
  FdbSummary fdb_summary() const;
  std::vector<FdbEntry> fdb() const;

  struct Impl;

 private:
  explicit Datapath(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace capsule::pmd
