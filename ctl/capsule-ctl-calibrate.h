/* capsule-ctl calibrate: runs capsule-calibrate (the measurement of the
 * datapath thread's cost curve, see ctl/calibrate/) and turns its JSON into
 * Calibration rows of a Host. */
#ifndef CAPSULE_CTL_CALIBRATE_H
#define CAPSULE_CTL_CALIBRATE_H 1

#include "capsule-idl.h"
#include "openvswitch/dynamic-string.h"
#include "openvswitch/json.h"
#include "openvswitch/shash.h"

/* Runs the measurement with the command's options (--budgets,
 * --frame-sizes, --directions, --seconds, --runs) and `period_us` (0: the
 * tool's default); its progress goes to stderr. Returns the parsed, checked
 * result, or NULL with *error set (the sentence for the user; nothing has
 * been stored). */
struct json *calibration_measure(const struct shash *options, int64_t period_us, char **error);

/* Replaces `host`'s Calibration rows with the curves of `result` and
 * describes them in `out`. */
void calibration_store(struct ovsdb_idl_txn *txn, const struct capsulerec_host *host,
                       const struct json *result, struct ds *out);

/* One line per stored curve (for show). */
void calibration_describe(const struct capsulerec_host *host, int indent, struct ds *out);

#endif
