/* The QoS types capsule accepts and the rules for their keys, in one place
 * (DESIGN.md: "One place for each rule"). capsule-ctl checks a user's
 * `set-qos` with it before writing anything; capsuled checks every QoS row
 * with it, whichever OVSDB client wrote the row. C, so that both can use it.
 *
 * Types and keys (as OVS names them and documents them: non-negative
 * integers, written in decimal; the ranges are capsule's):
 *   egress-policer  cir  bytes/s   required, 0 .. 125000000000 (1 Tbit/s)
 *                   cbs  bytes     0 .. 4294967295
 *   trtcm-policer   cir, cbs as above, and
 *                   eir  bytes/s   0 .. 125000000000
 *                   ebs  bytes     0 .. 4294967295
 *   pkt-policer     pir  packets/s required, 0 .. 1000000000
 *                   pbs  packets   0 .. 4294967295
 * What a datapath can enforce (a burst of at least one frame, ...) is the
 * datapath's own check (dpdk-pmd policer.h). Messages quote the user's text. */
#ifndef CAPSULE_QOS_RULES_H
#define CAPSULE_QOS_RULES_H 1

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* "cir cbs" for a known type, NULL for an unknown one. */
const char *capsule_qos_keys(const char *type);
/* The known types, for messages: "egress-policer, trtcm-policer, pkt-policer". */
const char *capsule_qos_type_list(void);

/* Checks one KEY=VALUE of `type` and stores the value in *value. Returns 0,
 * or -1 with a message in err (always NUL-terminated). */
int capsule_qos_parse(const char *type, const char *key, const char *text, uint64_t *value, char *err,
                      size_t errlen);

/* Checks a whole QoS row: the type, every key and value, and the rules
 * between keys (the rate is required). Returns 0, or
 * -1 with a message in err. */
int capsule_qos_check(const char *type, size_t n, const char *const *keys, const char *const *values, char *err,
                      size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
