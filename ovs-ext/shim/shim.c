/* The C shim over libopenvswitch (see include/capsule/ovs/shim.h). The only
 * translation unit of capsule's agent that includes OVS's internal headers. */

#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "capsule/ovs/shim.h"

#include "capsule-idl.h"
#include "cluster-session.h"
#include "daemon.h"
#include "dirs.h"
#include "latch.h"
#include "openvswitch/dynamic-string.h"
#include "openvswitch/json.h"
#include "openvswitch/poll-loop.h"
#include "openvswitch/vlog.h"
#include "ovsdb-idl.h"
#include "ovsdb-idl-provider.h"
#include "random.h"
#include "smap.h"
#include "stream-ssl.h"
#include "sset.h"
#include "timeval.h"
#include "unixctl.h"
#include "util.h"
#include "uuid.h"

VLOG_DEFINE_THIS_MODULE(capsuled);

/* ---- Process set-up ---------------------------------------------------- */

static struct latch wake_latch;
static bool wake_latch_ready;

void
capsule_ovs_init(const char *argv0)
{
    /* capsule keeps its sockets, pidfiles and logs apart from OVS's: the
     * directories follow $CAPSULE_RUNDIR / $CAPSULE_LOGDIR unless OVS's own
     * variables are set explicitly. */
    const char *rundir = getenv("CAPSULE_RUNDIR");
    const char *logdir = getenv("CAPSULE_LOGDIR");
    setenv("OVS_RUNDIR", rundir && rundir[0] ? rundir : "/run/capsule", 0);
    setenv("OVS_LOGDIR", logdir && logdir[0] ? logdir : "/var/log/capsule", 0);
    set_program_name(argv0);
    vlog_init();
    latch_init(&wake_latch);
    wake_latch_ready = true;
}

char *
capsule_ovs_set_verbosity(const char *spec)
{
    if (!spec || !spec[0]) {
        vlog_set_levels(NULL, VLF_ANY_DESTINATION, VLL_DBG);
        return NULL;
    }
    return vlog_set_levels_from_string(spec);
}

char *
capsule_ovs_set_log_file(const char *path)
{
    int error = vlog_set_log_file(path);
    return error ? xasprintf("cannot open log file %s: %s", path ? path : "(default)",
                             ovs_strerror(error))
                 : NULL;
}

void capsule_ovs_set_pidfile(const char *path) { set_pidfile(path); }
void capsule_ovs_set_detach(void) { set_detach(); }
void capsule_ovs_set_no_chdir(void) { set_no_chdir(); }
void capsule_ovs_daemonize_start(void) { daemonize_start(false); }
void capsule_ovs_daemonize_complete(void) { daemonize_complete(); }
const char *capsule_ovs_rundir(void) { return ovs_rundir(); }

void
capsule_ovs_set_ssl(const char *private_key, const char *certificate, const char *ca_cert)
{
    if (private_key && certificate) {
        stream_ssl_set_key_and_cert(private_key, certificate);
    }
    if (ca_cert) {
        stream_ssl_set_ca_cert_file(ca_cert, false);
    }
}

void
capsule_ovs_wake(void)
{
    if (wake_latch_ready) {
        latch_set(&wake_latch);
    }
}

/* ---- Logging ----------------------------------------------------------- */

void
capsule_ovs_log(enum capsule_ovs_log_level level, const char *message)
{
    switch (level) {
    case CAPSULE_LOG_ERR:
        VLOG_ERR("%s", message);
        break;
    case CAPSULE_LOG_WARN:
        VLOG_WARN("%s", message);
        break;
    case CAPSULE_LOG_INFO:
        VLOG_INFO("%s", message);
        break;
    case CAPSULE_LOG_DBG:
    default:
        VLOG_DBG("%s", message);
        break;
    }
}

/* ---- unixctl ----------------------------------------------------------- */

static struct unixctl_server *unixctl;

struct unixctl_trampoline {
    capsule_unixctl_fn *fn;
    void *aux;
};

static void
unixctl_bounce(struct unixctl_conn *conn, int argc, const char *argv[], void *aux_)
{
    struct unixctl_trampoline *t = aux_;
    t->fn((struct capsule_unixctl_conn *) conn, argc, argv, t->aux);
}

int
capsule_unixctl_create(const char *path)
{
    return unixctl_server_create(path, &unixctl);
}

const char *
capsule_unixctl_path(void)
{
    return unixctl ? unixctl_server_get_path(unixctl) : NULL;
}

void
capsule_unixctl_register(const char *name, const char *usage, int min_args, int max_args,
                         capsule_unixctl_fn *fn, void *aux)
{
    struct unixctl_trampoline *t = xmalloc(sizeof *t);  /* lives as long as the command */
    t->fn = fn;
    t->aux = aux;
    unixctl_command_register(name, usage, min_args, max_args, unixctl_bounce, t);
}

void
capsule_unixctl_reply(struct capsule_unixctl_conn *conn, const char *body)
{
    unixctl_command_reply((struct unixctl_conn *) conn, body);
}

void
capsule_unixctl_reply_error(struct capsule_unixctl_conn *conn, const char *error)
{
    unixctl_command_reply_error((struct unixctl_conn *) conn, error);
}

void
capsule_unixctl_destroy(void)
{
    unixctl_server_destroy(unixctl);
    unixctl = NULL;
}

/* ---- The Capsule database ---------------------------------------------- */

/* Backoff of a status transaction that must be sent again (see
 * finish_status_txn()). */
#define STATUS_RETRY_MIN_MS 100
#define STATUS_RETRY_MAX_MS 2000

struct capsule_db {
    struct ovsdb_idl *idl;
    char *chassis;
    unsigned int seqno;
    struct json *pending;          /* status to write next, or NULL */
    struct ovsdb_idl_txn *txn;     /* status transaction in flight */
    struct json *inflight;         /* what txn writes */
    long long int retry_at;        /* no status transaction before this */
    int backoff_ms;                /* after a refusal, doubling; 0 after a commit */
    unsigned long long commits;    /* status transactions committed */
    unsigned long long sent;       /* status transactions sent to a server */
    unsigned long long retried;    /* ...that came back to be sent again */
    unsigned long long connections;  /* connections made to a member */
    bool was_connected;

    /* Port, QoS and Calibration rows have no chassis column: they are
     * monitored by _uuid, those that this chassis' VM, Port and Host rows
     * refer to (as ovn-controller follows its local datapaths). Each set
     * holds the UUIDs (text) the server's condition names now. */
    struct sset port_uuids, qos_uuids, calibration_uuids;
    unsigned int cond_seqno;       /* condition seqno that covers them all */
    unsigned long long updates;    /* loop turns whose monitor updates changed our rows */
    bool complete;                 /* every row our rows refer to has arrived */
    struct cluster_session session;  /* a new round over the members while no leader */
};

/* A clause on a table's _uuid ("_uuid" == ["uuid", "..."]): the IDL's
 * tables have no column object for it, and a condition needs one. */
static const struct ovsdb_idl_column uuid_column = {
    .name = "_uuid",
    .type = OVSDB_TYPE_SCALAR_INITIALIZER(OVSDB_BASE_UUID_INIT),
};

/* Replaces `tc`'s condition by "_uuid is one of `uuids`" (no UUID: no row);
 * returns the condition seqno at which the IDL holds exactly those rows. */
static unsigned int
set_uuid_condition(struct ovsdb_idl *idl, const struct ovsdb_idl_table_class *tc,
                   const struct sset *uuids)
{
    struct ovsdb_idl_condition cond = OVSDB_IDL_CONDITION_INIT(&cond);
    const char *text;
    SSET_FOR_EACH (text, uuids) {
        struct uuid uuid;
        if (!uuid_from_string(&uuid, text)) {
            continue;
        }
        /* The clause keeps (shares) the datum's atoms: on the heap. */
        union ovsdb_atom *key = xmalloc(sizeof *key);
        key->uuid = uuid;
        struct ovsdb_datum datum = { .n = 1, .keys = key, .values = NULL, .refcnt = NULL };
        ovsdb_idl_condition_add_clause(&cond, OVSDB_F_EQ, &uuid_column, &datum);
        ovsdb_datum_destroy(&datum, &uuid_column.type);
    }
    unsigned int seqno = ovsdb_idl_set_condition(idl, tc, &cond);
    ovsdb_idl_condition_destroy(&cond);
    return seqno;
}

/* Adds the UUIDs column `col` of `row` refers to, as text (the raw datum:
 * the parsed row omits references to rows not replicated yet). */
static void
add_refs(const struct ovsdb_idl_row *row, const struct ovsdb_idl_column *col, struct sset *out)
{
    /* What the server sent (ovsdb_idl_read() is for rows in a transaction). */
    const struct ovsdb_datum *d
        = row->old_datum ? &row->old_datum[col - row->table->class_->columns] : NULL;
    for (size_t i = 0; d && i < d->n; i++) {
        sset_add_and_free(out, xasprintf(UUID_FMT, UUID_ARGS(&d->keys[i].uuid)));
    }
}

struct capsule_db *
capsule_db_create(const char *remote, const char *chassis)
{
    struct capsule_db *db = xzalloc(sizeof *db);
    db->chassis = xstrdup(chassis);
    /* `remote` may list a clustered database's members ("tcp:A,tcp:B,..."):
     * OVS's client session (ovsdb-cs) tries them in random order and stays
     * on the first that is connected to its cluster and not behind what it
     * saw before (a member cut off from the cluster is never read); the
     * member forwards status transactions to the leader. On losing it, the
     * session asks the next for the changes since the last transaction it
     * saw (monitor_cond_since), keeping the conditions below.
     *
     * Not leader-only, as ovn-controller: agents spread over the members,
     * and when the leader dies only its own share reconnects, once, to a
     * member that is still in the cluster, instead of every agent of the
     * cluster polling the members (each try a _Server exchange) until one is
     * elected. Measured with 100 simulated hosts on 2 cores
     * (docs/scale.md): leader-only agents starved the new leader and the
     * cluster re-elected again and again. */
    db->idl = ovsdb_idl_create(remote, &capsulerec_idl_class, true, true);
    ovsdb_idl_set_leader_only(db->idl, false);
    cluster_session_init(&db->session, remote, 16 * CLUSTER_SESSION_RETRY_MS);

    /* Only this chassis' Host and VM rows (conditional monitoring). */
    struct ovsdb_idl_condition cond = OVSDB_IDL_CONDITION_INIT(&cond);
    capsulerec_host_add_clause_chassis(&cond, OVSDB_F_EQ, chassis);
    capsulerec_host_set_condition(db->idl, &cond);
    ovsdb_idl_condition_destroy(&cond);
    ovsdb_idl_condition_init(&cond);
    capsulerec_vm_add_clause_chassis(&cond, OVSDB_F_EQ, chassis);
    capsulerec_vm_set_condition(db->idl, &cond);
    ovsdb_idl_condition_destroy(&cond);

    /* Port, QoS and Calibration rows only once a row of ours refers to
     * them (update_conditions()). */
    sset_init(&db->port_uuids);
    sset_init(&db->qos_uuids);
    sset_init(&db->calibration_uuids);
    set_uuid_condition(db->idl, &capsulerec_table_port, &db->port_uuids);
    set_uuid_condition(db->idl, &capsulerec_table_qos, &db->qos_uuids);
    db->cond_seqno = set_uuid_condition(db->idl, &capsulerec_table_calibration,
                                        &db->calibration_uuids);

    /* What the agent writes itself must not wake it up. */
    ovsdb_idl_omit_alert(db->idl, &capsulerec_host_col_cur_cfg);
    ovsdb_idl_omit_alert(db->idl, &capsulerec_host_col_status);
    ovsdb_idl_omit_alert(db->idl, &capsulerec_host_col_capabilities);
    ovsdb_idl_omit_alert(db->idl, &capsulerec_host_col_statistics);
    ovsdb_idl_omit_alert(db->idl, &capsulerec_vm_col_status);
    ovsdb_idl_omit_alert(db->idl, &capsulerec_vm_col_statistics);
    ovsdb_idl_omit_alert(db->idl, &capsulerec_port_col_status);
    ovsdb_idl_omit_alert(db->idl, &capsulerec_port_col_statistics);
    db->seqno = ovsdb_idl_get_seqno(db->idl);
    return db;
}

void
capsule_db_set_leader_only(struct capsule_db *db, bool leader_only)
{
    ovsdb_idl_set_leader_only(db->idl, leader_only);
}

void
capsule_db_destroy(struct capsule_db *db)
{
    if (!db) {
        return;
    }
    if (db->txn) {
        ovsdb_idl_txn_destroy(db->txn);
    }
    json_destroy(db->pending);
    json_destroy(db->inflight);
    cluster_session_destroy(&db->session);
    sset_destroy(&db->port_uuids);
    sset_destroy(&db->qos_uuids);
    sset_destroy(&db->calibration_uuids);
    ovsdb_idl_destroy(db->idl);
    free(db->chassis);
    free(db);
}

bool
capsule_db_connected(const struct capsule_db *db)
{
    return ovsdb_idl_is_connected(db->idl) && ovsdb_idl_has_ever_connected(db->idl);
}

struct capsule_db_counters
capsule_db_get_counters(const struct capsule_db *db)
{
    return (struct capsule_db_counters) {
        .commits = db->commits, .sent = db->sent, .retried = db->retried,
        .connections = db->connections,
    };
}

bool
capsule_db_status_pending(const struct capsule_db *db)
{
    return db->pending || db->txn;
}

/* -- snapshot -- */

/* smap_to_json() (OVS smap.h) gives {"key": "value", ...}. */

static struct json *
opt_int(const int64_t *v, size_t n)
{
    return n ? json_integer_create(*v) : json_null_create();
}

static struct json *
opt_bool(const bool *v, size_t n)
{
    return n ? json_boolean_create(*v) : json_null_create();
}

static struct json *
opt_string(const char *s)
{
    return s ? json_string_create(s) : json_null_create();
}

static struct json *
uuid_json(const struct ovsdb_idl_row *row)
{
    return json_string_create_nocopy(xasprintf(UUID_FMT, UUID_ARGS(&row->uuid)));
}

static struct json *
port_to_json(const struct capsulerec_port *port)
{
    struct json *p = json_object_create();
    json_object_put(p, "uuid", uuid_json(&port->header_));
    json_object_put_string(p, "name", port->name);
    json_object_put_string(p, "vhost_path", port->vhost_path);
    json_object_put(p, "vhost_mode", opt_string(port->vhost_mode));
    json_object_put(p, "mac", opt_string(port->mac));
    json_object_put(p, "ingress_policing_rate", json_integer_create(port->ingress_policing_rate));
    json_object_put(p, "ingress_policing_burst", json_integer_create(port->ingress_policing_burst));
    json_object_put(p, "ingress_policing_kpkts_rate",
                    json_integer_create(port->ingress_policing_kpkts_rate));
    json_object_put(p, "ingress_policing_kpkts_burst",
                    json_integer_create(port->ingress_policing_kpkts_burst));
    json_object_put(p, "options", smap_to_json(&port->options));
    if (port->qos) {
        struct json *q = json_object_create();
        json_object_put(q, "uuid", uuid_json(&port->qos->header_));
        json_object_put_string(q, "type", port->qos->type);
        json_object_put(q, "other_config", smap_to_json(&port->qos->other_config));
        json_object_put(p, "qos", q);
    } else {
        json_object_put(p, "qos", json_null_create());
    }
    return p;
}

static struct json *
vm_to_json(const struct capsulerec_vm *vm)
{
    struct json *v = json_object_create();
    json_object_put(v, "uuid", uuid_json(&vm->header_));
    json_object_put_string(v, "name", vm->name);
    json_object_put_string(v, "chassis", vm->chassis);
    json_object_put(v, "enabled", opt_bool(vm->enabled, vm->n_enabled));
    json_object_put(v, "pid", opt_int(vm->pid, vm->n_pid));
    json_object_put(v, "pidfile", opt_string(vm->pidfile));
    json_object_put(v, "vcpu_runtime_us", opt_int(vm->vcpu_runtime_us, vm->n_vcpu_runtime_us));
    json_object_put(v, "period_us", opt_int(vm->period_us, vm->n_period_us));
    json_object_put(v, "deadline_us", opt_int(vm->deadline_us, vm->n_deadline_us));
    json_object_put(v, "net_runtime_us", opt_int(vm->net_runtime_us, vm->n_net_runtime_us));
    json_object_put(v, "net_budget", opt_string(vm->net_budget));
    json_object_put(v, "net_margin",
                    vm->n_net_margin ? json_real_create(vm->net_margin[0]) : json_null_create());
    json_object_put(v, "reclaim", opt_bool(vm->reclaim, vm->n_reclaim));
    json_object_put(v, "options", smap_to_json(&vm->options));
    struct json *ports = json_array_create_empty();
    for (size_t i = 0; i < vm->n_ports; i++) {
        json_array_add(ports, port_to_json(vm->ports[i]));
    }
    json_object_put(v, "ports", ports);
    return v;
}

static struct json *
calibration_to_json(const struct capsulerec_calibration *c)
{
    struct json *j = json_object_create();
    json_object_put_string(j, "direction", c->direction);
    json_object_put(j, "frame_size", json_integer_create(c->frame_size));
    json_object_put(j, "period_us", json_integer_create(c->period_us));
    struct json *points = json_object_create();
    for (size_t i = 0; i < c->n_throughput; i++) {
        char key[32];
        snprintf(key, sizeof key, "%"PRId64, c->key_throughput[i]);
        json_object_put(points, key, json_real_create(c->value_throughput[i]));
    }
    json_object_put(j, "throughput", points);
    json_object_put(j, "pps_per_cpu", json_real_create(c->pps_per_cpu));
    json_object_put(j, "intercept_pps", json_real_create(c->intercept_pps));
    json_object_put(j, "r_squared", json_real_create(c->r_squared));
    json_object_put(j, "cycles_per_packet", json_real_create(c->cycles_per_packet));
    json_object_put_string(j, "date", c->date);
    return j;
}

static const struct capsulerec_host *
find_host(const struct capsule_db *db)
{
    const struct capsulerec_host *host;
    CAPSULEREC_HOST_FOR_EACH (host, db->idl) {
        if (!strcmp(host->chassis, db->chassis)) {
            return host;
        }
    }
    return NULL;
}

/* A row the server has sent: the IDL also keeps placeholders ("orphans")
 * for rows that replicated rows refer to and that have not arrived, and
 * returns them from *_get_for_uuid(). */
static bool
replicated(const struct ovsdb_idl_row *row)
{
    return row && row->old_datum;
}

/* Moves the condition of `tc` to `next` (consumed) if it differs from `cur`. */
static void
replace_condition(struct capsule_db *db, const struct ovsdb_idl_table_class *tc,
                  struct sset *cur, struct sset *next)
{
    if (!sset_equals(cur, next)) {
        db->cond_seqno = set_uuid_condition(db->idl, tc, next);
        sset_swap(cur, next);
    }
    sset_destroy(next);
}

/* Follows this chassis' references: VM -> Port -> QoS, Host -> Calibration.
 * Sets the conditions to exactly those rows and says whether every one of
 * them has arrived (a snapshot before that would show a VM without its
 * ports). */
static bool
update_conditions(struct capsule_db *db)
{
    struct sset ports = SSET_INITIALIZER(&ports);
    struct sset qos = SSET_INITIALIZER(&qos);
    struct sset calibration = SSET_INITIALIZER(&calibration);
    bool complete = true;

    const struct capsulerec_vm *vm;
    CAPSULEREC_VM_FOR_EACH (vm, db->idl) {
        if (!strcmp(vm->chassis, db->chassis)) {
            add_refs(&vm->header_, &capsulerec_vm_col_ports, &ports);
        }
    }
    const char *text;
    SSET_FOR_EACH (text, &ports) {
        struct uuid uuid;
        const struct capsulerec_port *port = NULL;
        if (uuid_from_string(&uuid, text)) {
            port = capsulerec_port_get_for_uuid(db->idl, &uuid);
        }
        if (!port || !replicated(&port->header_)) {
            complete = false;
            continue;
        }
        add_refs(&port->header_, &capsulerec_port_col_qos, &qos);
    }
    SSET_FOR_EACH (text, &qos) {
        struct uuid uuid;
        const struct capsulerec_qos *qos_row = NULL;
        if (uuid_from_string(&uuid, text)) {
            qos_row = capsulerec_qos_get_for_uuid(db->idl, &uuid);
        }
        complete &= qos_row && replicated(&qos_row->header_);
    }
    const struct capsulerec_host *host = find_host(db);
    if (host) {
        add_refs(&host->header_, &capsulerec_host_col_calibration, &calibration);
        complete &= host->n_calibration == sset_count(&calibration);
    }
    replace_condition(db, &capsulerec_table_port, &db->port_uuids, &ports);
    replace_condition(db, &capsulerec_table_qos, &db->qos_uuids, &qos);
    replace_condition(db, &capsulerec_table_calibration, &db->calibration_uuids, &calibration);
    return complete;
}

unsigned long long
capsule_db_updates(const struct capsule_db *db)
{
    return db->updates;
}

void
capsule_db_monitored(const struct capsule_db *db, size_t *vms, size_t *ports, size_t *qos,
                     size_t *calibrations)
{
    const struct capsulerec_vm *vm;
    *vms = 0;
    CAPSULEREC_VM_FOR_EACH (vm, db->idl) {
        (*vms)++;
    }
    *ports = sset_count(&db->port_uuids);
    *qos = sset_count(&db->qos_uuids);
    *calibrations = sset_count(&db->calibration_uuids);
}

char *
capsule_db_snapshot(const struct capsule_db *db)
{
    struct json *snap = json_object_create();
    json_object_put(snap, "connected", json_boolean_create(capsule_db_connected(db)));
    json_object_put(snap, "complete", json_boolean_create(db->complete));
    json_object_put_string(snap, "chassis", db->chassis);
    const struct capsulerec_host *host = find_host(db);
    if (host) {
        struct json *h = json_object_create();
        json_object_put(h, "uuid", uuid_json(&host->header_));
        json_object_put_string(h, "chassis", host->chassis);
        json_object_put(h, "datapath_type", opt_string(host->datapath_type));
        json_object_put(h, "dpdk_options", smap_to_json(&host->dpdk_options));
        json_object_put(h, "uplink", smap_to_json(&host->uplink));
        json_object_put(h, "admission_mode", opt_string(host->admission_mode));
        json_object_put(h, "utilization_bound",
                        host->n_utilization_bound
                            ? json_real_create(host->utilization_bound[0])
                            : json_null_create());
        json_object_put(h, "capsule_cpus", opt_string(host->capsule_cpus));
        json_object_put(h, "next_cfg", json_integer_create(host->next_cfg));
        json_object_put(h, "cur_cfg", json_integer_create(host->cur_cfg));
        json_object_put(h, "other_config", smap_to_json(&host->other_config));
        struct json *curves = json_array_create_empty();
        for (size_t i = 0; i < host->n_calibration; i++) {
            json_array_add(curves, calibration_to_json(host->calibration[i]));
        }
        json_object_put(h, "calibration", curves);
        json_object_put(snap, "host", h);
    } else {
        json_object_put(snap, "host", json_null_create());
    }
    struct json *vms = json_array_create_empty();
    const struct capsulerec_vm *vm;
    CAPSULEREC_VM_FOR_EACH (vm, db->idl) {
        if (!strcmp(vm->chassis, db->chassis)) {
            json_array_add(vms, vm_to_json(vm));
        }
    }
    json_object_put(snap, "vms", vms);
    char *text = json_to_string(snap, 0);
    json_destroy(snap);
    return text;
}

/* -- status write-back -- */

char *
capsule_db_set_status(struct capsule_db *db, const char *text)
{
    struct json *json = json_from_string(text);
    if (json->type == JSON_STRING) {  /* json_from_string's way of saying "error" */
        char *error = xasprintf("status JSON: %s", json_string(json));
        json_destroy(json);
        return error;
    }
    if (json->type != JSON_OBJECT) {
        json_destroy(json);
        return xstrdup("status JSON: not an object");
    }
    json_destroy(db->pending);
    db->pending = json;
    capsule_ovs_wake();
    return NULL;
}

/* Fills `smap` from a JSON object of strings; false if it is not one. */
static bool
json_to_smap(const struct json *obj, struct smap *smap)
{
    if (!obj || obj->type != JSON_OBJECT) {
        return false;
    }
    struct shash_node *node;
    SHASH_FOR_EACH (node, json_object(obj)) {
        const struct json *v = node->data;
        if (v->type == JSON_STRING) {
            smap_add(smap, node->name, json_string(v));
        }
    }
    return true;
}

static void
write_smap_column(const struct ovsdb_idl_row *row, const struct smap *current,
                  const struct json *obj,
                  void (*setter)(const struct ovsdb_idl_row *, const struct smap *))
{
    struct smap next = SMAP_INITIALIZER(&next);
    if (json_to_smap(obj, &next) && !smap_equal(current, &next)) {
        setter(row, &next);
    }
    smap_destroy(&next);
}

/* Setters with a generic row type, for write_smap_column(). */
static void set_host_status(const struct ovsdb_idl_row *r, const struct smap *m)
{ capsulerec_host_set_status((const struct capsulerec_host *) r, m); }
static void set_host_capabilities(const struct ovsdb_idl_row *r, const struct smap *m)
{ capsulerec_host_set_capabilities((const struct capsulerec_host *) r, m); }
static void set_vm_status(const struct ovsdb_idl_row *r, const struct smap *m)
{ capsulerec_vm_set_status((const struct capsulerec_vm *) r, m); }
static void set_port_status(const struct ovsdb_idl_row *r, const struct smap *m)
{ capsulerec_port_set_status((const struct capsulerec_port *) r, m); }

/* Numeric map columns: {key: number} -> parallel arrays, sorted by key as
 * the IDL keeps them; returns the count. */
static size_t
json_to_numbers(const struct json *obj, const char ***keys, double **values)
{
    *keys = NULL;
    *values = NULL;
    if (!obj || obj->type != JSON_OBJECT) {
        return 0;
    }
    const struct shash_node **nodes = shash_sort(json_object(obj));
    size_t n = shash_count(json_object(obj)), k = 0;
    *keys = xmalloc(n * sizeof **keys + 1);
    *values = xmalloc(n * sizeof **values + 1);
    for (size_t i = 0; i < n; i++) {
        const struct json *v = nodes[i]->data;
        if (v->type == JSON_INTEGER || v->type == JSON_REAL) {
            (*keys)[k] = nodes[i]->name;
            (*values)[k] = v->type == JSON_INTEGER ? (double) json_integer(v) : json_real(v);
            k++;
        }
    }
    free(nodes);
    return k;
}

static bool
numbers_equal(char **cur_keys, const double *cur_values, size_t n_cur,
              const char **keys, const double *values, size_t n)
{
    if (n != n_cur) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (strcmp(cur_keys[i], keys[i]) || cur_values[i] != values[i]) {
            return false;
        }
    }
    return true;
}

/* Real-valued map columns (VM and Host statistics), written only when they
 * differ from what the row holds. */
typedef void real_map_setter(const struct ovsdb_idl_row *, const char **keys,
                             const double *values, size_t n);

static void
write_real_map(const struct ovsdb_idl_row *row, char **cur_keys, const double *cur_values,
               size_t n_cur, const struct json *obj, real_map_setter *setter)
{
    if (!obj) {
        return;
    }
    const char **keys;
    double *values;
    size_t n = json_to_numbers(obj, &keys, &values);
    if (!numbers_equal(cur_keys, cur_values, n_cur, keys, values, n)) {
        setter(row, keys, values, n);
    }
    free(keys);
    free(values);
}

static void set_vm_statistics(const struct ovsdb_idl_row *r, const char **k, const double *v, size_t n)
{ capsulerec_vm_set_statistics((const struct capsulerec_vm *) r, k, v, n); }
static void set_host_statistics(const struct ovsdb_idl_row *r, const char **k, const double *v, size_t n)
{ capsulerec_host_set_statistics((const struct capsulerec_host *) r, k, v, n); }

static void
write_vm(const struct capsulerec_vm *vm, const struct json *v)
{
    write_smap_column(&vm->header_, &vm->status, shash_find_data(json_object(v), "status"),
                      set_vm_status);
    write_real_map(&vm->header_, vm->key_statistics, vm->value_statistics, vm->n_statistics,
                   shash_find_data(json_object(v), "statistics"), set_vm_statistics);
}

static void
write_port(const struct capsulerec_port *port, const struct json *p)
{
    write_smap_column(&port->header_, &port->status,
                      shash_find_data(json_object(p), "status"), set_port_status);
    const char **keys;
    double *values;
    size_t n = json_to_numbers(shash_find_data(json_object(p), "statistics"), &keys, &values);
    if (shash_find_data(json_object(p), "statistics")) {
        int64_t *ints = xmalloc(n * sizeof *ints + 1);
        bool same = n == port->n_statistics;
        for (size_t i = 0; i < n; i++) {
            ints[i] = (int64_t) values[i];
            same = same && !strcmp(keys[i], port->key_statistics[i])
                   && ints[i] == port->value_statistics[i];
        }
        if (!same) {
            capsulerec_port_set_statistics(port, keys, ints, n);
        }
        free(ints);
    }
    free(keys);
    free(values);
}

static void
write_host(const struct capsulerec_host *host, const struct json *h)
{
    write_smap_column(&host->header_, &host->status, shash_find_data(json_object(h), "status"),
                      set_host_status);
    write_smap_column(&host->header_, &host->capabilities,
                      shash_find_data(json_object(h), "capabilities"), set_host_capabilities);
    write_real_map(&host->header_, host->key_statistics, host->value_statistics,
                   host->n_statistics, shash_find_data(json_object(h), "statistics"),
                   set_host_statistics);
}

static void
write_vm_by_uuid(struct capsule_db *db, const struct uuid *uuid, const struct json *v)
{
    const struct capsulerec_vm *vm = capsulerec_vm_get_for_uuid(db->idl, uuid);
    if (vm && replicated(&vm->header_)) {
        write_vm(vm, v);
    }
}

static void
write_port_by_uuid(struct capsule_db *db, const struct uuid *uuid, const struct json *p)
{
    const struct capsulerec_port *port = capsulerec_port_get_for_uuid(db->idl, uuid);
    if (port && replicated(&port->header_)) {
        write_port(port, p);
    }
}

/* {"<uuid>": {...}, ...}: applies `write` to each row that still exists. */
static void
write_rows(struct capsule_db *db, const struct json *rows,
           void (*write)(struct capsule_db *, const struct uuid *, const struct json *))
{
    if (!rows || rows->type != JSON_OBJECT) {
        return;
    }
    struct shash_node *node;
    SHASH_FOR_EACH (node, json_object(rows)) {
        struct uuid uuid;
        const struct json *row = node->data;
        if (uuid_from_string(&uuid, node->name) && row->type == JSON_OBJECT) {
            write(db, &uuid, row);
        }
    }
}

static void
start_status_txn(struct capsule_db *db)
{
    struct json *st = db->pending;
    db->pending = NULL;
    db->txn = ovsdb_idl_txn_create(db->idl);
    ovsdb_idl_txn_add_comment(db->txn, "capsuled: status of chassis %s", db->chassis);

    const struct capsulerec_host *host = find_host(db);
    if (!host) {
        struct capsulerec_host *h = capsulerec_host_insert(db->txn);
        capsulerec_host_set_chassis(h, db->chassis);
        host = h;
        VLOG_INFO("registering chassis %s (new Host row)", db->chassis);
    }
    const struct json *h = shash_find_data(json_object(st), "host");
    if (h && h->type == JSON_OBJECT) {
        write_host(host, h);
    }
    const struct json *cur_cfg = shash_find_data(json_object(st), "cur_cfg");
    if (cur_cfg && cur_cfg->type == JSON_INTEGER && json_integer(cur_cfg) != host->cur_cfg) {
        capsulerec_host_set_cur_cfg(host, json_integer(cur_cfg));
    }

    write_rows(db, shash_find_data(json_object(st), "vms"), write_vm_by_uuid);
    write_rows(db, shash_find_data(json_object(st), "ports"), write_port_by_uuid);
    db->inflight = st;
}

static void
finish_status_txn(struct capsule_db *db)
{
    enum ovsdb_idl_txn_status status = ovsdb_idl_txn_commit(db->txn);
    if (status == TXN_INCOMPLETE) {
        return;
    }
    if (status == TXN_SUCCESS || status == TXN_UNCHANGED) {
        db->commits++;
        db->backoff_ms = 0;
        json_destroy(db->inflight);
    } else {
        /* Retry with the newest status (or this one if none is newer), not
         * before a backoff: TXN_TRY_AGAIN comes back at once while the
         * session is not monitoring yet (a member that is slow to answer,
         * one that has just said it lost its cluster) and when a session
         * with a status in flight ended. Retried at once, a hundred agents
         * spun on it while a starved cluster elected a leader, and starved
         * it further (docs/scale.md, "Failover"). Doubling from
         * STATUS_RETRY_MIN_MS to STATUS_RETRY_MAX_MS, with up to 50 %
         * random spread so that agents do not retry in step. */
        if (status != TXN_TRY_AGAIN) {
            VLOG_WARN("status transaction failed (%s): %s", ovsdb_idl_txn_status_to_string(status),
                      ovsdb_idl_txn_get_error(db->txn));
        }
        db->backoff_ms = (status != TXN_TRY_AGAIN ? STATUS_RETRY_MAX_MS
                          : db->backoff_ms ? MIN(2 * db->backoff_ms, STATUS_RETRY_MAX_MS)
                          : STATUS_RETRY_MIN_MS);
        db->retry_at = time_msec() + db->backoff_ms / 2 + random_range(db->backoff_ms / 2 + 1);
        db->retried++;
        if (!db->pending) {
            db->pending = db->inflight;
        } else {
            json_destroy(db->inflight);
        }
    }
    db->inflight = NULL;
    ovsdb_idl_txn_destroy(db->txn);
    db->txn = NULL;
}

bool
capsule_db_run(struct capsule_db *db)
{
    latch_poll(&wake_latch);
    ovsdb_idl_run(db->idl);
    cluster_session_run(&db->session, db->idl);
    if (unixctl) {
        unixctl_server_run(unixctl);
    }
    bool connected = capsule_db_connected(db);
    if (connected && !db->was_connected) {
        db->connections++;
    }
    db->was_connected = connected;
    if (db->txn) {
        finish_status_txn(db);
    }
    if (!db->txn && db->pending && connected && time_msec() >= db->retry_at) {
        start_status_txn(db);
        finish_status_txn(db);
        if (db->txn) {  /* on its way to the server (not unchanged, not refused at once) */
            db->sent++;
        }
    }
    unsigned int seqno = ovsdb_idl_get_seqno(db->idl);
    bool changed = seqno != db->seqno;
    db->seqno = seqno;
    if (changed) {
        db->updates++;
        db->complete = update_conditions(db);
    }
    return changed;
}

void
capsule_db_wait_and_block(struct capsule_db *db, long long timeout_ms)
{
    ovsdb_idl_wait(db->idl);
    cluster_session_wait(&db->session);
    if (unixctl) {
        unixctl_server_wait(unixctl);
    }
    latch_wait(&wake_latch);
    if (db->txn) {
        ovsdb_idl_txn_wait(db->txn);
    } else if (db->pending && capsule_db_connected(db)) {
        poll_timer_wait_until(db->retry_at);
    }
    if (timeout_ms >= 0) {
        poll_timer_wait(timeout_ms);
    }
    poll_block();
}
