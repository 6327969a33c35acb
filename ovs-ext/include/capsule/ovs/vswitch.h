/* capsule's writer of OVS's own Open_vSwitch database (OVS datapath mode,
 * docs/ovs-mode.md): the VM ports capsule puts on an OVS-DPDK bridge, their
 * rx-queue affinity and their policers, written through libopenvswitch's
 * vswitch IDL. Nothing here includes an OVS header, so C++ can include it;
 * vswitch.c is the only file that sees the IDL.
 *
 * Ownership: every row capsule creates, and every row of an operator that
 * capsule writes a key into, carries external_ids:capsule-owner=<VM name>.
 * Rows capsule created also carry external_ids:capsule-created=true and are
 * deleted with the VM; on an operator's row capsule records what it added in
 * external_ids:capsule-keys and takes exactly that away again. Rows without
 * capsule-owner are never changed, except that capsule may add its keys to
 * an operator's Interface of the VM's own name when the operator left them
 * unset (a conflicting value is refused, see capsule_vswitch_apply).
 *
 * Threading: one struct capsule_vswitch belongs to one thread (OVS's poll
 * loop is per thread); every call below runs the IDL synchronously in the
 * calling thread and returns when done or after its timeout. */
#ifndef CAPSULE_OVS_VSWITCH_H
#define CAPSULE_OVS_VSWITCH_H 1

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct capsule_vswitch;

/* Connects to OVS's database `remote` (e.g. unix:/run/openvswitch/db.sock)
 * and waits up to timeout_ms for its contents. NULL and *error (to free())
 * when it does not answer in time. */
struct capsule_vswitch *capsule_vswitch_create(const char *remote, long long timeout_ms, char **error);
void capsule_vswitch_destroy(struct capsule_vswitch *);
bool capsule_vswitch_connected(struct capsule_vswitch *);

/* Open_vSwitch:other_config:KEY (malloc'd), or NULL when unset. */
char *capsule_vswitch_other_config(struct capsule_vswitch *, const char *key);

/* One VM port as capsule wants it in OVS. */
struct capsule_vswitch_port {
    const char *name;               /* Port and Interface name */
    const char *vhost_server_path;  /* options:vhost-server-path */
    const char *rxq_affinity;       /* other_config:pmd-rxq-affinity */
    const char *qos_type;           /* Port:qos type, NULL for none */
    size_t n_qos;                   /* the QoS row's other_config */
    const char *const *qos_keys;
    const char *const *qos_values;
    long long ingress_kbps;         /* Interface:ingress_policing_rate, 0 = off */
    long long ingress_burst_kb;     /* Interface:ingress_policing_burst */
};

/* Makes OVS hold exactly `ports` for VM `owner` on `bridge`, in one
 * transaction: each Interface of that name is created (type
 * dpdkvhostuserclient, with its Port on the bridge) or, when it exists,
 * updated in place (capsule's own) or used (an operator's
 * dpdkvhostuserclient with the same vhost-server-path: capsule adds only
 * what it needs). Ports `owner` held before and no longer names are taken
 * away. Returns NULL, or an error (to free()) and changes nothing: an
 * unknown bridge, an Interface of another type or path, another VM's, or an
 * operator's value capsule would have to overwrite. */
char *capsule_vswitch_apply(struct capsule_vswitch *, const char *bridge, const char *owner,
                            const struct capsule_vswitch_port *ports, size_t n_ports,
                            long long timeout_ms);

/* Takes away everything `owner` holds in OVS: rows it created are deleted,
 * its keys on an operator's rows removed. NULL or an error (to free()). */
char *capsule_vswitch_remove(struct capsule_vswitch *, const char *owner, long long timeout_ms);

/* JSON text (free() it) of what capsule holds in OVS, by VM:
 *   {"VM": [{"port": NAME, "created": bool, "rxq_affinity": TEXT,
 *            "link_state": "up"|"down"|"", "statistics": {KEY: N, ...}}]}
 * Interface statistics as ovs-vswitchd last wrote them (rx_* = received by
 * OVS from the VM, tx_* = sent by OVS to the VM). */
char *capsule_vswitch_owned(struct capsule_vswitch *);

#ifdef __cplusplus
}
#endif

#endif /* CAPSULE_OVS_VSWITCH_H */
