/* The narrow C interface between capsule's C++ and Open vSwitch's internal
 * C library (libopenvswitch). Nothing here includes an OVS header, so C++
 * can include it; shim.c, compiled as C with OVS's include paths, is the only
 * file that sees OVS's headers.
 *
 * Threading: everything below except capsule_ovs_log(), capsule_ovs_wake()
 * and the daemon set-up belongs to one thread, the "OVS thread" (OVS's poll
 * loop is per thread and the IDL is not thread-safe).
 *
 * The Capsule database crosses this boundary as JSON text (a snapshot of the
 * rows this chassis cares about, and the status the agent writes back), so the
 * C++ side never touches IDL structures. See ovs-ext/src/db.cc for the exact
 * shapes. */
#ifndef CAPSULE_OVS_SHIM_H
#define CAPSULE_OVS_SHIM_H 1

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Process set-up (main thread, before any other thread starts) ---- */

void capsule_ovs_init(const char *argv0);
/* --verbose=SPEC (vlog syntax, e.g. "capsuled:file:dbg"); returns an error
 * message to free() or NULL. */
char *capsule_ovs_set_verbosity(const char *spec);
/* --log-file[=PATH]: NULL selects OVS's default <logdir>/<program>.log. */
char *capsule_ovs_set_log_file(const char *path);
void capsule_ovs_set_pidfile(const char *path);  /* NULL: <rundir>/<program>.pid */
void capsule_ovs_set_detach(void);
void capsule_ovs_set_no_chdir(void);
/* OVS's daemonize_start()/daemonize_complete(): with --detach the parent
 * exits once the child calls complete. Call start before creating threads. */
void capsule_ovs_daemonize_start(void);
void capsule_ovs_daemonize_complete(void);
const char *capsule_ovs_rundir(void);
/* Key, certificate and CA certificate for ssl: remotes (OVS's
 * --private-key, --certificate, --ca-cert); NULL leaves one unset. */
void capsule_ovs_set_ssl(const char *private_key, const char *certificate, const char *ca_cert);

/* ---- Logging (any thread) ---- */

enum capsule_ovs_log_level {
    CAPSULE_LOG_ERR, CAPSULE_LOG_WARN, CAPSULE_LOG_INFO, CAPSULE_LOG_DBG
};
/* Logs through vlog module "capsuled". */
void capsule_ovs_log(enum capsule_ovs_log_level, const char *message);

/* ---- unixctl (OVS thread) ---- */

struct capsule_unixctl_conn;  /* one request; reply exactly once, in the callback */
typedef void capsule_unixctl_fn(struct capsule_unixctl_conn *, int argc,
                                const char *argv[], void *aux);
/* Creates the server (path NULL: <rundir>/<program>.<pid>.ctl; a relative
 * path is taken under the rundir, like OVS daemons). Registers OVS's own
 * commands (help, version, vlog/...). 0 or an errno value. */
int capsule_unixctl_create(const char *path);
const char *capsule_unixctl_path(void);
void capsule_unixctl_register(const char *name, const char *usage, int min_args,
                              int max_args, capsule_unixctl_fn *, void *aux);
void capsule_unixctl_reply(struct capsule_unixctl_conn *, const char *body);
void capsule_unixctl_reply_error(struct capsule_unixctl_conn *, const char *error);
void capsule_unixctl_destroy(void);

/* ---- The Capsule database (OVS thread) ---- */

struct capsule_db;
/* Connects to `remote` (an OVSDB remote such as unix:/run/capsule/db.sock)
 * and monitors the Host row of `chassis`, the VM rows whose chassis column
 * is `chassis`, and only the Port, QoS and Calibration rows those refer to
 * (conditional monitoring by _uuid): other hosts' rows never arrive, and a
 * change to them never wakes this chassis' agent. */
struct capsule_db *capsule_db_create(const char *remote, const char *chassis);
/* A clustered database: stay on the leader only (true), or on any member
 * connected to its cluster (false, the default: as ovn-controller does,
 * writes are forwarded to the leader by the member). Call before the first
 * capsule_db_run(). */
void capsule_db_set_leader_only(struct capsule_db *, bool leader_only);
void capsule_db_destroy(struct capsule_db *);

/* One turn of the OVS thread's loop: runs the IDL, the unixctl server and any
 * pending status transaction. Returns true when the monitored rows changed
 * since the previous call (take a new snapshot). */
bool capsule_db_run(struct capsule_db *);
bool capsule_db_connected(const struct capsule_db *);
/* Registers every wake-up the loop needs (IDL, unixctl, capsule_ovs_wake,
 * timeouts) and blocks until one fires. */
void capsule_db_wait_and_block(struct capsule_db *, long long timeout_ms);

/* Monitor updates that changed this chassis' rows so far (each one is a
 * wake-up of the agent), and how many rows of each table are monitored. */
unsigned long long capsule_db_updates(const struct capsule_db *);
void capsule_db_monitored(const struct capsule_db *, size_t *vms, size_t *ports, size_t *qos,
                          size_t *calibrations);

/* JSON text of the monitored rows (free() it):
 *   {"connected": bool, "complete": bool, "host": {...} | null, "vms": [...]}
 * "complete" is false while rows that this chassis' rows refer to are still
 * on their way (the monitor condition follows the references). Each row's
 * columns are plain JSON values (see db.cc). */
char *capsule_db_snapshot(const struct capsule_db *);

/* Replaces the status to be written (JSON text, see db.cc): the newest one
 * wins; it is written in one transaction as soon as none is in flight, and
 * written again after a reconnect. Creates this chassis' Host row if it does
 * not exist. Returns an error message to free() if the JSON is malformed. */
char *capsule_db_set_status(struct capsule_db *, const char *json);
/* What the session did so far, to see what an agent costs the cluster
 * (capsule/db-show): status transactions committed, sent to a server, those that came
 * back to be sent again (connection lost, no leader), and connections made
 * to a member (the first and every reconnection, also those the member
 * turns away because it is not in its cluster). */
struct capsule_db_counters {
    unsigned long long commits, sent, retried, connections;
};
struct capsule_db_counters capsule_db_get_counters(const struct capsule_db *);
/* True while a status is queued or in flight. */
bool capsule_db_status_pending(const struct capsule_db *);

/* Wakes the OVS thread's poll loop (any thread). */
void capsule_ovs_wake(void);

#ifdef __cplusplus
}
#endif

#endif /* CAPSULE_OVS_SHIM_H */
