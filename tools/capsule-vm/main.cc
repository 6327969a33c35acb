// capsule-vm: an emulated VM for tests and experiments. A process with one
// virtio-user port (the "virtio-net device" of the guest) whose worker
// thread is named like a QEMU vCPU thread ("CPU 0/KVM"), so reservations can
// be put on it like on a real VM.
//
// By default it behaves like a guest kernel's virtio-net driver: it handles
// packets while there are some and otherwise blocks on its rx interrupt
// (the virtio-user call eventfd), so its CPU use follows its traffic.
// --busy-poll makes it spin like a DPDK application in the guest (a VNF).
//
// Modes:
//   tx       send UDP frames at --rate pps (0: flat out), --size bytes
//   count    count what arrives
//   reflect  send every frame back with the MACs swapped
//   forward  send every frame on to --dst, from our own MAC (a VM in a
//            chain: PVVP's first VM forwards to the second)
//   probe    every --interval-ms send a request to --dst; the far side (mode
//            serve) answers with --response-bytes; record completion times.
//            --concurrency N instead keeps N requests outstanding, a new one
//            as each completes (N requesters, like `ab -c N` or httperf
//            against a web server): the load the study put on a neighbour
//   serve    answer probe requests
//   compute  burn CPU on the vCPU thread, no networking
//   stall    attach, then never take a frame off its rx ring (a hung or
//            hostile guest: the host's rings towards it fill up)
// --tester makes tx mode an RFC 2544 tester on the wire: pacing starts when
// the link comes up, and a frame the far side's ring has no room for is
// lost (counted in tx_dropped), as a switch's NIC drops at a full rx ring,
// instead of the sender waiting as a guest kernel does. tx_span_us is the
// time from its first to its last frame (the rate it really offered).
// --src MAC sends tx frames from another source MAC (spoofing); --src random
// from a fresh random unicast MAC every frame (a MAC-table flood).
// With --ip it also answers ARP and ping for that address (any mode).
//
// Output: "capsule-vm: pid=P vcpu_tids=T", "capsule-vm: ready" once the
// link is up, then "counters key=value ..." at the end (and every
// --report-ms). --json prints the same as one JSON object per line.
#include <arpa/inet.h>
#include <pthread.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "capsule/number.h"
#include "frames.h"

namespace {

using namespace capsule::vm;

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1'000'000'000ull + uint64_t(ts.tv_nsec);
}

struct Options {
  std::string socket;
  bool vhost_server = true;  // virtio-user serves the socket (capsule/OVS connect as clients)
  std::string mac = "02:00:00:00:00:01";
  std::string dst = "ff:ff:ff:ff:ff:ff";
  std::string ip, dst_ip = "198.18.0.254";
  std::string mode = "count";
  double rate = 0;  // pps, 0 = flat out
  uint32_t size = 64;
  uint64_t count = 0;  // tx: stop after this many
  double duration = 0;
  bool busy_poll = false;
  bool json = false;
  unsigned report_ms = 0;
  unsigned queue_size = 1024;
  double interval_ms = 20;
  uint32_t response_bytes = 100'000;
  double deadline_ms = 0;  // probe: 0 = the interval
  std::string latency_file;  // probe: "completion_us send_ns" (CLOCK_MONOTONIC) per answered request, at the end
  double drain_s = 0;        // probe: send nothing in the last drain_s seconds of --duration
  unsigned concurrency = 0;  // probe: 0 = one request every --interval-ms; N = N outstanding
  bool hugepages = true;
  bool die_with_parent = false;
  std::string prefix;
  bool tester = false;  // tx: RFC 2544 tester (pacing from link up, no retry)
  std::string src;  // tx: source MAC of test frames ("" = --mac, "random" = a new one per frame)
};

void usage() {
  std::puts(
      "usage: capsule-vm --socket PATH [--vhost-client] [--mac MAC] [--ip A.B.C.D]\n"
      "                  [--mode tx|count|reflect|forward|probe|serve|compute] [--dst MAC] [--dst-ip A.B.C.D]\n"
      "                  [--rate PPS (0 = flat out)] [--size BYTES] [--count N] [--duration S]\n"
      "                  [--interval-ms MS] [--response-bytes N] [--deadline-ms MS]\n"
      "                  [--latency-file FILE] [--drain-s S] [--concurrency N] [--src MAC|random] [--tester]\n"
      "                  [--busy-poll] [--queue-size N] [--report-ms MS] [--json] [--no-huge]\n"
      "                  [--die-with-parent]");
}

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "capsule-vm: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    // Numbers are read whole: "--size 6o" or "--rate -1" is refused naming
    // the option, not taken as 6 or as a huge unsigned value.
    auto whole = [&](uint64_t max) -> uint64_t {
      const std::string v = val();
      if (auto n = capsule::parse_whole(v, max)) return *n;
      std::fprintf(stderr, "capsule-vm: %s takes a whole number 0..%llu, not '%s'\n", a.c_str(),
                   static_cast<unsigned long long>(max), v.c_str());
      std::exit(2);
    };
    auto real = [&]() -> double {
      const std::string v = val();
      if (auto x = capsule::parse_nonnegative(v)) return *x;
      std::fprintf(stderr, "capsule-vm: %s takes a number >= 0, not '%s'\n", a.c_str(), v.c_str());
      std::exit(2);
    };
    if (a == "--socket") o.socket = val();
    else if (a == "--vhost-client") o.vhost_server = false;
    else if (a == "--mac") o.mac = val();
    else if (a == "--dst") o.dst = val();
    else if (a == "--ip") o.ip = val();
    else if (a == "--dst-ip") o.dst_ip = val();
    else if (a == "--mode") o.mode = val();
    else if (a == "--rate") o.rate = real();
    else if (a == "--size") o.size = uint32_t(whole(UINT32_MAX));
    else if (a == "--count") o.count = whole(UINT64_MAX);
    else if (a == "--duration") o.duration = real();
    else if (a == "--busy-poll") o.busy_poll = true;
    else if (a == "--json") o.json = true;
    else if (a == "--report-ms") o.report_ms = unsigned(whole(UINT32_MAX));
    else if (a == "--queue-size") o.queue_size = unsigned(whole(UINT32_MAX));
    else if (a == "--interval-ms") o.interval_ms = real();
    else if (a == "--response-bytes") o.response_bytes = uint32_t(whole(UINT32_MAX));
    else if (a == "--deadline-ms") o.deadline_ms = real();
    else if (a == "--latency-file") o.latency_file = val();
    else if (a == "--drain-s") o.drain_s = real();
    else if (a == "--concurrency") o.concurrency = unsigned(whole(UINT32_MAX));
    else if (a == "--src") o.src = val();
    else if (a == "--tester") o.tester = true;
    else if (a == "--no-huge") o.hugepages = false;
    else if (a == "--die-with-parent") o.die_with_parent = true;
    else if (a == "--help" || a == "-h") { usage(); std::exit(0); }
    else {
      std::fprintf(stderr, "capsule-vm: unknown option %s\n", a.c_str());
      usage();
      return false;
    }
  }
  static const char* modes[] = {"tx", "count", "reflect", "forward", "probe", "serve", "compute", "stall"};
  if (std::find_if(std::begin(modes), std::end(modes), [&](const char* m) { return o.mode == m; }) == std::end(modes)) {
    std::fprintf(stderr, "capsule-vm: unknown mode %s\n", o.mode.c_str());
    return false;
  }
  if (o.mode != "compute" && o.socket.empty()) {
    std::fprintf(stderr, "capsule-vm: --socket is required (except in compute mode)\n");
    return false;
  }
  if (o.size < 60 || o.size > 1514) {
    std::fprintf(stderr, "capsule-vm: --size must be 60..1514 (frame without FCS)\n");
    return false;
  }
  return true;
}

struct Counters {
  std::atomic<uint64_t> tx_packets{0}, tx_bytes{0}, tx_dropped{0}, tx_stalls{0};
  std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, rx_to_me{0}, rx_test{0};
  // 802.1Q-tagged frames received, and the VLAN id of the last one (what a
  // switch's VLAN push or rewrite did to the frames this VM gets).
  std::atomic<uint64_t> rx_vlan{0}, rx_vlan_id{0};
  std::atomic<uint64_t> arp_replies{0}, icmp_replies{0}, reflected{0};
  std::atomic<uint64_t> wakeups{0}, polls{0};
  std::atomic<uint64_t> requests{0}, responses{0}, missed{0}, served{0};
  std::atomic<uint64_t> compute_loops{0};
  std::atomic<uint64_t> tx_span_us{0};  // --tester: first to last frame sent
};

void add(std::atomic<uint64_t>& c, uint64_t v = 1) { c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed); }

class Vm {
 public:
  explicit Vm(Options o) : o_(std::move(o)) {}
  int run();

 private:
  bool init_dpdk(const char* argv0);
  void worker();
  void handle_rx(rte_mbuf** pkts, uint16_t n);
  uint16_t send(rte_mbuf** pkts, uint16_t n, bool retry);
  unsigned tx_due(uint64_t now);
  void probe_tick(uint64_t now);
  void send_request(uint64_t now);
  void serve(const TestHeader& h, const rte_ether_addr& to, uint32_t to_ip);
  void print_counters(const char* event);
  void spoof_random_source(rte_mbuf* m);

  Options o_;
  Counters c_;
  uint16_t port_ = 0;
  rte_mempool* pool_ = nullptr;
  Addressing addr_;
  rte_ether_addr mac_{};
  uint32_t my_ip_ = 0;
  int intr_fd_ = -1;
  std::atomic<pid_t> vcpu_tid_{0};
  std::atomic<bool> done_{false};
  std::atomic<uint64_t> worker_cpu_ns_{0};  // set when the worker ends
  pthread_t worker_thread_{};
  uint64_t start_ns_ = 0;
  uint64_t tx_start_ns_ = 0;  // tx pacing starts here (--tester: at link up)
  uint64_t tx_seq_ = 0;
  bool src_random_ = false;
  uint64_t src_state_ = 0x9E3779B97F4A7C15ull;  // xorshift state for --src random
  // probe
  struct Pending {
    uint64_t send_ns = 0;
    uint32_t got = 0, total = 0;
    bool done = false;
  };
  std::map<uint64_t, Pending> pending_;
  uint64_t next_probe_ns_ = 0;
  std::vector<double> latencies_us_;
  std::vector<uint64_t> sent_ns_;  // when each answered request left (CLOCK_MONOTONIC: ftrace's "mono" clock)
  std::atomic<bool> link_up_{false};
  std::atomic<uint64_t> lat_p50_{0}, lat_p99_{0}, lat_max_{0};
};

bool Vm::init_dpdk(const char* argv0) {
  std::string cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  sched_getaffinity(0, sizeof set, &set);
  for (int i = 0; i < CPU_SETSIZE; ++i)
    if (CPU_ISSET(i, &set)) cpus += (cpus.empty() ? "" : ",") + std::to_string(i);
  std::vector<std::string> args = {argv0, "--no-pci", "--file-prefix=cvm-" + std::to_string(getpid()),
                                   "--lcores=0@(" + cpus + ")", "--no-telemetry", "--log-level=error"};
  std::ifstream fh("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
  unsigned free_pages = 0;
  fh >> free_pages;
  if (o_.hugepages && free_pages >= 64) {
    args.insert(args.end(), {"--in-memory", "--single-file-segments"});
  } else {
    args.insert(args.end(), {"--no-huge", "-m", "256", "--no-shconf"});
  }
  args.push_back("--vdev=net_virtio_user0,path=" + o_.socket + ",queues=1,queue_size=" + std::to_string(o_.queue_size) +
                 ",mac=" + o_.mac + (o_.vhost_server ? ",server=1" : ""));
  std::vector<char*> argv;
  for (auto& s : args) argv.push_back(s.data());
  if (rte_eal_init(int(argv.size()), argv.data()) < 0) {
    std::fprintf(stderr, "capsule-vm: DPDK EAL failed to start (is %s reachable?)\n", o_.socket.c_str());
    return false;
  }
  // EAL made /var/run/dpdk/cvm-<pid> and put nothing in it (no shared
  // config): remove it now so that a VM killed by its test leaves nothing.
  rmdir(rte_eal_get_runtime_dir());
  if (rte_eth_dev_get_port_by_name("net_virtio_user0", &port_) != 0) {
    std::fprintf(stderr, "capsule-vm: no virtio-user port (vhost-user socket %s)\n", o_.socket.c_str());
    return false;
  }
  pool_ = rte_pktmbuf_pool_create("cvm_pool", 8191, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  if (!pool_) {
    std::fprintf(stderr, "capsule-vm: cannot create the mbuf pool\n");
    return false;
  }
  rte_eth_conf conf{};
  conf.intr_conf.rxq = o_.busy_poll ? 0 : 1;
  if (rte_eth_dev_configure(port_, 1, 1, &conf) < 0 ||
      rte_eth_rx_queue_setup(port_, 0, uint16_t(o_.queue_size), SOCKET_ID_ANY, nullptr, pool_) < 0 ||
      rte_eth_tx_queue_setup(port_, 0, uint16_t(o_.queue_size), SOCKET_ID_ANY, nullptr) < 0 ||
      rte_eth_dev_start(port_) < 0) {
    std::fprintf(stderr, "capsule-vm: cannot configure/start the virtio-user port\n");
    return false;
  }
  if (!o_.busy_poll) {
    intr_fd_ = rte_eth_dev_rx_intr_ctl_q_get_fd(port_, 0);
    if (intr_fd_ < 0) std::fprintf(stderr, "capsule-vm: no rx interrupt on this port; sleeping between polls instead\n");
  }
  return true;
}

uint16_t Vm::send(rte_mbuf** pkts, uint16_t n, bool retry) {
  uint16_t sent = 0;
  for (int tries = 0; sent < n; ++tries) {
    sent += rte_eth_tx_burst(port_, 0, pkts + sent, uint16_t(n - sent));
    if (sent == n || !retry || tries > 20000 || g_stop.load()) break;
    if (tries == 0) add(c_.tx_stalls);
    if (!o_.busy_poll) std::this_thread::sleep_for(std::chrono::microseconds(20));
  }
  uint64_t bytes = 0;
  for (uint16_t i = 0; i < sent; ++i) bytes += rte_pktmbuf_pkt_len(pkts[i]);
  add(c_.tx_packets, sent);
  add(c_.tx_bytes, bytes);
  if (sent < n) {
    add(c_.tx_dropped, n - sent);
    rte_pktmbuf_free_bulk(pkts + sent, n - sent);
  }
  return sent;
}

void Vm::serve(const TestHeader& req, const rte_ether_addr& to, uint32_t to_ip) {
  const uint32_t frames = std::max<uint32_t>(1, (req.total + kResponseChunk - 1) / kResponseChunk);
  Addressing a = addr_;
  a.dst = to;
  a.dst_ip = to_ip;
  std::vector<rte_mbuf*> out(frames);
  if (rte_pktmbuf_alloc_bulk(pool_, out.data(), frames) != 0) {
    add(c_.tx_dropped, frames);
    return;
  }
  for (uint32_t i = 0; i < frames; ++i) {
    TestHeader h{kMagic, uint8_t(Kind::kResponse), 0, req.seq, req.send_ns, i, frames};
    build_udp(out[i], a, kHeaders + sizeof(TestHeader) + kResponseChunk, h);
  }
  for (uint32_t off = 0; off < frames; off += 32) send(out.data() + off, uint16_t(std::min<uint32_t>(32, frames - off)), true);
  add(c_.served);
}

void Vm::handle_rx(rte_mbuf** pkts, uint16_t n) {
  uint64_t bytes = 0, to_me = 0, test = 0;
  rte_mbuf* back[64];
  uint16_t nback = 0;
  for (uint16_t i = 0; i < n; ++i) {
    rte_mbuf* m = pkts[i];
    bytes += rte_pktmbuf_pkt_len(m);
    auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
    if (rte_is_same_ether_addr(&eth->dst_addr, &mac_)) ++to_me;
    if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN) &&
        rte_pktmbuf_data_len(m) >= sizeof(rte_ether_hdr) + sizeof(rte_vlan_hdr)) {
      const auto* vlan = reinterpret_cast<const rte_vlan_hdr*>(eth + 1);
      add(c_.rx_vlan);
      c_.rx_vlan_id.store(rte_be_to_cpu_16(vlan->vlan_tci) & 0xfff, std::memory_order_relaxed);
    }
    if (int r = answer_in_place(m, mac_, my_ip_); r) {
      add(r == 1 ? c_.arp_replies : c_.icmp_replies);
      back[nback++] = m;
      continue;
    }
    const TestHeader* h = test_header(m);
    if (h) ++test;
    const bool long_header = rte_pktmbuf_data_len(m) >= kHeaders + sizeof(TestHeader);
    if (h && long_header && o_.mode == "serve" && h->kind == uint8_t(Kind::kRequest)) {
      const auto* ip = reinterpret_cast<const rte_ipv4_hdr*>(eth + 1);
      TestHeader req = *h;
      serve(req, eth->src_addr, ip->src_addr);
    } else if (h && long_header && o_.mode == "probe" && h->kind == uint8_t(Kind::kResponse)) {
      auto it = pending_.find(h->seq);
      if (it != pending_.end() && !it->second.done && ++it->second.got >= h->total) {
        it->second.done = true;
        latencies_us_.push_back(double(now_ns() - it->second.send_ns) / 1000.0);
        sent_ns_.push_back(it->second.send_ns);
        add(c_.responses);
        if (o_.concurrency > 0) next_probe_ns_ = 0;  // its requester asks again at once
      }
    } else if (o_.mode == "reflect") {
      std::swap(eth->dst_addr, eth->src_addr);
      back[nback++] = m;
      add(c_.reflected);
      continue;
    } else if (o_.mode == "forward") {
      eth->dst_addr = addr_.dst;
      eth->src_addr = mac_;
      back[nback++] = m;
      add(c_.reflected);
      continue;
    }
    rte_pktmbuf_free(m);
  }
  add(c_.rx_packets, n);
  add(c_.rx_bytes, bytes);
  add(c_.rx_to_me, to_me);
  add(c_.rx_test, test);
  if (nback) send(back, nback, o_.mode == "reflect" || o_.mode == "forward");
}

// A locally administered unicast source MAC that changes every frame.
void Vm::spoof_random_source(rte_mbuf* m) {
  src_state_ ^= src_state_ << 13;
  src_state_ ^= src_state_ >> 7;
  src_state_ ^= src_state_ << 17;
  auto* eth = rte_pktmbuf_mtod(m, rte_ether_hdr*);
  for (int i = 0; i < 6; ++i) eth->src_addr.addr_bytes[i] = uint8_t(src_state_ >> (8 * i));
  eth->src_addr.addr_bytes[0] = uint8_t((eth->src_addr.addr_bytes[0] & 0xfe) | 0x02);
}

// How many tx frames are due now (rate mode) or a burst (flat out).
unsigned Vm::tx_due(uint64_t now) {
  if (o_.mode != "tx") return 0;
  if (o_.count && tx_seq_ >= o_.count) return 0;
  if (o_.tester && !tx_start_ns_) {  // the wire is not up yet: nothing is offered
    if (!link_up_.load(std::memory_order_relaxed)) return 0;
    tx_start_ns_ = now;
  }
  uint64_t due;
  if (o_.rate <= 0) {
    due = 32;
  } else {
    const uint64_t target = uint64_t(double(now - tx_start_ns_) * o_.rate / 1e9);
    // Not scheduled for a while: an open-ended sender forgets what it missed
    // (no endless burst); a sender with --count catches up, so that all of
    // its frames go out.
    if (!o_.count && target > tx_seq_ + 4096) tx_seq_ = target - 4096;
    due = target > tx_seq_ ? target - tx_seq_ : 0;
  }
  if (o_.count) due = std::min<uint64_t>(due, o_.count - tx_seq_);
  return unsigned(std::min<uint64_t>(due, 64));
}

void Vm::probe_tick(uint64_t now) {
  if (o_.mode != "probe" || now < next_probe_ns_) return;
  if (!link_up_.load(std::memory_order_relaxed)) {  // nothing could arrive yet
    next_probe_ns_ = now + 1'000'000;
    return;
  }
  // --drain-s: the last seconds of --duration send nothing, so every
  // request has that long to complete before the VM stops.
  if (o_.drain_s > 0 && o_.duration > o_.drain_s && double(now - start_ns_) / 1e9 >= o_.duration - o_.drain_s) return;
  if (o_.concurrency > 0) {
    // N requesters: a request that has not completed in 100 ms is lost (its
    // requester gives up, counted as missed) and replaced; then every free
    // requester sends. Between top-ups the worker sleeps on its rx interrupt
    // (a completion frees a requester) or 1 ms.
    unsigned outstanding = 0;
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (it->second.done) {
        it = pending_.erase(it);
      } else if (it->second.send_ns + 100'000'000ull < now) {
        add(c_.missed);
        it = pending_.erase(it);
      } else {
        ++outstanding;
        ++it;
      }
    }
    for (; outstanding < o_.concurrency; ++outstanding) send_request(now);
    next_probe_ns_ = now + 1'000'000;
    return;
  }
  next_probe_ns_ += uint64_t(o_.interval_ms * 1e6);
  if (next_probe_ns_ < now) next_probe_ns_ = now + uint64_t(o_.interval_ms * 1e6);
  send_request(now);
  // Requests older than one second are lost.
  while (!pending_.empty() && pending_.begin()->second.send_ns + 1'000'000'000ull < now) pending_.erase(pending_.begin());
}

void Vm::send_request(uint64_t now) {
  rte_mbuf* m = rte_pktmbuf_alloc(pool_);
  if (!m) return;
  const uint64_t seq = tx_seq_++;
  TestHeader h{kMagic, uint8_t(Kind::kRequest), 0, seq, now, 0, o_.response_bytes};
  build_udp(m, addr_, kHeaders + sizeof(TestHeader), h);
  pending_[seq] = Pending{now, 0, 0, false};
  add(c_.requests);
  send(&m, 1, true);
}

void Vm::worker() {
  pthread_setname_np(pthread_self(), "CPU 0/KVM");
  vcpu_tid_.store(pid_t(syscall(SYS_gettid)));
  if (o_.mode == "compute") {
    volatile double x = 1.0;
    while (!g_stop.load(std::memory_order_relaxed)) {
      for (int i = 0; i < 10000; ++i) x = x * 1.0000001 + 1e-9;
      add(c_.compute_loops);
    }
    timespec cpu{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
    worker_cpu_ns_.store(uint64_t(cpu.tv_sec) * 1'000'000'000ull + uint64_t(cpu.tv_nsec));
    done_.store(true);
    return;
  }
  if (o_.mode == "stall") {  // attached, but the rx ring is never drained
    while (!g_stop.load(std::memory_order_relaxed)) {
      timespec ts{0, 10'000'000};
      nanosleep(&ts, nullptr);
    }
    return;
  }
  rte_thread_register();
  int ep = -1;
  if (intr_fd_ >= 0) {
    ep = epoll_create1(EPOLL_CLOEXEC);
    epoll_event ev{};
    ev.events = EPOLLIN;
    epoll_ctl(ep, EPOLL_CTL_ADD, intr_fd_, &ev);
  }
  rte_mbuf* pkts[32];
  unsigned empty = 0;
  next_probe_ns_ = now_ns();
  if (!o_.tester) tx_start_ns_ = start_ns_;
  while (!g_stop.load(std::memory_order_relaxed)) {
    add(c_.polls);
    const uint16_t n = rte_eth_rx_burst(port_, 0, pkts, 32);
    if (n) handle_rx(pkts, n);
    const uint64_t now = now_ns();
    probe_tick(now);
    unsigned due = tx_due(now);
    if (due) {
      rte_mbuf* out[64];
      if (rte_pktmbuf_alloc_bulk(pool_, out, due) == 0) {
        for (unsigned i = 0; i < due; ++i) {
          TestHeader h{kMagic, uint8_t(Kind::kData), 0, tx_seq_ + i, now, 0, 0};
          build_udp(out[i], addr_, o_.size, h);
          if (src_random_) spoof_random_source(out[i]);
        }
        tx_seq_ += due;
        // A full tx ring stops the queue and the sender waits, as in a
        // guest kernel: frames are not dropped inside the VM. A tester's
        // frames are lost instead (the switch's port had no room).
        send(out, uint16_t(due), !o_.tester);
        if (o_.tester) c_.tx_span_us.store((now - tx_start_ns_) / 1000, std::memory_order_relaxed);
      }
    }
    if (o_.mode == "tx" && o_.count && tx_seq_ >= o_.count && !done_.load()) done_.store(true);
    if (n || due) {
      empty = 0;
      continue;
    }
    if (o_.busy_poll || (o_.mode == "tx" && o_.rate <= 0 && !done_.load())) continue;
    if (++empty < 16) continue;
    empty = 0;
    // Sleep until a packet arrives or the next transmission is due.
    uint64_t wait_ns = 100'000'000;
    if (o_.mode == "tx" && o_.rate > 0 && !done_.load()) {
      // Wake for batches of up to 32 frames (50 us worth at high rates), not
      // for every frame: a guest's timer does not fire every 2 us either.
      const double batch = std::clamp(o_.rate * 50e-6, 1.0, 32.0);
      const double next = (double(tx_seq_) + batch) * 1e9 / o_.rate + double(tx_start_ns_);
      wait_ns = !tx_start_ns_ ? 1'000'000  // --tester before link up
                : next > double(now) ? uint64_t(next - double(now)) : 0;
    }
    if (o_.mode == "probe") wait_ns = next_probe_ns_ > now ? std::min(wait_ns, next_probe_ns_ - now) : 0;
    if (wait_ns < 2000) continue;
    if (ep < 0) {
      timespec ts{0, long(std::min<uint64_t>(wait_ns, 50'000))};
      nanosleep(&ts, nullptr);
      continue;
    }
    rte_eth_dev_rx_intr_enable(port_, 0);
    // virtio's enable is a plain store to avail->flags; the host reads it
    // after its enqueue. Without a full fence our next read of the used ring
    // can pass that store (x86 reorders store -> load) and we sleep through
    // a frame the host did not signal.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint16_t late = rte_eth_rx_burst(port_, 0, pkts, 32);  // arrived while arming
    if (late) {
      rte_eth_dev_rx_intr_disable(port_, 0);
      handle_rx(pkts, late);
      continue;
    }
    epoll_event ev;
    timespec ts{long(wait_ns / 1'000'000'000ull), long(wait_ns % 1'000'000'000ull)};
    if (epoll_pwait2(ep, &ev, 1, &ts, nullptr) > 0) {
      uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(intr_fd_, &v, sizeof v);
      add(c_.wakeups);
    }
    rte_eth_dev_rx_intr_disable(port_, 0);
  }
  if (ep >= 0) ::close(ep);
  // probe statistics
  for (auto& [seq, p] : pending_)
    if (!p.done) add(c_.missed);
  const double deadline_us = (o_.deadline_ms > 0 ? o_.deadline_ms : o_.interval_ms) * 1000.0;
  for (double l : latencies_us_)
    if (l > deadline_us) add(c_.missed);
  if (!o_.latency_file.empty()) {
    std::ofstream out(o_.latency_file);
    // The send time lets a slow request be found in a trace (trace_clock=mono).
    for (size_t i = 0; i < latencies_us_.size(); ++i) out << uint64_t(latencies_us_[i]) << " " << sent_ns_[i] << "\n";
  }
  if (!latencies_us_.empty()) {
    auto v = latencies_us_;
    std::sort(v.begin(), v.end());
    lat_p50_.store(uint64_t(v[v.size() / 2]));
    lat_p99_.store(uint64_t(v[std::min(v.size() - 1, size_t(double(v.size()) * 0.99))]));
    lat_max_.store(uint64_t(v.back()));
  }
  rte_thread_unregister();
  timespec cpu{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
  worker_cpu_ns_.store(uint64_t(cpu.tv_sec) * 1'000'000'000ull + uint64_t(cpu.tv_nsec));
  done_.store(true);
}

void Vm::print_counters(const char* event) {
  timespec cpu{};
  clockid_t cid;
  double cpu_ms = 0;
  if (worker_cpu_ns_.load())
    cpu_ms = double(worker_cpu_ns_.load()) / 1e6;
  else if (pthread_getcpuclockid(worker_thread_, &cid) == 0 && clock_gettime(cid, &cpu) == 0)
    cpu_ms = double(cpu.tv_sec) * 1e3 + double(cpu.tv_nsec) / 1e6;
  const double elapsed_ms = double(now_ns() - start_ns_) / 1e6;
  std::vector<std::pair<const char*, double>> kv = {
      {"tx_packets", double(c_.tx_packets.load())}, {"tx_bytes", double(c_.tx_bytes.load())},
      {"tx_dropped", double(c_.tx_dropped.load())}, {"tx_stalls", double(c_.tx_stalls.load())},
      {"rx_packets", double(c_.rx_packets.load())},
      {"rx_bytes", double(c_.rx_bytes.load())},     {"rx_to_me", double(c_.rx_to_me.load())},
      {"rx_test", double(c_.rx_test.load())},       {"rx_vlan", double(c_.rx_vlan.load())},
      {"rx_vlan_id", double(c_.rx_vlan_id.load())}, {"arp_replies", double(c_.arp_replies.load())},
      {"icmp_replies", double(c_.icmp_replies.load())}, {"reflected", double(c_.reflected.load())},
      {"requests", double(c_.requests.load())},     {"responses", double(c_.responses.load())},
      {"missed", double(c_.missed.load())},         {"served", double(c_.served.load())},
      {"lat_p50_us", double(lat_p50_.load())},      {"lat_p99_us", double(lat_p99_.load())},
      {"lat_max_us", double(lat_max_.load())},      {"wakeups", double(c_.wakeups.load())},
      {"compute_loops", double(c_.compute_loops.load())}, {"cpu_ms", cpu_ms},
      {"tx_span_us", double(c_.tx_span_us.load())},
      {"elapsed_ms", elapsed_ms}};
  std::string line;
  if (o_.json) {
    line = std::string("{\"event\":\"") + event + "\"";
    for (auto& [k, v] : kv) line += std::string(",\"") + k + "\":" + std::to_string(uint64_t(std::llround(v)));
    line += "}";
  } else {
    line = event;
    for (auto& [k, v] : kv) line += std::string(" ") + k + "=" + std::to_string(uint64_t(std::llround(v)));
  }
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

int Vm::run() {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  auto m = [](const std::string& s, rte_ether_addr& out) {
    unsigned b[6];
    if (std::sscanf(s.c_str(), "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6) return false;
    for (int i = 0; i < 6; ++i) out.addr_bytes[i] = uint8_t(b[i]);
    return true;
  };
  if (!m(o_.mac, mac_) || !m(o_.dst, addr_.dst)) {
    std::fprintf(stderr, "capsule-vm: bad MAC address\n");
    return 2;
  }
  addr_.src = mac_;
  if (o_.src == "random") {
    src_random_ = true;
    src_state_ ^= uint64_t(getpid()) << 20;
  } else if (!o_.src.empty() && !m(o_.src, addr_.src)) {
    std::fprintf(stderr, "capsule-vm: bad --src MAC '%s' (a MAC or 'random')\n", o_.src.c_str());
    return 2;
  }
  if (!o_.ip.empty()) inet_pton(AF_INET, o_.ip.c_str(), &my_ip_);
  addr_.src_ip = my_ip_ ? my_ip_ : htonl(0xc6120001);  // 198.18.0.1
  inet_pton(AF_INET, o_.dst_ip.c_str(), &addr_.dst_ip);

  const bool net = o_.mode != "compute";
  // Like QEMU's socket server: a socket file left by a dead VM is replaced.
  if (net && o_.vhost_server) {
    struct stat st{};
    if (::lstat(o_.socket.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(o_.socket.c_str());
  }
  if (net && !init_dpdk("capsule-vm")) return 1;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  start_ns_ = now_ns();
  std::thread w([this] { worker(); });
  worker_thread_ = w.native_handle();
  while (!vcpu_tid_.load()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  if (o_.json)
    std::printf("{\"event\":\"start\",\"pid\":%d,\"vcpu_tids\":[%d],\"busy_poll\":%s}\n", getpid(), vcpu_tid_.load(),
                o_.busy_poll ? "true" : "false");
  else
    std::printf("capsule-vm: pid=%d vcpu_tids=%d mode=%s rx=%s\n", getpid(), vcpu_tid_.load(), o_.mode.c_str(),
                o_.busy_poll ? "busy-poll" : intr_fd_ >= 0 ? "interrupt" : "sleep");
  bool ready = !net;
  uint64_t next_report = start_ns_ + uint64_t(o_.report_ms) * 1'000'000ull;
  while (!g_stop.load()) {
    const uint64_t now = now_ns();
    if (!ready) {
      rte_eth_link link{};
      if (rte_eth_link_get_nowait(port_, &link) == 0 && link.link_status) {
        ready = true;
        link_up_.store(true);
        std::printf(o_.json ? "{\"event\":\"ready\"}\n" : "capsule-vm: ready\n");
      }
    }
    if (o_.duration > 0 && double(now - start_ns_) / 1e9 >= o_.duration) break;
    if (o_.mode == "tx" && o_.count && done_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));  // let the last frames leave
      break;
    }
    if (o_.report_ms && now >= next_report) {
      print_counters("report");
      next_report += uint64_t(o_.report_ms) * 1'000'000ull;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  g_stop.store(true);
  w.join();
  print_counters("final");
  if (net) {
    rte_eth_dev_stop(port_);
    rte_eth_dev_close(port_);
    rte_eal_cleanup();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) return 2;
  // With --die-with-parent a test or benchmark that dies cannot leave us
  // behind. SIGTERM/SIGINT kill outright until the port is up (EAL start-up
  // can wait for the vhost side for ever); after that they end the run
  // cleanly (see Vm::run).
  if (o.die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() == 1) return 1;
  }
  Vm vm(o);
  return vm.run();
}
