// The Capsule database as C++ values: what capsuled reads (a snapshot of its
// chassis' rows) and what it writes back (status, statistics, cur_cfg), and
// DbConnection, the OVS-thread object that moves them through the C shim.
//
// Only the thread that created a DbConnection may call it (OVS's IDL and
// poll loop are per thread); Snapshot and StatusUpdate are plain values that
// can cross threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "capsule/result.h"

struct capsule_db;

namespace capsule::ovs {

using StringMap = std::map<std::string, std::string>;

struct QosRow {
  std::string uuid;
  std::string type;  // egress-policer | trtcm-policer | pkt-policer
  StringMap other_config;
};

struct PortRow {
  std::string uuid;
  std::string name;
  std::string vhost_path;
  std::optional<std::string> vhost_mode;  // server | client (default client)
  std::optional<std::string> mac;
  int64_t ingress_policing_rate = 0;       // kbps, 0 = off
  int64_t ingress_policing_burst = 0;      // kb
  int64_t ingress_policing_kpkts_rate = 0; // kpps, 0 = off
  int64_t ingress_policing_kpkts_burst = 0;
  StringMap options;
  std::optional<QosRow> qos;
};

struct VmRow {
  std::string uuid;
  std::string name;
  std::string chassis;
  std::optional<bool> enabled;
  std::optional<int64_t> pid;
  std::optional<std::string> pidfile;
  std::optional<int64_t> vcpu_runtime_us, period_us, deadline_us, net_runtime_us;
  std::optional<std::string> net_budget;  // fixed | auto (absent: fixed)
  std::optional<double> net_margin;       // auto only: fraction added (0.2 = 20 %)
  std::optional<bool> reclaim;
  StringMap options;
  std::vector<PortRow> ports;
  std::string fingerprint;  // the row's configuration as text: changes when any of it does
};

// One measured cost curve of the datapath thread (capsule-ctl calibrate):
// packets per second it moves in one direction at one frame size against
// its SCHED_DEADLINE budget, and the straight line fitted to that.
struct CalibrationRow {
  std::string direction;  // from_vm | to_vm
  int64_t frame_size = 0;
  int64_t period_us = 0;
  std::map<int64_t, double> throughput;  // budget (us of period_us) -> packets/s
  double pps_per_cpu = 0;    // slope: packets/s per whole CPU of budget
  double intercept_pps = 0;
  double r_squared = 0;
  double cycles_per_packet = 0;
  std::string date;
};

struct HostRow {
  std::string uuid;
  std::string chassis;
  std::optional<std::string> datapath_type;  // capsule | ovs
  StringMap dpdk_options, uplink, other_config;
  std::optional<std::string> admission_mode;  // global | partitioned
  std::optional<double> utilization_bound;
  std::optional<std::string> capsule_cpus;
  int64_t next_cfg = 0, cur_cfg = 0;
  std::vector<CalibrationRow> calibration;
};

struct Snapshot {
  bool connected = false;
  // False while rows this chassis' rows refer to (ports, QoS, calibration)
  // have not arrived yet: a VM would look as if it had lost its ports.
  bool complete = true;
  std::string chassis;
  std::optional<HostRow> host;  // absent until the Host row exists
  std::vector<VmRow> vms;       // this chassis' VMs only
};
Result<Snapshot> parse_snapshot(const std::string& json);

struct RowStatus {
  StringMap status;
  std::map<std::string, double> statistics;  // Port statistics are written as integers
};
struct HostStatus {
  StringMap status, capabilities;
  std::map<std::string, double> statistics;
};
// Everything capsuled writes, in one transaction. Rows not named are left
// as they are; the Host row is created if missing.
struct StatusUpdate {
  std::optional<int64_t> cur_cfg;
  HostStatus host;
  std::map<std::string, RowStatus> vms;    // by row uuid
  std::map<std::string, RowStatus> ports;  // by row uuid
};
std::string to_json(const StatusUpdate& update);

// Rows of each table the conditional monitor holds for this chassis.
struct MonitoredRows {
  std::size_t vms = 0, ports = 0, qos = 0, calibrations = 0;
};

class DbConnection {
 public:
  DbConnection(const std::string& remote, const std::string& chassis);
  // Stay on a cluster's leader only (default: any member in the cluster).
  void set_leader_only(bool leader_only);
  ~DbConnection();
  DbConnection(const DbConnection&) = delete;
  DbConnection& operator=(const DbConnection&) = delete;

  // One loop turn; true when the monitored rows changed (take a snapshot).
  bool run();
  // Blocks until the IDL, unixctl, a wake() or the timeout (ms, -1: none).
  void wait_and_block(long long timeout_ms);
  bool connected() const;
  Snapshot snapshot() const;
  Status set_status(const StatusUpdate& update);
  // Status transactions committed / sent / sent again, sessions that came up.
  struct Counters {
    unsigned long long commits = 0, sent = 0, retried = 0, connections = 0;
  };
  Counters counters() const;
  bool status_pending() const;
  // Monitor updates that changed this chassis' rows (agent wake-ups).
  unsigned long long updates() const;
  MonitoredRows monitored() const;

 private:
  capsule_db* db_;
};

}  // namespace capsule::ovs
