/* capsule's writer of OVS's Open_vSwitch database (include/capsule/ovs/vswitch.h).
 * The only translation unit that sees libopenvswitch's vswitch IDL. */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "capsule/ovs/vswitch.h"

#include "openvswitch/dynamic-string.h"
#include "openvswitch/json.h"
#include "openvswitch/poll-loop.h"
#include "openvswitch/vlog.h"
#include "ovsdb-idl.h"
#include "smap.h"
#include "sset.h"
#include "timeval.h"
#include "util.h"
#include "vswitch-idl.h"

VLOG_DEFINE_THIS_MODULE(capsule_vswitch);

/* The external_ids keys that mark what capsule wrote (vswitch.h). */
#define OWNER_KEY "capsule-owner"
#define CREATED_KEY "capsule-created"
#define KEYS_KEY "capsule-keys"
/* What capsule may add to an operator's Interface (capsule-keys). */
#define KEY_AFFINITY "pmd-rxq-affinity"
#define KEY_INGRESS "ingress_policing"
#define KEY_QOS "qos"

struct capsule_vswitch {
    struct ovsdb_idl *idl;
    char *remote;
};

/* Processes whatever the server has sent, so reads see the newest rows. */
static void
refresh(struct capsule_vswitch *vs)
{
    for (int i = 0; i < 100; i++) {
        unsigned int seqno = ovsdb_idl_get_seqno(vs->idl);
        ovsdb_idl_run(vs->idl);
        if (seqno == ovsdb_idl_get_seqno(vs->idl)) {
            break;
        }
    }
}

/* Runs the IDL until it holds the database's contents, or the deadline. */
static bool
wait_synced(struct capsule_vswitch *vs, long long deadline)
{
    for (;;) {
        ovsdb_idl_run(vs->idl);
        if (ovsdb_idl_is_connected(vs->idl) && ovsdb_idl_has_ever_connected(vs->idl)) {
            refresh(vs);
            return true;
        }
        if (time_msec() >= deadline) {
            return false;
        }
        ovsdb_idl_wait(vs->idl);
        poll_timer_wait_until(deadline);
        poll_block();
    }
}

struct capsule_vswitch *
capsule_vswitch_create(const char *remote, long long timeout_ms, char **error)
{
    struct capsule_vswitch *vs = xzalloc(sizeof *vs);
    vs->remote = xstrdup(remote);
    vs->idl = ovsdb_idl_create(remote, &ovsrec_idl_class, true, true);
    ovsdb_idl_set_leader_only(vs->idl, false);
    if (!wait_synced(vs, time_msec() + timeout_ms)) {
        int last = ovsdb_idl_get_last_error(vs->idl);
        *error = xasprintf("OVS's database at %s did not answer within %lld ms%s%s%s", remote, timeout_ms,
                           last ? " (" : "", last ? ovs_strerror(last) : "", last ? ")" : "");
        capsule_vswitch_destroy(vs);
        return NULL;
    }
    VLOG_INFO("connected to OVS's database at %s", remote);
    return vs;
}

void
capsule_vswitch_destroy(struct capsule_vswitch *vs)
{
    if (vs) {
        ovsdb_idl_destroy(vs->idl);
        free(vs->remote);
        free(vs);
    }
}

bool
capsule_vswitch_connected(struct capsule_vswitch *vs)
{
    ovsdb_idl_run(vs->idl);
    return ovsdb_idl_is_connected(vs->idl);
}

char *
capsule_vswitch_other_config(struct capsule_vswitch *vs, const char *key)
{
    refresh(vs);
    const struct ovsrec_open_vswitch *ovs = ovsrec_open_vswitch_first(vs->idl);
    const char *v = ovs ? smap_get(&ovs->other_config, key) : NULL;
    return v ? xstrdup(v) : NULL;
}

/* ---- Reading rows ------------------------------------------------------- */

static bool
owned_by(const struct smap *external_ids, const char *owner)
{
    const char *o = smap_get(external_ids, OWNER_KEY);
    return o && !strcmp(o, owner);
}

static const struct ovsrec_interface *
find_interface(struct capsule_vswitch *vs, const char *name)
{
    const struct ovsrec_interface *iface;
    OVSREC_INTERFACE_FOR_EACH (iface, vs->idl) {
        if (!strcmp(iface->name, name)) {
            return iface;
        }
    }
    return NULL;
}

static const struct ovsrec_port *
port_of(struct capsule_vswitch *vs, const struct ovsrec_interface *iface)
{
    const struct ovsrec_port *port;
    OVSREC_PORT_FOR_EACH (port, vs->idl) {
        for (size_t i = 0; i < port->n_interfaces; i++) {
            if (port->interfaces[i] == iface) {
                return port;
            }
        }
    }
    return NULL;
}

static const struct ovsrec_bridge *
find_bridge(struct capsule_vswitch *vs, const char *name)
{
    const struct ovsrec_bridge *br;
    OVSREC_BRIDGE_FOR_EACH (br, vs->idl) {
        if (!strcmp(br->name, name)) {
            return br;
        }
    }
    return NULL;
}

/* capsule-keys of an operator's Interface that capsule uses. */
static void
read_keys(const struct ovsrec_interface *iface, struct sset *keys)
{
    const char *text = smap_get(&iface->external_ids, KEYS_KEY);
    if (text) {
        sset_from_delimited_string(keys, text, ",");
    }
}

/* ---- Writing rows ------------------------------------------------------- */

/* The port's QoS as `p` asks: capsule's own QoS row, created, updated or
 * deleted; an operator's QoS is never touched (an error when `p` has one). */
static char *
write_qos(struct ovsdb_idl_txn *txn, const struct ovsrec_port *port, const struct capsule_vswitch_port *p,
          const char *owner)
{
    const struct ovsrec_qos *qos = port->qos;
    const bool ours = qos && owned_by(&qos->external_ids, owner);
    if (p->qos_type) {
        if (qos && !ours) {
            return xasprintf("OVS port %s already has a QoS (type %s) that capsule did not create: remove it "
                             "(ovs-vsctl clear Port %s qos) or the Capsule port's QoS",
                             p->name, qos->type, p->name);
        }
        if (!qos) {
            qos = ovsrec_qos_insert(txn);
            ovsrec_qos_update_external_ids_setkey(qos, OWNER_KEY, owner);
            ovsrec_qos_update_external_ids_setkey(qos, CREATED_KEY, "true");
            ovsrec_port_set_qos(port, qos);
        }
        ovsrec_qos_set_type(qos, p->qos_type);
        struct smap config = SMAP_INITIALIZER(&config);
        for (size_t i = 0; i < p->n_qos; i++) {
            smap_add(&config, p->qos_keys[i], p->qos_values[i]);
        }
        ovsrec_qos_set_other_config(qos, &config);
        smap_destroy(&config);
    } else if (ours) {
        ovsrec_port_set_qos(port, NULL);
        ovsrec_qos_delete(qos);
    }
    return NULL;
}

static void
create_port(struct ovsdb_idl_txn *txn, const struct ovsrec_bridge *br, const struct capsule_vswitch_port *p,
            const char *owner)
{
    struct ovsrec_interface *iface = ovsrec_interface_insert(txn);
    ovsrec_interface_set_name(iface, p->name);
    ovsrec_interface_set_type(iface, "dpdkvhostuserclient");
    ovsrec_interface_update_options_setkey(iface, "vhost-server-path", p->vhost_server_path);
    ovsrec_interface_update_other_config_setkey(iface, KEY_AFFINITY, p->rxq_affinity);
    ovsrec_interface_set_ingress_policing_rate(iface, p->ingress_kbps);
    ovsrec_interface_set_ingress_policing_burst(iface, p->ingress_burst_kb);
    ovsrec_interface_update_external_ids_setkey(iface, OWNER_KEY, owner);
    ovsrec_interface_update_external_ids_setkey(iface, CREATED_KEY, "true");

    struct ovsrec_port *port = ovsrec_port_insert(txn);
    ovsrec_port_set_name(port, p->name);
    ovsrec_port_set_interfaces(port, &iface, 1);
    ovsrec_port_update_external_ids_setkey(port, OWNER_KEY, owner);
    ovsrec_port_update_external_ids_setkey(port, CREATED_KEY, "true");
    ovsrec_bridge_update_ports_addvalue(br, port);
    (void) write_qos(txn, port, p, owner);  /* a new port has no QoS to conflict with */
}

/* Capsule's own Interface (capsule-created): brought to what `p` says. */
static char *
update_created(struct ovsdb_idl_txn *txn, const struct ovsrec_interface *iface, const struct ovsrec_port *port,
               const struct capsule_vswitch_port *p, const char *owner)
{
    if (strcmp(iface->type, "dpdkvhostuserclient")) {
        ovsrec_interface_set_type(iface, "dpdkvhostuserclient");
    }
    const char *path = smap_get(&iface->options, "vhost-server-path");
    if (!path || strcmp(path, p->vhost_server_path)) {
        ovsrec_interface_update_options_setkey(iface, "vhost-server-path", p->vhost_server_path);
    }
    const char *aff = smap_get(&iface->other_config, KEY_AFFINITY);
    if (!aff || strcmp(aff, p->rxq_affinity)) {
        ovsrec_interface_update_other_config_setkey(iface, KEY_AFFINITY, p->rxq_affinity);
    }
    if (iface->ingress_policing_rate != p->ingress_kbps) {
        ovsrec_interface_set_ingress_policing_rate(iface, p->ingress_kbps);
    }
    if (iface->ingress_policing_burst != p->ingress_burst_kb) {
        ovsrec_interface_set_ingress_policing_burst(iface, p->ingress_burst_kb);
    }
    if (!port) {
        return xasprintf("OVS interface %s (capsule's) has no Port: remove it and let capsule create it again",
                         p->name);
    }
    return write_qos(txn, port, p, owner);
}

/* An operator's Interface of the port's name: capsule adds what it needs
 * where the operator left it unset, records it in capsule-keys, and refuses
 * to overwrite anything the operator set. */
static char *
use_operators(struct ovsdb_idl_txn *txn, const struct ovsrec_interface *iface, const struct ovsrec_port *port,
              const struct capsule_vswitch_port *p, const char *owner)
{
    const char *path = smap_get(&iface->options, "vhost-server-path");
    if (strcmp(iface->type, "dpdkvhostuserclient") || !path || strcmp(path, p->vhost_server_path)) {
        return xasprintf("OVS already has an interface %s (type %s%s%s) that is not the Capsule port's "
                         "dpdkvhostuserclient with vhost-server-path %s: rename one of them",
                         p->name, iface->type[0] ? iface->type : "system", path ? ", vhost-server-path " : "",
                         path ? path : "", p->vhost_server_path);
    }
    if (!port) {
        return xasprintf("OVS interface %s is on no Port", p->name);
    }
    ovsrec_interface_verify_other_config(iface);
    ovsrec_interface_verify_ingress_policing_rate(iface);
    ovsrec_interface_verify_ingress_policing_burst(iface);
    ovsrec_port_verify_qos(port);

    struct sset keys = SSET_INITIALIZER(&keys);
    read_keys(iface, &keys);
    char *error = NULL;

    const char *aff = smap_get(&iface->other_config, KEY_AFFINITY);
    if (sset_contains(&keys, KEY_AFFINITY) || !aff) {
        ovsrec_interface_update_other_config_setkey(iface, KEY_AFFINITY, p->rxq_affinity);
        sset_add(&keys, KEY_AFFINITY);
    } else if (strcmp(aff, p->rxq_affinity)) {
        error = xasprintf("OVS interface %s has other_config:pmd-rxq-affinity=%s set by someone else; capsule "
                          "needs %s (its VM's own PMD): remove that key",
                          p->name, aff, p->rxq_affinity);
        goto out;
    }

    if (sset_contains(&keys, KEY_INGRESS)) {
        ovsrec_interface_set_ingress_policing_rate(iface, p->ingress_kbps);
        ovsrec_interface_set_ingress_policing_burst(iface, p->ingress_burst_kb);
        if (!p->ingress_kbps) {
            sset_find_and_delete(&keys, KEY_INGRESS);
        }
    } else if (p->ingress_kbps && (iface->ingress_policing_rate != p->ingress_kbps ||
                                   iface->ingress_policing_burst != p->ingress_burst_kb)) {
        if (iface->ingress_policing_rate || iface->ingress_policing_burst) {
            error = xasprintf("OVS interface %s has ingress_policing_rate=%"PRId64" set by someone else; the "
                              "Capsule port asks for %lld: remove one of them",
                              p->name, iface->ingress_policing_rate, p->ingress_kbps);
            goto out;
        }
        ovsrec_interface_set_ingress_policing_rate(iface, p->ingress_kbps);
        ovsrec_interface_set_ingress_policing_burst(iface, p->ingress_burst_kb);
        sset_add(&keys, KEY_INGRESS);
    }

    error = write_qos(txn, port, p, owner);
    if (error) {
        goto out;
    }
    if (p->qos_type) {
        sset_add(&keys, KEY_QOS);
    } else {
        sset_find_and_delete(&keys, KEY_QOS);
    }

    ovsrec_interface_update_external_ids_setkey(iface, OWNER_KEY, owner);
    char *joined = sset_join(&keys, ",", "");
    ovsrec_interface_update_external_ids_setkey(iface, KEYS_KEY, joined);
    free(joined);
out:
    sset_destroy(&keys);
    return error;
}

/* Takes away what capsule holds on one Interface. */
static void
release_interface(struct capsule_vswitch *vs, const struct ovsrec_interface *iface, const char *owner)
{
    const struct ovsrec_port *port = port_of(vs, iface);
    const struct ovsrec_qos *qos = port ? port->qos : NULL;
    const bool our_qos = qos && owned_by(&qos->external_ids, owner);
    if (smap_get_bool(&iface->external_ids, CREATED_KEY, false)) {
        /* Port and Interface are not root tables: the IDL sends no delete
         * for them (a delete would also drop the Port's pending update), and
         * ovsdb-server collects them once the bridge no longer refers to
         * them. The Port's QoS reference goes in the same transaction, so
         * capsule's QoS row (a root row) can be deleted. */
        if (port) {
            if (our_qos) {
                ovsrec_port_set_qos(port, NULL);
                ovsrec_qos_delete(qos);
            }
            const struct ovsrec_bridge *br;
            OVSREC_BRIDGE_FOR_EACH (br, vs->idl) {
                for (size_t i = 0; i < br->n_ports; i++) {
                    if (br->ports[i] == port) {
                        ovsrec_bridge_update_ports_delvalue(br, port);
                    }
                }
            }
        }
        return;
    }
    struct sset keys = SSET_INITIALIZER(&keys);
    read_keys(iface, &keys);
    if (sset_contains(&keys, KEY_AFFINITY)) {
        ovsrec_interface_update_other_config_delkey(iface, KEY_AFFINITY);
    }
    if (sset_contains(&keys, KEY_INGRESS)) {
        ovsrec_interface_set_ingress_policing_rate(iface, 0);
        ovsrec_interface_set_ingress_policing_burst(iface, 0);
    }
    if (our_qos) {
        ovsrec_port_set_qos(port, NULL);
        ovsrec_qos_delete(qos);
    }
    ovsrec_interface_update_external_ids_delkey(iface, OWNER_KEY);
    ovsrec_interface_update_external_ids_delkey(iface, KEYS_KEY);
    sset_destroy(&keys);
}

/* Commits with a deadline (ovsdb_idl_txn_commit_block has none). */
static enum ovsdb_idl_txn_status
commit(struct capsule_vswitch *vs, struct ovsdb_idl_txn *txn, long long deadline)
{
    for (;;) {
        enum ovsdb_idl_txn_status status = ovsdb_idl_txn_commit(txn);
        if (status != TXN_INCOMPLETE) {
            return status;
        }
        if (time_msec() >= deadline) {
            ovsdb_idl_txn_abort(txn);
            return TXN_ERROR;
        }
        ovsdb_idl_run(vs->idl);
        ovsdb_idl_wait(vs->idl);
        ovsdb_idl_txn_wait(txn);
        poll_timer_wait_until(deadline);
        poll_block();
    }
}

/* Builds a transaction with `build` (NULL or an error, nothing then
 * committed) and commits it, again when another client's change got in
 * between (TXN_TRY_AGAIN). */
typedef char *build_fn(struct capsule_vswitch *, struct ovsdb_idl_txn *, const void *aux);

static char *
transact(struct capsule_vswitch *vs, const char *what, build_fn *build, const void *aux, long long timeout_ms)
{
    const long long deadline = time_msec() + timeout_ms;
    for (;;) {
        if (!wait_synced(vs, deadline)) {
            return xasprintf("%s: OVS's database at %s does not answer", what, vs->remote);
        }
        struct ovsdb_idl_txn *txn = ovsdb_idl_txn_create(vs->idl);
        ovsdb_idl_txn_add_comment(txn, "capsuled: %s", what);
        char *error = build(vs, txn, aux);
        if (error) {
            ovsdb_idl_txn_destroy(txn);
            return error;
        }
        enum ovsdb_idl_txn_status status = commit(vs, txn, deadline);
        if (status == TXN_SUCCESS || status == TXN_UNCHANGED) {
            ovsdb_idl_txn_destroy(txn);
            refresh(vs);
            return NULL;
        }
        if (status == TXN_TRY_AGAIN && time_msec() < deadline) {
            ovsdb_idl_txn_destroy(txn);
            ovsdb_idl_wait(vs->idl);
            poll_timer_wait_until(deadline);
            poll_block();
            continue;
        }
        error = xasprintf("%s: OVS's database refused the transaction: %s", what,
                          time_msec() >= deadline ? "no answer in time" : ovsdb_idl_txn_get_error(txn));
        ovsdb_idl_txn_destroy(txn);
        return error;
    }
}

struct apply_args {
    const char *bridge, *owner;
    const struct capsule_vswitch_port *ports;
    size_t n_ports;
};

static char *
build_apply(struct capsule_vswitch *vs, struct ovsdb_idl_txn *txn, const void *aux_)
{
    const struct apply_args *a = aux_;
    const struct ovsrec_bridge *br = find_bridge(vs, a->bridge);
    if (!br) {
        return xasprintf("OVS has no bridge %s (ovs-vsctl add-br %s -- set Bridge %s datapath_type=netdev, "
                         "or set Host other_config:ovs-bridge)",
                         a->bridge, a->bridge, a->bridge);
    }
    if (strcmp(br->datapath_type, "netdev")) {
        return xasprintf("OVS bridge %s has datapath_type \"%s\": vhost-user ports need a netdev (DPDK) bridge",
                         a->bridge, br->datapath_type);
    }
    struct sset wanted = SSET_INITIALIZER(&wanted);
    char *error = NULL;
    for (size_t i = 0; i < a->n_ports && !error; i++) {
        const struct capsule_vswitch_port *p = &a->ports[i];
        sset_add(&wanted, p->name);
        const struct ovsrec_interface *iface = find_interface(vs, p->name);
        if (!iface) {
            create_port(txn, br, p, a->owner);
            continue;
        }
        const char *other = smap_get(&iface->external_ids, OWNER_KEY);
        if (other && strcmp(other, a->owner)) {
            error = xasprintf("OVS interface %s belongs to VM %s", p->name, other);
        } else if (other && smap_get_bool(&iface->external_ids, CREATED_KEY, false)) {
            error = update_created(txn, iface, port_of(vs, iface), p, a->owner);
        } else {
            error = use_operators(txn, iface, port_of(vs, iface), p, a->owner);
        }
    }
    if (!error) {
        /* Ports this VM no longer has. */
        const struct ovsrec_interface *iface;
        OVSREC_INTERFACE_FOR_EACH (iface, vs->idl) {
            if (owned_by(&iface->external_ids, a->owner) && !sset_contains(&wanted, iface->name)) {
                release_interface(vs, iface, a->owner);
            }
        }
    }
    sset_destroy(&wanted);
    return error;
}

char *
capsule_vswitch_apply(struct capsule_vswitch *vs, const char *bridge, const char *owner,
                      const struct capsule_vswitch_port *ports, size_t n_ports, long long timeout_ms)
{
    struct apply_args a = {bridge, owner, ports, n_ports};
    char *what = xasprintf("ports of VM %s", owner);
    char *error = transact(vs, what, build_apply, &a, timeout_ms);
    free(what);
    return error;
}

static char *
build_remove(struct capsule_vswitch *vs, struct ovsdb_idl_txn *txn OVS_UNUSED, const void *owner)
{
    const struct ovsrec_interface *iface;
    OVSREC_INTERFACE_FOR_EACH (iface, vs->idl) {
        if (owned_by(&iface->external_ids, owner)) {
            release_interface(vs, iface, owner);
        }
    }
    return NULL;
}

char *
capsule_vswitch_remove(struct capsule_vswitch *vs, const char *owner, long long timeout_ms)
{
    char *what = xasprintf("removing VM %s", owner);
    char *error = transact(vs, what, build_remove, owner, timeout_ms);
    free(what);
    return error;
}

char *
capsule_vswitch_owned(struct capsule_vswitch *vs)
{
    refresh(vs);
    struct json *all = json_object_create();
    const struct ovsrec_interface *iface;
    OVSREC_INTERFACE_FOR_EACH (iface, vs->idl) {
        const char *owner = smap_get(&iface->external_ids, OWNER_KEY);
        if (!owner) {
            continue;
        }
        struct json *list = shash_find_data(json_object(all), owner);
        if (!list) {
            list = json_array_create_empty();
            json_object_put(all, owner, list);
        }
        struct json *p = json_object_create();
        json_object_put_string(p, "port", iface->name);
        json_object_put(p, "created", json_boolean_create(smap_get_bool(&iface->external_ids, CREATED_KEY, false)));
        const char *aff = smap_get(&iface->other_config, KEY_AFFINITY);
        json_object_put_string(p, "rxq_affinity", aff ? aff : "");
        json_object_put_string(p, "link_state", iface->link_state ? iface->link_state : "");
        struct json *stats = json_object_create();
        for (size_t i = 0; i < iface->n_statistics; i++) {
            json_object_put(stats, iface->key_statistics[i], json_integer_create(iface->value_statistics[i]));
        }
        json_object_put(p, "statistics", stats);
        json_array_add(list, p);
    }
    char *text = json_to_string(all, 0);
    json_destroy(all);
    return text;
}
