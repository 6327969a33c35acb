#include "vhost_port.h"

#include <rte_vhost.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <chrono>
#include <map>

#include <mutex>
#include <thread>

#include "capsule/log.h"
#include "capsule/wall_clock.h"

namespace capsule::pmd::detail {
namespace {

constexpr uint16_t kGuestTxQueue = 1;  // VIRTIO_TXQ: the host dequeues here
constexpr uint16_t kGuestRxQueue = 0;  // VIRTIO_RXQ: the host enqueues here
// virtio-net feature bits (linux/virtio_net.h clashes with rte headers).
constexpr uint64_t kOffloadFeatures = (1ULL << 0) /* CSUM */ | (1ULL << 1) /* GUEST_CSUM */ |
                                      (1ULL << 7) /* GUEST_TSO4 */ | (1ULL << 8) /* GUEST_TSO6 */ |
                                      (1ULL << 11) /* HOST_TSO4 */ | (1ULL << 12) /* HOST_TSO6 */;

std::mutex g_mu;
std::map<std::string, Vm*> g_ports;  // socket path -> VM
log::RateLimit g_unknown_device_rl;  // a socket of a VM being removed

std::string who(const Vm& vm, const char* path) { return "VM " + vm.cfg.name + " (" + path + ")"; }

Vm* vm_of(int vid) {
  char path[PATH_MAX];
  if (rte_vhost_get_ifname(vid, path, sizeof path) != 0) return nullptr;
  auto it = g_ports.find(path);
  return it == g_ports.end() ? nullptr : it->second;
}

void refresh_kick_fd(Vm* vm, int vid) {
  rte_vhost_vring vr{};
  if (rte_vhost_get_vhost_vring(vid, kGuestTxQueue, &vr) == 0) vm->kick_fd.store(vr.kickfd);
  if (rte_vhost_get_vhost_vring(vid, kGuestRxQueue, &vr) == 0) vm->rx_kick_fd.store(vr.kickfd);
  vm->device_gen.fetch_add(1);
}

int on_new_device(int vid) {
  std::lock_guard lk(g_mu);
  Vm* vm = vm_of(vid);
  char path[PATH_MAX] = "";
  (void)rte_vhost_get_ifname(vid, path, sizeof path);
  if (!vm) {
    g_unknown_device_rl.write(log::Level::kWarn, "pmd", std::string("vhost device on ") + path + " for no VM: refused");
    return -1;
  }
  vm->device_log_rl.write(log::Level::kInfo, "pmd", who(*vm, path) + ": guest connected (vhost device " + std::to_string(vid) + ")");
  // The guest need not kick us when it refills its rx ring.
  rte_vhost_enable_guest_notification(vid, kGuestRxQueue, 0);
  refresh_kick_fd(vm, vid);
  vm->vid.store(vid);
  vm->connected.store(true);
  vm->connects.fetch_add(1);
  vm->last_connect_ms.store(unix_ms_now());
  vm->wake();
  return 0;
}

void on_destroy_device(int vid) {
  std::lock_guard lk(g_mu);
  Vm* vm = vm_of(vid);
  if (!vm || vm->vid.load() != vid) return;
  char path[PATH_MAX] = "";
  (void)rte_vhost_get_ifname(vid, path, sizeof path);
  vm->vid.store(-1);
  vm->connected.store(false);
  vm->last_disconnect_ms.store(unix_ms_now());
  vm->device_log_rl.write(log::Level::kInfo, "pmd", who(*vm, path) + ": guest disconnected");
  // Wait until the PMD thread cannot be inside a call with this vid: it has
  // begun a new round (and so read vid = -1), or it is blocked, or stopped.
  const uint64_t seen = vm->iteration.load();
  vm->wake();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (vm->running.load() && !vm->blocked.load() && vm->iteration.load() == seen &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  if (vm->running.load() && !vm->blocked.load() && vm->iteration.load() == seen)
    vm->device_log_rl.write(log::Level::kWarn, "pmd",
                       who(*vm, path) + ": its PMD thread did not finish a round within 5 s of the disconnect "
                                        "(starved of CPU? see its reservation); the device is released anyway");
  vm->kick_fd.store(-1);
  vm->rx_kick_fd.store(-1);
  vm->device_gen.fetch_add(1);
}

int on_vring_state_changed(int vid, uint16_t /*queue*/, int enable) {
  std::lock_guard lk(g_mu);
  Vm* vm = vm_of(vid);
  if (vm && enable) {
    refresh_kick_fd(vm, vid);
    vm->wake();
  }
  return 0;
}

const rte_vhost_device_ops kOps = {
    .new_device = on_new_device,
    .destroy_device = on_destroy_device,
    .vring_state_changed = on_vring_state_changed,
    .features_changed = nullptr,
    .new_connection = nullptr,
    .destroy_connection = nullptr,
    .guest_notified = nullptr,
    .reserved = {nullptr},
};

// A server socket left by a dead process blocks bind(): remove it if
// nobody answers on it; refuse if somebody does.
Status clear_stale_socket(const std::string& path) {
  struct stat st{};
  if (::lstat(path.c_str(), &st) != 0) return Status::Ok();
  if (!S_ISSOCK(st.st_mode)) return Error{"vhost-user socket path " + path + " exists and is not a socket", EEXIST};
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno_error("cannot check vhost-user socket " + path, errno);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path.c_str());
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa);
  ::close(fd);
  if (rc == 0) return Error{"vhost-user socket " + path + " is served by another process", EADDRINUSE};
  ::unlink(path.c_str());
  return Status::Ok();
}

}  // namespace

Status vhost_port_start(Vm* vm) {
  const auto& p = vm->cfg.port;
  const bool client = p.mode == VhostPortConfig::Mode::kClient;
  if (!client)
    if (auto s = clear_stale_socket(p.socket_path); !s) return s;
  {
    std::lock_guard lk(g_mu);
    if (g_ports.count(p.socket_path))
      return Error{"vhost-user socket " + p.socket_path + " is already a port of this datapath", EEXIST};
    g_ports[p.socket_path] = vm;
  }
  auto fail = [&](const std::string& what) -> Status {
    std::lock_guard lk(g_mu);
    g_ports.erase(p.socket_path);
    return Error{"VM '" + vm->cfg.name + "': vhost-user port " + p.socket_path + ": " + what, EINVAL};
  };
  const uint64_t flags = client ? RTE_VHOST_USER_CLIENT : 0;
  if (rte_vhost_driver_register(p.socket_path.c_str(), flags) != 0) return fail("rte_vhost refused to register it");
  // No offloads: frames are whole and checksummed, as from a plain guest.
  rte_vhost_driver_disable_features(p.socket_path.c_str(), kOffloadFeatures);
  if (rte_vhost_driver_callback_register(p.socket_path.c_str(), &kOps) != 0) {
    rte_vhost_driver_unregister(p.socket_path.c_str());
    return fail("cannot register callbacks");
  }
  if (rte_vhost_driver_start(p.socket_path.c_str()) != 0) {
    rte_vhost_driver_unregister(p.socket_path.c_str());
    return fail(client ? "cannot start the client connection" : "cannot listen (directory missing or not writable?)");
  }
  return Status::Ok();
}

void vhost_port_stop(Vm* vm) {
  const auto& path = vm->cfg.port.socket_path;
  // -1 while a callback of this socket is running: try again.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (rte_vhost_driver_unregister(path.c_str()) != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::lock_guard lk(g_mu);
  g_ports.erase(path);
}

}  // namespace capsule::pmd::detail
