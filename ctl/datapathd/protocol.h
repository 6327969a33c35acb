// capsule-datapathd's control protocol, for both ends: newline-delimited
// JSON over a unix stream socket, one request and one response per line, in
// order, on each connection.
//
//   {"op":"hello"}                   -> {"ok":true,"pid":P,"version":V,"started_ms":T,
//                                        "configured":B,"settings":S|null,"detail":D,
//                                        "vms":[VmNetConfig...]}  (the VMs in force)
//   {"op":"configure","settings":S}  -> {"ok":true,"changed":B,"detail":D}
//                                       same settings: nothing changes; other settings:
//                                       every VM is removed and the datapath made anew
//   {"op":"add_vm","vm":VmNetConfig} -> {"ok":true,"changed":B}  (same config: no-op)
//   {"op":"remove_vm","vm":NAME}     -> {"ok":true}
//   {"op":"pmd_tid","vm":NAME}       -> {"ok":true,"tid":TID|null}
//   {"op":"stats","vm":NAME}         -> {"ok":true,"stats":VmDatapathStats}
//   {"op":"pmd_stats_show"[,"vm":NAME]} -> {"ok":true,"text":T}  (capsule/pmd-stats-show;
//                                       without "vm": every VM)
//   {"op":"fdb_show"}                -> {"ok":true,"text":T}  (capsule/fdb-show)
//   {"op":"shutdown"}                -> {"ok":true} once every VM is removed and the
//                                       datapath stopped; then the daemon exits 0
//   anything refused                 -> {"ok":false,"error":TEXT} and nothing changed
//
// S = {"type":"capsule","dpdk_options":{...},"uplink":{...}} (the Host row's
// columns); VmNetConfig and VmDatapathStats are datapath.h's structs with
// the same field names. Times are Unix ms.
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <string>

#include "capsule/result.h"
#include "datapath.h"

namespace capsule::datapathd {

using json = nlohmann::json;

inline constexpr const char* kProgram = "capsule-datapathd";
inline constexpr const char* kVersion = CAPSULE_VERSION;
// The ops above, for messages.
inline constexpr const char* kOps =
    "hello, configure, add_vm, remove_vm, pmd_tid, stats, pmd_stats_show, fdb_show, shutdown";

// $CAPSULE_RUNDIR (default /run/capsule)/datapathd.sock, .../datapathd.pid;
// $CAPSULE_LOGDIR (default /var/log/capsule)/datapathd.log.
std::string default_socket();
std::string default_pidfile();
std::string default_log_file();

json to_json(const agent::DatapathSettings& s);
json to_json(const agent::VmNetConfig& c);
json to_json(const agent::VmDatapathStats& s);
// A malformed value is refused with what was wrong, by its path
// ("malformed VM configuration: vm.ports[0].mac must be a string").
Result<agent::DatapathSettings> settings_from_json(const json& j);
Result<agent::VmNetConfig> vm_from_json(const json& j);
Result<agent::VmDatapathStats> stats_from_json(const json& j);

json ok(json body = json::object());
json refusal(const std::string& error);

}  // namespace capsule::datapathd
