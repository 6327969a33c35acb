/* capsule-ctl calibrate (see capsule-ctl-calibrate.h). C for the same reason
 * as capsule-ctl.c: OVS's IDL and JSON headers are C-only. */

#include <config.h>

#include "capsule-ctl-calibrate.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "openvswitch/vlog.h"
#include "svec.h"
#include "util.h"

VLOG_DEFINE_THIS_MODULE(capsule_ctl_calibrate);

extern char **environ;

/* capsule-calibrate: $CAPSULE_CALIBRATE, else next to this capsule-ctl,
 * else on $PATH. */
static char *
calibrator_path(void)
{
    const char *env = getenv("CAPSULE_CALIBRATE");
    if (env && *env) {
        return xstrdup(env);
    }
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) {
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash) {
            *slash = '\0';
            char *path = xasprintf("%s/capsule-calibrate", self);
            if (!access(path, X_OK)) {
                return path;
            }
            free(path);
        }
    }
    return xstrdup("capsule-calibrate");
}

/* The command's options, as capsule-calibrate's. */
static void
add_tool_options(const struct shash *options, int64_t period_us, struct svec *argv)
{
    static const char *const map[][2] = {
        {"--budgets", "--budgets"},    {"--frame-sizes", "--frame-sizes"},
        {"--directions", "--directions"}, {"--seconds", "--seconds"},
        {"--runs", "--runs"},
    };
    if (period_us) {
        svec_add(argv, "--period-us");
        svec_add_nocopy(argv, xasprintf("%"PRId64, period_us));
    }
    for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
        const struct shash_node *node = shash_find(options, map[i][0]);
        if (node) {
            svec_add(argv, map[i][1]);
            svec_add(argv, node->data);
        }
    }
}

/* Runs argv, returns its stdout; stderr is the user's terminal (progress). */
static char *
run_and_capture(struct svec *argv, int *status, char **error)
{
    int fds[2];
    if (pipe(fds)) {
        *error = xasprintf("pipe: %s", ovs_strerror(errno));
        return NULL;
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    svec_terminate(argv);
    pid_t pid;
    int err = posix_spawnp(&pid, argv->names[0], &actions, NULL, argv->names, environ);
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    if (err) {
        close(fds[0]);
        *error = xasprintf("cannot run %s: %s (it is built next to capsule-ctl; "
                           "CAPSULE_CALIBRATE names another)", argv->names[0], ovs_strerror(err));
        return NULL;
    }
    struct ds out = DS_EMPTY_INITIALIZER;
    char buf[4096];
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) != 0) {
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        ds_put_buffer(&out, buf, n);
    }
    close(fds[0]);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR) {
        continue;
    }
    return ds_steal_cstr(&out);
}

static const struct json *
member(const struct json *object, const char *name, enum json_type type)
{
    if (object->type != JSON_OBJECT) {
        return NULL;
    }
    const struct json *j = shash_find_data(json_object(object), name);
    if (!j) {
        return NULL;
    }
    if (type == JSON_REAL && (j->type == JSON_INTEGER || j->type == JSON_REAL)) {
        return j;
    }
    return j->type == type ? j : NULL;
}

static double
number(const struct json *j)
{
    return j->type == JSON_INTEGER ? (double) json_integer(j) : json_real(j);
}

/* The shape calibration_store() relies on. */
static char *
check_result(const struct json *result)
{
    const struct json *curves = member(result, "curves", JSON_ARRAY);
    if (!curves || !json_array(curves)->n) {
        return xstrdup("capsule-calibrate printed no curves");
    }
    for (size_t i = 0; i < json_array(curves)->n; i++) {
        const struct json *c = json_array(curves)->elems[i];
        const struct json *dir = member(c, "direction", JSON_STRING);
        if (!dir || (strcmp(json_string(dir), "from_vm") && strcmp(json_string(dir), "to_vm"))
            || !member(c, "frame_size", JSON_INTEGER) || !member(c, "period_us", JSON_INTEGER)
            || !member(c, "points", JSON_ARRAY) || !member(c, "pps_per_cpu", JSON_REAL)
            || !member(c, "intercept_pps", JSON_REAL) || !member(c, "r_squared", JSON_REAL)
            || !member(c, "cycles_per_packet", JSON_REAL)) {
            return xasprintf("capsule-calibrate's curve %"PRIuSIZE" is malformed", i);
        }
        if (number(member(c, "pps_per_cpu", JSON_REAL)) <= 0) {
            return xasprintf("capsule-calibrate measured no throughput for %s traffic",
                             json_string(dir));
        }
    }
    return NULL;
}

struct json *
calibration_measure(const struct shash *options, int64_t period_us, char **error)
{
    struct svec argv = SVEC_EMPTY_INITIALIZER;
    char *tool = calibrator_path();
    svec_add_nocopy(&argv, tool);
    add_tool_options(options, period_us, &argv);
    int status = 0;
    *error = NULL;
    char *text = run_and_capture(&argv, &status, error);
    svec_destroy(&argv);
    if (!text) {
        return NULL;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        *error = WIFEXITED(status)
                 ? xasprintf("calibration failed (capsule-calibrate exited with status %d, "
                             "reason above); nothing was stored", WEXITSTATUS(status))
                 : xasprintf("calibration failed (capsule-calibrate killed by signal %d); "
                             "nothing was stored", WTERMSIG(status));
        free(text);
        return NULL;
    }
    struct json *result = json_from_string(text);
    free(text);
    if (result->type == JSON_STRING) {
        *error = xasprintf("capsule-calibrate printed no JSON: %s", json_string(result));
        json_destroy(result);
        return NULL;
    }
    *error = check_result(result);
    if (*error) {
        json_destroy(result);
        return NULL;
    }
    return result;
}

void
calibration_store(struct ovsdb_idl_txn *txn, const struct capsulerec_host *host,
                  const struct json *result, struct ds *out)
{
    const struct json *curves = member(result, "curves", JSON_ARRAY);
    const struct json *date = member(result, "date", JSON_STRING);
    size_t n = json_array(curves)->n;
    struct capsulerec_calibration **rows = xmalloc(n * sizeof *rows);
    ds_put_format(out, "calibrated %s:\n", host->chassis);
    for (size_t i = 0; i < n; i++) {
        const struct json *c = json_array(curves)->elems[i];
        struct capsulerec_calibration *row = rows[i] = capsulerec_calibration_insert(txn);
        capsulerec_calibration_set_direction(row, json_string(member(c, "direction", JSON_STRING)));
        capsulerec_calibration_set_frame_size(row, json_integer(member(c, "frame_size", JSON_INTEGER)));
        capsulerec_calibration_set_period_us(row, json_integer(member(c, "period_us", JSON_INTEGER)));
        capsulerec_calibration_set_pps_per_cpu(row, number(member(c, "pps_per_cpu", JSON_REAL)));
        capsulerec_calibration_set_intercept_pps(row, number(member(c, "intercept_pps", JSON_REAL)));
        capsulerec_calibration_set_r_squared(row, number(member(c, "r_squared", JSON_REAL)));
        capsulerec_calibration_set_cycles_per_packet(row,
                                                     number(member(c, "cycles_per_packet", JSON_REAL)));
        capsulerec_calibration_set_date(row, date ? json_string(date) : "");

        const struct json_array *points = json_array(member(c, "points", JSON_ARRAY));
        int64_t *budgets = xmalloc((points->n + 1) * sizeof *budgets);
        double *pps = xmalloc((points->n + 1) * sizeof *pps);
        size_t k = 0;
        for (size_t p = 0; p < points->n; p++) {
            const struct json *b = member(points->elems[p], "budget_us", JSON_REAL);
            const struct json *r = member(points->elems[p], "pps", JSON_REAL);
            if (b && r && number(b) >= 1) {
                budgets[k] = llround(number(b));
                pps[k++] = number(r);
            }
        }
        capsulerec_calibration_set_throughput(row, budgets, pps, k);
        free(budgets);
        free(pps);
    }
    /* The old rows go with their last reference (Calibration is not root). */
    capsulerec_host_set_calibration(host, rows, n);
    free(rows);
    calibration_describe(host, 2, out);
}

void
calibration_describe(const struct capsulerec_host *host, int indent, struct ds *out)
{
    for (size_t i = 0; i < host->n_calibration; i++) {
        const struct capsulerec_calibration *c = host->calibration[i];
        ds_put_format(out, "%*s%s %"PRId64" B: %.3f Mpps per CPU (%.0f ns, %.0f cycles per packet), "
                      "R^2 %.4f, P %"PRId64" us, %s\n", indent, "", c->direction, c->frame_size,
                      c->pps_per_cpu / 1e6, c->pps_per_cpu > 0 ? 1e9 / c->pps_per_cpu : 0.0,
                      c->cycles_per_packet, c->r_squared, c->period_us, c->date);
    }
}
