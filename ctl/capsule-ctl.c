/* capsule-ctl: ovs-vsctl for the Capsule database.
 *
 * Built on OVS's db-ctl-base, so every generic database command (list, get,
 * set, add, remove, clear, create, destroy, find, wait-until, comment, with
 * "--", "--id=@name", "--if-exists", "--columns", "--format") behaves exactly
 * as in ovs-vsctl, on the tables of ovs-ext/capsule.ovsschema. On top of them:
 * add-vm, del-vm, add-port, del-port, set-rsv, set-qos, calibrate, show.
 *
 * --wait increments Host:next_cfg of the target chassis in the same
 * transaction and waits until capsuled has copied it to cur_cfg; any VM that
 * capsuled rejected while applying that configuration is reported on stderr
 * with its reason and capsule-ctl exits 1.
 *
 * What it monitors: as ovs-vsctl, only the tables and columns its commands
 * use (db-ctl-base's generic commands add theirs); and when every command is
 * one of its row-targeted ones (add-vm, del-vm, set-rsv, add-port, del-port,
 * set-qos), only the rows they name: the named VM and Port rows, the target
 * Host row, and for --wait the target host's VMs (to report rejections). A
 * change on a database of thousands of hosts then costs what it costs on a
 * small one. show and calibrate read the whole database (see monitor_scope
 * below).
 *
 * C, not C++: db-ctl-base.h and the other OVS headers are C-only. */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capsule-ctl-calibrate.h"
#include "capsule-idl.h"
#include "cluster-session.h"
#include "command-line.h"
#include "compiler.h"
#include "db-ctl-base.h"
#include "fatal-signal.h"
#include "openvswitch/dynamic-string.h"
#include "openvswitch/poll-loop.h"
#include "openvswitch/vlog.h"
#include "ovsdb-data.h"
#include "ovsdb-idl.h"
#include "process.h"
#include "qos/qos-rules.h"
#include "smap.h"
#include "stream.h"
#include "stream-ssl.h"
#include "svec.h"
#include "table.h"
#include "timeval.h"
#include "util.h"

VLOG_DEFINE_THIS_MODULE(capsule_ctl);

static const char *db;                 /* --db */
static struct cluster_session the_session;  /* --db's members: reaching the leader */
static bool oneline;                   /* --oneline */
static bool dry_run;                   /* --dry-run */
static bool wait_for_reload;           /* --wait */
static const char *chassis_opt;        /* --chassis */
static unsigned int timeout;           /* --timeout */
/* Without --timeout, how long a list of members may go without a leader. */
#define LEADERLESS_LIMIT_MS 15000
static struct table_style table_style = TABLE_STYLE_DEFAULT;

static struct ovsdb_idl *the_idl;
static struct ovsdb_idl_txn *the_idl_txn;

static void capsule_ctl_cmd_init(void);
static void parse_options(int argc, char *argv[], struct shash *local_options);
static void run_prerequisites(struct ctl_command[], size_t n, struct ovsdb_idl *);
static void monitor_scope_apply(struct ovsdb_idl *);
static bool monitor_scope_ready(struct ovsdb_idl *);
static void log_replicated_rows(struct ovsdb_idl *, const char *when);
static bool do_capsule_ctl(const char *args, struct ctl_command *, size_t n,
                           struct ovsdb_idl *);

/* The default database: $CAPSULE_DB, else unix:$CAPSULE_RUNDIR/db.sock,
 * else unix:/run/capsule/db.sock (what scripts/capsule-service starts). */
static char *
capsule_default_db(void)
{
    const char *env = getenv("CAPSULE_DB");
    if (env && env[0]) {
        return xstrdup(env);
    }
    const char *rundir = getenv("CAPSULE_RUNDIR");
    return xasprintf("unix:%s/db.sock", rundir && rundir[0] ? rundir : "/run/capsule");
}

int
main(int argc, char *argv[])
{
    struct ctl_command *commands;
    struct shash local_options;
    size_t n_commands;

    set_program_name(argv[0]);
    fatal_ignore_sigpipe();
    vlog_set_levels(NULL, VLF_CONSOLE, VLL_WARN);
    vlog_set_levels_from_string_assert("reconnect:warn");

    capsule_ctl_cmd_init();

    char *args = process_escape_args(argv);
    shash_init(&local_options);
    parse_options(argc, argv, &local_options);
    char *error = ctl_parse_commands(argc - optind, argv + optind,
                                     &local_options, &commands, &n_commands);
    if (error) {
        ctl_fatal("%s", error);
    }
    VLOG(ctl_might_write_to_db(commands, n_commands) ? VLL_INFO : VLL_DBG,
         "Called as %s", args);

    ctl_timeout_setup(timeout);

    /* A list of remotes is a clustered database: keep trying its members
     * (one of them is leader again after an election) until --timeout,
     * instead of giving up after one try of each. The IDL writes through the
     * leader only. */
    the_idl = ovsdb_idl_create(db, &capsulerec_idl_class, false, strchr(db, ',') != NULL);
    /* One client, waited for: a round every second at most, so that it
     * writes within about a second of a new leader (the agents, hundreds of
     * them, back off to 8 s). */
    cluster_session_init(&the_session, db, 2 * CLUSTER_SESSION_RETRY_MS);
    run_prerequisites(commands, n_commands, the_idl);
    monitor_scope_apply(the_idl);

    /* Retry the transaction once per new database snapshot (see ovs-vsctl),
     * once the rows the commands need have all arrived. */
    unsigned int seqno = ovsdb_idl_get_seqno(the_idl);
    bool was_ready = false;
    for (;;) {
        ovsdb_idl_run(the_idl);
        cluster_session_run(&the_session, the_idl);
        /* A list is retried for ever by the IDL: without --timeout, a list
         * with no reachable leader (a typo, a cluster down) ends here. */
        if (!timeout && cluster_session_leaderless_ms(&the_session) > LEADERLESS_LIMIT_MS) {
            ctl_fatal("%s: no leader among these members within %d s (is the cluster up? "
                      "--timeout=SECS waits longer)", db, LEADERLESS_LIMIT_MS / 1000);
        }
        if (!ovsdb_idl_is_alive(the_idl)) {
            int retval = ovsdb_idl_get_last_error(the_idl);
            ctl_fatal("%s: database connection failed (%s)",
                      db, ovs_retval_to_string(retval));
        }
        /* A widened condition can be acknowledged without any row changing
         * (the rows were there already): being ready counts as news too. */
        bool changed = seqno != ovsdb_idl_get_seqno(the_idl);
        if (changed || !was_ready) {
            seqno = ovsdb_idl_get_seqno(the_idl);
            bool ready = seqno > 0 && monitor_scope_ready(the_idl);
            if (ready && do_capsule_ctl(args, commands, n_commands, the_idl)) {
                free(args);
                exit(EXIT_SUCCESS);
            }
            was_ready = ready;
        }
        if (seqno == ovsdb_idl_get_seqno(the_idl)) {
            ovsdb_idl_wait(the_idl);
            cluster_session_wait(&the_session);
            if (!timeout && cluster_session_leaderless_ms(&the_session)) {
                poll_timer_wait(LEADERLESS_LIMIT_MS / 10);  /* to see the limit pass */
            }
            poll_block();
        }
    }
}

OVS_NO_RETURN static void
usage(void)
{
    printf("\
%s: Capsule database configuration utility\n\
usage: %s [OPTIONS] COMMAND [ARG...] [-- [OPTIONS] COMMAND [ARG...]]...\n\
\n\
Capsule commands:\n\
  show                        print a tree of hosts, VMs, ports and status\n\
  add-vm VM [COLUMN[:KEY]=VALUE]...\n\
                              add VM on the target chassis (--may-exist)\n\
  del-vm VM                   delete VM and its ports (--if-exists)\n\
  add-port VM PORT VHOST_PATH [COLUMN[:KEY]=VALUE]...\n\
                              add a vhost-user port to VM (--may-exist)\n\
  del-port [VM] PORT          delete PORT (--if-exists)\n\
  set-rsv VM RUNTIME PERIOD [DEADLINE]\n\
                              set VM's vCPU reservation: each vCPU thread\n\
                              gets RUNTIME every PERIOD (durations: 2ms,\n\
                              500us, 1.5s; a bare number is microseconds);\n\
                              --net=RUNTIME also sets the datapath budget;\n\
                              --net=auto sizes it from the port's policers\n\
                              and the host's calibration, plus\n\
                              --net-margin=PCT (default 30)\n\
  set-qos PORT TYPE [KEY=VALUE]...\n\
                              police what PORT's VM receives (OVS's QoS:\n\
                              what the switch sends to the VM): TYPE is\n\
                              egress-policer (cir, cbs), trtcm-policer (cir,\n\
                              cbs, eir, ebs) in bytes/s and bytes as in OVS,\n\
                              or pkt-policer (pir packets/s, pbs packets);\n\
                              TYPE none removes it. What the VM sends:\n\
                              set Port PORT ingress_policing_rate=KBPS\n\
                              ingress_policing_burst=KB (or _kpkts_)\n\
  calibrate                   measure what the datapath thread moves per\n\
                              unit of CPU budget on this host and store it\n\
                              (the cost curve --net=auto uses); options\n\
                              --period=DUR (20ms) --budgets=PCT,... (1,2,5,\n\
                              10,20) --seconds=S --runs=N (per point)\n\
                              --frame-sizes=B,... --directions=...\n\
\n\
%s\
%s\
\n\
Options:\n\
  --db=DATABASE               connect to DATABASE\n\
                              (default: %s); a clustered database's\n\
                              members comma-separated (tcp:A:6641,tcp:B:6641,\n\
                              ...): writes go through the leader, and the\n\
                              members are tried until --timeout (without\n\
                              it, for 15 s)\n\
  --chassis=NAME              the host add-vm uses and --wait waits for\n\
                              (default: the only Host row)\n\
  --wait                      wait until capsuled has applied the change;\n\
                              print the reason and exit 1 if it rejected a VM\n\
  -t, --timeout=SECS          give up after SECS seconds\n\
  --oneline                   print exactly one line of output per command\n\
  --dry-run                   do not commit changes to the database\n",
           program_name, program_name, ctl_get_db_cmd_usage(),
           ctl_list_db_tables_usage(), capsule_default_db());
    table_usage();
    vlog_usage();
    printf("\
  --no-syslog                 equivalent to --verbose=capsule_ctl:syslog:warn\n");
    stream_usage("database", true, true, false);
    printf("\n\
Other options:\n\
  -h, --help                  display this help message\n\
  -V, --version               display version information\n\
\n\
Examples:\n\
  capsule-ctl add-vm vm1 pid=4242 -- set-rsv vm1 2ms 20ms\n\
  capsule-ctl --wait set-rsv vm1 4ms 20ms\n\
  capsule-ctl calibrate && capsule-ctl --wait -- --net=auto set-rsv vm1 4ms 20ms\n\
  capsule-ctl add-vm vm2 pidfile=/run/qemu/vm2.pid vcpu_runtime_us=1000 period_us=10000\n\
  capsule-ctl add-port vm1 vm1-eth0 /run/vm1.sock mac=\\\"52:54:00:00:00:01\\\"\n\
  capsule-ctl set-qos vm1-eth0 egress-policer cir=12500000 cbs=125000   (to vm1)\n\
  capsule-ctl set Port vm1-eth0 ingress_policing_rate=100000 ingress_policing_burst=10000   (from vm1)\n\
  capsule-ctl --columns=name,status list VM\n\
  capsule-ctl --format=json find VM status:state=rejected\n\
  capsule-ctl get Host . cur_cfg    (\".\" is the only Host row)\n\
  capsule-ctl del-vm vm1\n");
    exit(EXIT_SUCCESS);
}

static void
parse_options(int argc, char *argv[], struct shash *local_options)
{
    enum {
        OPT_DB = UCHAR_MAX + 1,
        OPT_ONELINE,
        OPT_NO_SYSLOG,
        OPT_DRY_RUN,
        OPT_WAIT,
        OPT_CHASSIS,
        OPT_LOCAL,
        OPT_PEER_CA_CERT,
        VLOG_OPTION_ENUMS,
        TABLE_OPTION_ENUMS,
        SSL_OPTION_ENUMS,
    };
    static const struct option global_long_options[] = {
        {"db", required_argument, NULL, OPT_DB},
        {"no-syslog", no_argument, NULL, OPT_NO_SYSLOG},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"oneline", no_argument, NULL, OPT_ONELINE},
        {"wait", no_argument, NULL, OPT_WAIT},
        {"chassis", required_argument, NULL, OPT_CHASSIS},
        {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        VLOG_LONG_OPTIONS,
        TABLE_LONG_OPTIONS,
        STREAM_SSL_LONG_OPTIONS,
        {"peer-ca-cert", required_argument, NULL, OPT_PEER_CA_CERT},
        {NULL, 0, NULL, 0},
    };
    const int n_global_long_options = ARRAY_SIZE(global_long_options) - 1;

    char *tmp = ovs_cmdl_long_options_to_short_options(global_long_options);
    char *short_options = xasprintf("+%s", tmp);
    free(tmp);

    /* Global options, then every command's own options (db-ctl-base). */
    struct option *options = xmemdup(global_long_options, sizeof global_long_options);
    size_t allocated_options = ARRAY_SIZE(global_long_options);
    size_t n_options = n_global_long_options;
    ctl_add_cmd_options(&options, &n_options, &allocated_options, OPT_LOCAL);

    for (;;) {
        int idx;
        int c = getopt_long(argc, argv, short_options, options, &idx);
        if (c == -1) {
            break;
        }
        switch (c) {
        case OPT_DB:
            db = optarg;
            break;
        case OPT_ONELINE:
            oneline = true;
            break;
        case OPT_NO_SYSLOG:
            vlog_set_levels(&this_module, VLF_SYSLOG, VLL_WARN);
            break;
        case OPT_DRY_RUN:
            dry_run = true;
            break;
        case OPT_WAIT:
            wait_for_reload = true;
            break;
        case OPT_CHASSIS:
            chassis_opt = optarg;
            break;
        case OPT_LOCAL:
            if (shash_find(local_options, options[idx].name)) {
                ctl_fatal("'%s' option specified multiple times", options[idx].name);
            }
            shash_add_nocopy(local_options, xasprintf("--%s", options[idx].name),
                             nullable_xstrdup(optarg));
            break;
        case 'h':
            usage();
        case 'V':
            ovs_print_version(0, 0);
            printf("DB Schema %s\n", capsulerec_get_db_version());
            exit(EXIT_SUCCESS);
        case 't':
            if (!str_to_uint(optarg, 10, &timeout) || !timeout) {
                ctl_fatal("value %s on -t or --timeout is invalid", optarg);
            }
            break;
        VLOG_OPTION_HANDLERS
        TABLE_OPTION_HANDLERS(&table_style)
        STREAM_SSL_OPTION_HANDLERS
        case OPT_PEER_CA_CERT:
            stream_ssl_set_peer_ca_cert_file(optarg);
            break;
        case '?':
            exit(EXIT_FAILURE);
        default:
            abort();
        }
    }
    free(short_options);

    if (!db) {
        db = capsule_default_db();
    }
    for (size_t i = n_global_long_options; options[i].name; i++) {
        free(CONST_CAST(char *, options[i].name));
    }
    free(options);
}

static void
capsule_ctl_exit(int status)
{
    if (the_idl_txn) {
        ovsdb_idl_txn_abort(the_idl_txn);
        ovsdb_idl_txn_destroy(the_idl_txn);
    }
    ovsdb_idl_destroy(the_idl);
    exit(status);
}

/* ---- Lookups ---------------------------------------------------------- */

static const struct capsulerec_vm *
find_vm(struct ovsdb_idl *idl, const char *name)
{
    const struct capsulerec_vm *vm;
    CAPSULEREC_VM_FOR_EACH (vm, idl) {
        if (!strcmp(vm->name, name)) {
            return vm;
        }
    }
    return NULL;
}

static const struct capsulerec_port *
find_port(struct ovsdb_idl *idl, const char *name)
{
    const struct capsulerec_port *port;
    CAPSULEREC_PORT_FOR_EACH (port, idl) {
        if (!strcmp(port->name, name)) {
            return port;
        }
    }
    return NULL;
}

static const struct capsulerec_vm *
port_owner(struct ovsdb_idl *idl, const struct capsulerec_port *port)
{
    const struct capsulerec_vm *vm;
    CAPSULEREC_VM_FOR_EACH (vm, idl) {
        for (size_t i = 0; i < vm->n_ports; i++) {
            if (vm->ports[i] == port) {
                return vm;
            }
        }
    }
    return NULL;
}

/* The Host row that add-vm and --wait target: --chassis, else the only one.
 * Returns NULL and sets *error when it cannot tell. */
static const struct capsulerec_host *
target_host(struct ovsdb_idl *idl, char **error)
{
    const struct capsulerec_host *host, *found = NULL;
    size_t n = 0;
    *error = NULL;
    CAPSULEREC_HOST_FOR_EACH (host, idl) {
        n++;
        if (chassis_opt && !strcmp(host->chassis, chassis_opt)) {
            return host;
        }
        found = host;
    }
    if (chassis_opt) {
        *error = xasprintf("no Host row for chassis \"%s\" (capsuled creates its "
                           "Host row when it starts)", chassis_opt);
    } else if (n == 0) {
        *error = xstrdup("the database has no Host row: start capsuled (it "
                         "registers its chassis) or name one with --chassis");
    } else if (n > 1) {
        *error = xasprintf("the database holds %"PRIuSIZE" hosts: say which "
                           "with --chassis", n);
    } else {
        return found;
    }
    return NULL;
}

/* Parses a duration ("20ms", "500us", "1.5s", "2000000ns", or a bare number
 * of microseconds) into microseconds. */
static char *
parse_duration_us(const char *text, int64_t *us)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || errno || !isfinite(v) || v < 0) {
        return xasprintf("\"%s\" is not a duration (examples: 2ms, 500us, 1.5s)", text);
    }
    double scale;
    if (!*end || !strcmp(end, "us")) {
        scale = 1;
    } else if (!strcmp(end, "ns")) {
        scale = 1e-3;
    } else if (!strcmp(end, "ms")) {
        scale = 1e3;
    } else if (!strcmp(end, "s")) {
        scale = 1e6;
    } else {
        return xasprintf("\"%s\": unknown unit \"%s\" (use ns, us, ms or s)", text, end);
    }
    double r = v * scale;
    if (r > (double) INT64_MAX / 2) {
        return xasprintf("\"%s\" is too long", text);
    }
    *us = (int64_t) llround(r);
    if (v > 0 && *us == 0) {
        return xasprintf("\"%s\" is shorter than a microsecond", text);
    }
    return NULL;
}

/* Applies "COLUMN[:KEY]=VALUE" arguments argv[first..] to a row. */
static bool
set_columns(struct ctl_context *ctx, const char *table, const struct ovsdb_idl_row *row,
            int first)
{
    for (int i = first; i < ctx->argc; i++) {
        char *error = ctl_set_column(table, row, ctx->argv[i], ctx->symtab);
        if (error) {
            ctl_error(ctx, "%s", error);
            free(error);
            return false;
        }
    }
    return true;
}

/* ---- VMs -------------------------------------------------------------- */

static void
cmd_add_vm(struct ctl_context *ctx)
{
    const char *name = ctx->argv[1];
    bool may_exist = shash_find(&ctx->options, "--may-exist") != NULL;
    const struct capsulerec_vm *vm = find_vm(ctx->idl, name);
    if (vm) {
        if (!may_exist) {
            ctl_error(ctx, "cannot create VM %s because it already exists", name);
            return;
        }
        set_columns(ctx, "VM", &vm->header_, 2);
        return;
    }
    char *error;
    const struct capsulerec_host *host = target_host(ctx->idl, &error);
    const char *chassis = host ? host->chassis : chassis_opt;
    if (!chassis) {
        ctl_error(ctx, "cannot place VM %s: %s", name, error);
        free(error);
        return;
    }
    free(error);
    struct capsulerec_vm *new_vm = capsulerec_vm_insert(ctx->txn);
    capsulerec_vm_set_name(new_vm, name);
    capsulerec_vm_set_chassis(new_vm, chassis);
    set_columns(ctx, "VM", &new_vm->header_, 2);
}

static void
cmd_del_vm(struct ctl_context *ctx)
{
    bool if_exists = shash_find(&ctx->options, "--if-exists") != NULL;
    const struct capsulerec_vm *vm = find_vm(ctx->idl, ctx->argv[1]);
    if (!vm) {
        if (!if_exists) {
            ctl_error(ctx, "no VM named %s", ctx->argv[1]);
        }
        return;
    }
    /* Ports and their QoS rows are not root: the database removes them with
     * the last reference. */
    capsulerec_vm_delete(vm);
}

static void
cmd_set_rsv(struct ctl_context *ctx)
{
    const struct capsulerec_vm *vm = find_vm(ctx->idl, ctx->argv[1]);
    if (!vm) {
        ctl_error(ctx, "no VM named %s", ctx->argv[1]);
        return;
    }
    int64_t runtime, period, deadline = 0, net = 0;
    char *error = parse_duration_us(ctx->argv[2], &runtime);
    if (!error) {
        error = parse_duration_us(ctx->argv[3], &period);
    }
    if (!error && ctx->argc > 4) {
        error = parse_duration_us(ctx->argv[4], &deadline);
    }
    struct shash_node *net_opt = shash_find(&ctx->options, "--net");
    struct shash_node *margin_opt = shash_find(&ctx->options, "--net-margin");
    bool net_auto = net_opt && !strcmp(net_opt->data, "auto");
    double margin = 0;
    if (!error && net_opt && !net_auto) {
        error = parse_duration_us(net_opt->data, &net);
    }
    if (!error && margin_opt) {
        char *end;
        margin = strtod(margin_opt->data, &end);
        if (end == margin_opt->data || (*end && strcmp(end, "%")) || !(margin >= 0 && margin <= 1000)) {
            error = xasprintf("--net-margin=%s is not a percentage from 0 to 1000 (e.g. 20 or 20%%)",
                              (char *) margin_opt->data);
        } else if (!net_auto) {
            error = xstrdup("--net-margin applies to --net=auto only");
        }
        margin /= 100;
    }
    if (error) {
        ctl_error(ctx, "set-rsv %s: %s", ctx->argv[1], error);
        free(error);
        return;
    }
    /* Obvious mistakes are refused here; everything else (kernel limits,
     * admission) is capsuled's to judge and report in status. */
    const char *broken = NULL;
    if (runtime == 0) {
        broken = "the runtime is zero";
    } else if (runtime > period) {
        broken = "the runtime is above the period";
    } else if (deadline && deadline > period) {
        broken = "the deadline is above the period";
    } else if (deadline && deadline < runtime) {
        broken = "the deadline is below the runtime";
    }
    if (broken) {
        ctl_error(ctx, "set-rsv %s: %s: need 0 < RUNTIME <= DEADLINE <= PERIOD "
                  "(got runtime %"PRId64" us, deadline %"PRId64" us, period %"PRId64" us)",
                  ctx->argv[1], broken, runtime, deadline ? deadline : period, period);
        return;
    }
    capsulerec_vm_set_vcpu_runtime_us(vm, &runtime, 1);
    capsulerec_vm_set_period_us(vm, &period, 1);
    capsulerec_vm_set_deadline_us(vm, &deadline, ctx->argc > 4 ? 1 : 0);
    if (net_auto) {
        /* The budget is capsuled's to derive; a fixed one would contradict it. */
        capsulerec_vm_set_net_budget(vm, "auto");
        capsulerec_vm_set_net_runtime_us(vm, NULL, 0);
        capsulerec_vm_set_net_margin(vm, &margin, margin_opt ? 1 : 0);
    } else if (net_opt) {
        capsulerec_vm_set_net_budget(vm, NULL);
        capsulerec_vm_set_net_margin(vm, NULL, 0);
        capsulerec_vm_set_net_runtime_us(vm, &net, 1);
    }
}

/* ---- calibrate -------------------------------------------------------- */

/* The measurement runs once, before the transaction (which may be retried). */
static struct json *calibration_result;

static void pre_everything(struct ctl_context *);

static void
pre_calibrate(struct ctl_context *ctx)
{
    pre_everything(ctx);
    char *error = NULL;
    int64_t period_us = 0;
    struct shash_node *period = shash_find(&ctx->options, "--period");
    if (period) {
        error = parse_duration_us(period->data, &period_us);
    }
    calibration_result = error ? NULL : calibration_measure(&ctx->options, period_us, &error);
    if (!calibration_result) {
        ctl_error(ctx, "calibrate: %s", error);
        free(error);
    }
}

static void
cmd_calibrate(struct ctl_context *ctx)
{
    char *error;
    const struct capsulerec_host *host = target_host(ctx->idl, &error);
    if (!host) {
        ctl_error(ctx, "calibrate: %s", error);
        free(error);
        return;
    }
    calibration_store(ctx->txn, host, calibration_result, &ctx->output);
}

/* ---- Ports and QoS ---------------------------------------------------- */

static void
cmd_add_port(struct ctl_context *ctx)
{
    const char *vm_name = ctx->argv[1], *port_name = ctx->argv[2];
    bool may_exist = shash_find(&ctx->options, "--may-exist") != NULL;
    const struct capsulerec_vm *vm = find_vm(ctx->idl, vm_name);
    if (!vm) {
        ctl_error(ctx, "no VM named %s", vm_name);
        return;
    }
    const struct capsulerec_port *port = find_port(ctx->idl, port_name);
    if (port) {
        const struct capsulerec_vm *owner = port_owner(ctx->idl, port);
        if (!may_exist || owner != vm) {
            ctl_error(ctx, "cannot create port %s because it already exists%s%s",
                      port_name, owner ? " on VM " : "", owner ? owner->name : "");
            return;
        }
        capsulerec_port_set_vhost_path(port, ctx->argv[3]);
        set_columns(ctx, "Port", &port->header_, 4);
        return;
    }
    struct capsulerec_port *new_port = capsulerec_port_insert(ctx->txn);
    capsulerec_port_set_name(new_port, port_name);
    capsulerec_port_set_vhost_path(new_port, ctx->argv[3]);
    capsulerec_vm_update_ports_addvalue(vm, new_port);
    set_columns(ctx, "Port", &new_port->header_, 4);
}

static void
cmd_del_port(struct ctl_context *ctx)
{
    bool if_exists = shash_find(&ctx->options, "--if-exists") != NULL;
    const char *port_name = ctx->argv[ctx->argc - 1];
    const struct capsulerec_port *port = find_port(ctx->idl, port_name);
    if (!port) {
        if (!if_exists) {
            ctl_error(ctx, "no port named %s", port_name);
        }
        return;
    }
    const struct capsulerec_vm *owner = port_owner(ctx->idl, port);
    if (ctx->argc == 3) {
        const struct capsulerec_vm *vm = find_vm(ctx->idl, ctx->argv[1]);
        if (!vm) {
            ctl_error(ctx, "no VM named %s", ctx->argv[1]);
            return;
        }
        if (vm != owner) {
            ctl_error(ctx, "port %s is not on VM %s", port_name, vm->name);
            return;
        }
    }
    if (owner) {
        capsulerec_vm_update_ports_delvalue(owner, port);
    } else {
        capsulerec_port_delete(port);
    }
}

static void
cmd_set_qos(struct ctl_context *ctx)
{
    const char *port_name = ctx->argv[1], *type = ctx->argv[2];
    const struct capsulerec_port *port = find_port(ctx->idl, port_name);
    if (!port) {
        ctl_error(ctx, "no port named %s", port_name);
        return;
    }
    if (!strcmp(type, "none")) {
        capsulerec_port_set_qos(port, NULL);
        return;
    }
    if (!capsule_qos_keys(type)) {
        ctl_error(ctx, "unknown QoS type \"%s\" (%s or none)", type, capsule_qos_type_list());
        return;
    }
    /* Every rule (keys, values, ranges, required keys) is the one capsuled
     * applies to rows from any client (qos/qos-rules.h): nothing is written
     * unless all of it holds. */
    struct smap config = SMAP_INITIALIZER(&config);
    char err[256];
    for (int i = 3; i < ctx->argc; i++) {
        const char *eq = strchr(ctx->argv[i], '=');
        if (!eq || eq == ctx->argv[i]) {
            ctl_error(ctx, "%s: \"%s\" is not KEY=VALUE (keys: %s)", type, ctx->argv[i], capsule_qos_keys(type));
            smap_destroy(&config);
            return;
        }
        char *key = xmemdup0(ctx->argv[i], eq - ctx->argv[i]);
        uint64_t value;
        if (capsule_qos_parse(type, key, eq + 1, &value, err, sizeof err)) {
            ctl_error(ctx, "%s", err);
            free(key);
            smap_destroy(&config);
            return;
        }
        smap_replace(&config, key, eq + 1);
        free(key);
    }
    const char **keys = xmalloc((smap_count(&config) + 1) * sizeof *keys);
    const char **values = xmalloc((smap_count(&config) + 1) * sizeof *values);
    size_t n = 0;
    const struct smap_node *node;
    SMAP_FOR_EACH (node, &config) {
        keys[n] = node->key;
        values[n++] = node->value;
    }
    int bad = capsule_qos_check(type, n, keys, values, err, sizeof err);
    free(keys);
    free(values);
    if (bad) {
        ctl_error(ctx, "%s", err);
        smap_destroy(&config);
        return;
    }
    struct capsulerec_qos *qos = capsulerec_qos_insert(ctx->txn);
    capsulerec_qos_set_type(qos, type);
    capsulerec_qos_set_other_config(qos, &config);
    capsulerec_port_set_qos(port, qos);  /* the old QoS row goes with its last reference */
    smap_destroy(&config);
}

/* ---- show ------------------------------------------------------------- */

/* label: key=value, ... on one line, without the key `except` (shown on a
 * line of its own by the caller), if any. */
static void
show_smap_except(struct ds *out, int indent, const char *label, const struct smap *map,
                 const char *except)
{
    if (smap_is_empty(map) || (except && smap_count(map) == 1 && smap_get(map, except))) {
        return;
    }
    ds_put_format(out, "%*s%s: ", indent, "", label);
    const struct smap_node **nodes = smap_sort(map);
    bool first = true;
    for (size_t i = 0; i < smap_count(map); i++) {
        if (except && !strcmp(nodes[i]->key, except)) {
            continue;
        }
        ds_put_format(out, "%s%s=", first ? "" : ", ", nodes[i]->key);
        first = false;
        /* Quote values with spaces so the line reads as key=value pairs. */
        if (strpbrk(nodes[i]->value, " ,")) {
            ds_put_format(out, "\"%s\"", nodes[i]->value);
        } else {
            ds_put_cstr(out, nodes[i]->value);
        }
    }
    free(nodes);
    ds_put_char(out, '\n');
}

static void
show_smap(struct ds *out, int indent, const char *label, const struct smap *map)
{
    show_smap_except(out, indent, label, map, NULL);
}

static void
show_optional_int(struct ds *out, const char *label, const int64_t *v, size_t n, const char *unit)
{
    if (n) {
        ds_put_format(out, "%s%"PRId64"%s", label, *v, unit);
    } else {
        ds_put_format(out, "%s(unset)", label);
    }
}

static void
show_port(struct ds *out, const struct capsulerec_port *port)
{
    ds_put_format(out, "        Port \"%s\"\n", port->name);
    ds_put_format(out, "            vhost: %s (%s)\n", port->vhost_path,
                  port->vhost_mode ? port->vhost_mode : "client");
    if (port->mac) {
        ds_put_format(out, "            mac: %s\n", port->mac);
    }
    if (port->qos) {
        ds_put_format(out, "            qos: %s", port->qos->type);
        const struct smap_node **nodes = smap_sort(&port->qos->other_config);
        for (size_t i = 0; i < smap_count(&port->qos->other_config); i++) {
            ds_put_format(out, " %s=%s", nodes[i]->key, nodes[i]->value);
        }
        free(nodes);
        /* OVS's directions: QoS polices what the switch sends to the VM. */
        ds_put_cstr(out, " (what the VM receives)\n");
    }
    if (port->ingress_policing_rate || port->ingress_policing_kpkts_rate) {
        ds_put_format(out, "            ingress_policing: %"PRId64" kbps burst %"PRId64
                      " kb, %"PRId64" kpps burst %"PRId64" kpkts (what the VM sends)\n",
                      port->ingress_policing_rate, port->ingress_policing_burst,
                      port->ingress_policing_kpkts_rate, port->ingress_policing_kpkts_burst);
    }
    show_smap(out, 12, "status", &port->status);
}

static int
compare_vm_names(const void *a_, const void *b_)
{
    const struct capsulerec_vm *const *a = a_, *const *b = b_;
    return strcmp((*a)->name, (*b)->name);
}

static int
compare_host_names(const void *a_, const void *b_)
{
    const struct capsulerec_host *const *a = a_, *const *b = b_;
    return strcmp((*a)->chassis, (*b)->chassis);
}

static void
show_vms_of(struct ctl_context *ctx, const char *chassis)
{
    const struct capsulerec_vm *vm;
    size_t n = 0, allocated = 0;
    const struct capsulerec_vm **vms = NULL;
    CAPSULEREC_VM_FOR_EACH (vm, ctx->idl) {
        if (!strcmp(vm->chassis, chassis)) {
            if (n >= allocated) {
                vms = x2nrealloc(vms, &allocated, sizeof *vms);
            }
            vms[n++] = vm;
        }
    }
    if (n) {
        qsort(vms, n, sizeof *vms, compare_vm_names);
    }
    struct ds *out = &ctx->output;
    for (size_t i = 0; i < n; i++) {
        vm = vms[i];
        ds_put_format(out, "    VM \"%s\"\n", vm->name);
        if (vm->n_pid) {
            ds_put_format(out, "        pid: %"PRId64"\n", vm->pid[0]);
        }
        if (vm->pidfile) {
            ds_put_format(out, "        pidfile: %s\n", vm->pidfile);
        }
        if (vm->n_enabled && !vm->enabled[0]) {
            ds_put_cstr(out, "        enabled: false\n");
        }
        ds_put_cstr(out, "        reservation: ");
        show_optional_int(out, "vcpu ", vm->vcpu_runtime_us, vm->n_vcpu_runtime_us, " us");
        show_optional_int(out, ", period ", vm->period_us, vm->n_period_us, " us");
        if (vm->n_deadline_us) {
            ds_put_format(out, ", deadline %"PRId64" us", vm->deadline_us[0]);
        }
        if (vm->net_budget && !strcmp(vm->net_budget, "auto")) {
            ds_put_format(out, ", net auto (+%g %% margin)",
                          vm->n_net_margin ? vm->net_margin[0] * 100 : 30.0);  /* kDefaultNetMargin */
        } else if (vm->n_net_runtime_us) {
            ds_put_format(out, ", net %"PRId64" us", vm->net_runtime_us[0]);
        }
        if (vm->n_reclaim && vm->reclaim[0]) {
            ds_put_cstr(out, ", reclaim");
        }
        ds_put_char(out, '\n');
        const char *derived = smap_get(&vm->status, "net_budget");
        if (derived) {
            ds_put_format(out, "        net budget: %s\n", derived);
        }
        show_smap(out, 8, "options", &vm->options);
        show_smap_except(out, 8, "status", &vm->status, "net_budget");
        for (size_t j = 0; j < vm->n_ports; j++) {
            show_port(out, vm->ports[j]);
        }
    }
    free(vms);
}

static void
cmd_show(struct ctl_context *ctx)
{
    struct ds *out = &ctx->output;
    const struct capsulerec_host *host;
    struct sset shown = SSET_INITIALIZER(&shown);
    size_t n_hosts = 0, allocated = 0;
    const struct capsulerec_host **hosts = NULL;
    CAPSULEREC_HOST_FOR_EACH (host, ctx->idl) {
        if (n_hosts >= allocated) {
            hosts = x2nrealloc(hosts, &allocated, sizeof *hosts);
        }
        hosts[n_hosts++] = host;
    }
    if (n_hosts) {
        qsort(hosts, n_hosts, sizeof *hosts, compare_host_names);
    }
    for (size_t h = 0; h < n_hosts; h++) {
        host = hosts[h];
        sset_add(&shown, host->chassis);
        ds_put_format(out, "Host \"%s\"\n", host->chassis);
        ds_put_format(out, "    datapath_type: %s\n",
                      host->datapath_type ? host->datapath_type : "capsule");
        ds_put_format(out, "    admission: %s",
                      host->admission_mode ? host->admission_mode : "global");
        if (host->n_utilization_bound) {
            ds_put_format(out, ", bound %g", host->utilization_bound[0]);
        }
        if (host->capsule_cpus) {
            ds_put_format(out, ", cpus %s", host->capsule_cpus);
        }
        ds_put_char(out, '\n');
        ds_put_format(out, "    cfg: next %"PRId64", cur %"PRId64"%s\n", host->next_cfg,
                      host->cur_cfg, host->cur_cfg >= host->next_cfg ? "" : " (applying)");
        show_smap(out, 4, "status", &host->status);
        show_smap(out, 4, "capabilities", &host->capabilities);
        if (host->n_calibration) {
            ds_put_cstr(out, "    calibration (the datapath thread's cost curve):\n");
            calibration_describe(host, 6, out);
        }
        show_vms_of(ctx, host->chassis);
    }
    free(hosts);
    /* VMs that name a chassis without a Host row: nobody applies them. */
    const struct capsulerec_vm *vm;
    CAPSULEREC_VM_FOR_EACH (vm, ctx->idl) {
        if (!sset_contains(&shown, vm->chassis)) {
            sset_add(&shown, vm->chassis);
            ds_put_format(out, "Chassis \"%s\" (no Host row: no capsuled has claimed it)\n",
                          vm->chassis);
            show_vms_of(ctx, vm->chassis);
        }
    }
    sset_destroy(&shown);
}

/* ---- What to monitor --------------------------------------------------- */

/* What the commands of this invocation read. Each command's prerequisites
 * function says: db-ctl-base's generic ones (list, get, set, find, create,
 * ...) add the tables and columns they use and read those tables whole;
 * show and calibrate read the whole database; capsule's row-targeted
 * commands record the rows they name.
 *
 * When every command is row-targeted, the rows are chosen by conditions
 * (RFC 7047 monitor_cond, a disjunction of clauses per table), sent with the
 * first monitor request:
 *   Host         chassis == --chassis (every Host row without --chassis: add-vm
 *                and --wait pick "the only one"); none if no command needs it
 *   VM           name == each named VM; with --wait also chassis == --chassis
 *                (a rejection of any VM of the host in that configuration is
 *                reported, as before)
 *   Port         name == each named port
 *   QoS, Calibration   none (set-qos replaces Port:qos; the old row goes
 *                with its last reference)
 * add-port and del-port also need the VM that owns a named port: once the
 * ports have arrived, the VM condition is widened by "ports includes UUID"
 * (one more round trip), and the commands run when the server has
 * acknowledged it. */
struct monitor_scope {
    bool all;                 /* show, calibrate: every table and column */
    bool generic;             /* a command that reads whole tables */
    bool targeted;            /* set by a row-targeted command's prerequisites */
    bool conditional;         /* the conditions above are in force */
    struct sset vms;          /* VM names */
    struct sset ports;        /* Port names */
    bool host;                /* the target Host row (add-vm) */
    bool port_owners;         /* the VMs that own the named ports */
    unsigned int owner_cond_seqno;  /* 0: the owners not asked for yet */
    bool owners_known;        /* every named port's owner (if any) is here */
};
static struct monitor_scope scope = {
    .vms = SSET_INITIALIZER(&scope.vms),
    .ports = SSET_INITIALIZER(&scope.ports),
};

static void
pre_everything(struct ctl_context *ctx OVS_UNUSED)
{
    scope.all = true;
}

/* add-vm VM ...: the VM if it exists (--may-exist), else the target host. */
static void
pre_add_vm(struct ctl_context *ctx)
{
    scope.targeted = true;
    sset_add(&scope.vms, ctx->argv[1]);
    scope.host = true;
}

/* del-vm VM, set-rsv VM ...: the VM only. */
static void
pre_named_vm(struct ctl_context *ctx)
{
    scope.targeted = true;
    sset_add(&scope.vms, ctx->argv[1]);
}

/* add-port VM PORT ...: the VM, the port if it exists, and its owner. */
static void
pre_add_port(struct ctl_context *ctx)
{
    scope.targeted = true;
    sset_add(&scope.vms, ctx->argv[1]);
    sset_add(&scope.ports, ctx->argv[2]);
    scope.port_owners = true;
}

/* del-port [VM] PORT: the port, its owner, and the VM named. */
static void
pre_del_port(struct ctl_context *ctx)
{
    scope.targeted = true;
    if (ctx->argc == 3) {
        sset_add(&scope.vms, ctx->argv[1]);
    }
    sset_add(&scope.ports, ctx->argv[ctx->argc - 1]);
    scope.port_owners = true;
}

/* set-qos PORT ...: the port only. */
static void
pre_set_qos(struct ctl_context *ctx)
{
    scope.targeted = true;
    sset_add(&scope.ports, ctx->argv[1]);
}

/* The VM condition: the named VMs, the host's VMs for --wait, and the
 * owners of `owned` ports (n_owned UUIDs). */
static unsigned int
set_vm_condition(struct ovsdb_idl *idl, struct uuid **owned, size_t n_owned)
{
    struct ovsdb_idl_condition cond = OVSDB_IDL_CONDITION_INIT(&cond);
    const char *name;
    SSET_FOR_EACH (name, &scope.vms) {
        capsulerec_vm_add_clause_name(&cond, OVSDB_F_EQ, name);
    }
    if (wait_for_reload && chassis_opt) {
        capsulerec_vm_add_clause_chassis(&cond, OVSDB_F_EQ, chassis_opt);
    }
    for (size_t i = 0; i < n_owned; i++) {
        capsulerec_vm_add_clause_ports(&cond, OVSDB_F_INCLUDES, &owned[i], 1);
    }
    unsigned int seqno = capsulerec_vm_set_condition(idl, &cond);
    ovsdb_idl_condition_destroy(&cond);
    return seqno;
}

static void
add_all_columns(struct ovsdb_idl *idl, enum capsulerec_table_id t)
{
    const struct ovsdb_idl_table_class *tc = &capsulerec_table_classes[t];
    ovsdb_idl_add_table(idl, tc);
    for (size_t i = 0; i < tc->n_columns; i++) {
        ovsdb_idl_add_column(idl, &tc->columns[i]);
    }
}

/* Before the first connection: the tables, columns and conditions above. */
static void
monitor_scope_apply(struct ovsdb_idl *idl)
{
    if (scope.all) {
        for (int t = 0; t < CAPSULEREC_N_TABLES; t++) {
            add_all_columns(idl, t);
        }
        return;
    }
    if (wait_for_reload) {
        /* The target host (target_host(), next_cfg, cur_cfg) and the
         * rejections of its VMs (report_rejections()). */
        ovsdb_idl_add_column(idl, &capsulerec_host_col_chassis);
        ovsdb_idl_add_column(idl, &capsulerec_host_col_next_cfg);
        ovsdb_idl_add_column(idl, &capsulerec_host_col_cur_cfg);
        ovsdb_idl_add_column(idl, &capsulerec_vm_col_name);
        ovsdb_idl_add_column(idl, &capsulerec_vm_col_chassis);
        ovsdb_idl_add_column(idl, &capsulerec_vm_col_status);
    }
    if (scope.targeted) {
        /* Few rows: every column of them (what set_columns() may touch). */
        add_all_columns(idl, CAPSULEREC_TABLE_HOST);
        add_all_columns(idl, CAPSULEREC_TABLE_VM);
        add_all_columns(idl, CAPSULEREC_TABLE_PORT);
    }
    if (scope.generic || !scope.targeted) {
        return;
    }
    scope.conditional = true;

    struct ovsdb_idl_condition cond = OVSDB_IDL_CONDITION_INIT(&cond);
    if (chassis_opt) {
        capsulerec_host_add_clause_chassis(&cond, OVSDB_F_EQ, chassis_opt);
    } else if (scope.host || wait_for_reload) {
        ovsdb_idl_condition_add_clause_true(&cond);
    }
    capsulerec_host_set_condition(idl, &cond);
    ovsdb_idl_condition_destroy(&cond);

    /* --wait without --chassis: "the only Host row"'s VMs are all of them. */
    if (!wait_for_reload || chassis_opt) {
        set_vm_condition(idl, NULL, 0);
    }

    ovsdb_idl_condition_init(&cond);
    const char *name;
    SSET_FOR_EACH (name, &scope.ports) {
        capsulerec_port_add_clause_name(&cond, OVSDB_F_EQ, name);
    }
    capsulerec_port_set_condition(idl, &cond);
    ovsdb_idl_condition_destroy(&cond);

    /* Port:qos and Host:calibration refer to these tables, which makes the
     * IDL replicate their rows' UUIDs: none of them is needed. */
    ovsdb_idl_condition_init(&cond);
    capsulerec_qos_set_condition(idl, &cond);
    capsulerec_calibration_set_condition(idl, &cond);
    ovsdb_idl_condition_destroy(&cond);
}

/* After a snapshot: whether every row the commands need is here. Asks for
 * the owners of the named ports the first time it is called. */
static bool
monitor_scope_ready(struct ovsdb_idl *idl)
{
    if (!scope.conditional || !scope.port_owners || scope.owners_known
        || (wait_for_reload && !chassis_opt)) {  /* every VM is monitored */
        return true;
    }
    if (!scope.owner_cond_seqno) {
        struct uuid **owned = NULL;
        size_t n = 0;
        const struct capsulerec_port *port;
        CAPSULEREC_PORT_FOR_EACH (port, idl) {
            if (!port_owner(idl, port)) {
                owned = xrealloc(owned, (n + 1) * sizeof *owned);
                owned[n++] = CONST_CAST(struct uuid *, &port->header_.uuid);
            }
        }
        if (!n) {
            scope.owners_known = true;  /* none, or owned by VMs we have */
            return true;
        }
        scope.owner_cond_seqno = set_vm_condition(idl, owned, n);
        free(owned);
    }
    scope.owners_known = ovsdb_idl_get_condition_seqno(idl) == scope.owner_cond_seqno;
    return scope.owners_known;
}

/* How many rows the IDL holds, per table: at debug level, so that a test
 * can check that a targeted command pulled no other host's rows. */
static size_t
count_rows(struct ovsdb_idl *idl, const struct ovsdb_idl_table_class *table)
{
    size_t n = 0;
    for (const struct ovsdb_idl_row *row = ovsdb_idl_first_row(idl, table);
         row; row = ovsdb_idl_next_row(row)) {
        n++;
    }
    return n;
}

static void
log_replicated_rows(struct ovsdb_idl *idl, const char *when)
{
    if (!VLOG_IS_DBG_ENABLED()) {
        return;
    }
    size_t n_host = count_rows(idl, &capsulerec_table_host);
    size_t n_vm = count_rows(idl, &capsulerec_table_vm);
    size_t n_port = count_rows(idl, &capsulerec_table_port);
    size_t n_qos = count_rows(idl, &capsulerec_table_qos);
    size_t n_calibration = count_rows(idl, &capsulerec_table_calibration);
    VLOG_DBG("%s: rows replicated (%s): Host %"PRIuSIZE", VM %"PRIuSIZE", Port %"PRIuSIZE
             ", QoS %"PRIuSIZE", Calibration %"PRIuSIZE, when,
             scope.conditional ? "named rows" : "whole tables",
             n_host, n_vm, n_port, n_qos, n_calibration);
}

/* ---- Transaction ------------------------------------------------------ */

static void
run_prerequisites(struct ctl_command *commands, size_t n_commands, struct ovsdb_idl *idl)
{
    for (struct ctl_command *c = commands; c < &commands[n_commands]; c++) {
        bool was_targeted = scope.targeted;
        scope.targeted = false;
        bool was_all = scope.all;
        scope.all = false;
        if (c->syntax->prerequisites) {
            struct ctl_context ctx;
            ds_init(&c->output);
            c->table = NULL;
            ctl_context_init(&ctx, c, idl, NULL, NULL, NULL);
            (c->syntax->prerequisites)(&ctx);
            if (ctx.error) {
                ctl_fatal("%s", ctx.error);
            }
            ctl_context_done(&ctx, c);
            ovs_assert(!c->output.string);
            ovs_assert(!c->table);
        }
        /* Not one of capsule's row-targeted commands: whole tables. */
        if (!scope.targeted) {
            scope.generic = true;
        }
        scope.targeted = was_targeted || scope.targeted;
        scope.all = was_all || scope.all;
    }
}

/* After --wait: VMs that capsuled rejected while applying `cfg` (it stamps
 * status:cfg on every VM it evaluated for that configuration). */
static int
report_rejections(struct ovsdb_idl *idl, const char *chassis, int64_t cfg)
{
    int n = 0;
    const struct capsulerec_vm *vm;
    CAPSULEREC_VM_FOR_EACH (vm, idl) {
        const char *state = smap_get(&vm->status, "state");
        if (strcmp(vm->chassis, chassis) || !state || strcmp(state, "rejected")) {
            continue;
        }
        long long stamped;
        const char *s = smap_get(&vm->status, "cfg");
        if (s && str_to_llong(s, 10, &stamped) && stamped == cfg) {
            fprintf(stderr, "%s: VM %s rejected: %s\n", program_name, vm->name,
                    smap_get_def(&vm->status, "reason", "(no reason given)"));
            n++;
        }
    }
    return n;
}

static void
print_outputs(struct ctl_command *commands, size_t n_commands)
{
    for (struct ctl_command *c = commands; c < &commands[n_commands]; c++) {
        struct ds *ds = &c->output;
        if (c->table) {
            table_print(c->table, &table_style);
        } else if (oneline) {
            ds_chomp(ds, '\n');
            for (size_t j = 0; j < ds->length; j++) {
                int ch = ds->string[j];
                if (ch == '\n') {
                    fputs("\\n", stdout);
                } else if (ch == '\\') {
                    fputs("\\\\", stdout);
                } else {
                    putchar(ch);
                }
            }
            putchar('\n');
        } else {
            fputs(ds_cstr(ds), stdout);
        }
        ds_destroy(&c->output);
        table_destroy(c->table);
        free(c->table);
        shash_destroy_free_data(&c->options);
    }
    fflush(stdout);
}

static bool
do_capsule_ctl(const char *args, struct ctl_command *commands, size_t n_commands,
               struct ovsdb_idl *idl)
{
    struct ovsdb_idl_txn *txn = the_idl_txn = ovsdb_idl_txn_create(idl);
    if (dry_run) {
        ovsdb_idl_txn_set_dry_run(txn);
    }
    ovsdb_idl_txn_add_comment(txn, "capsule-ctl: %s", args);
    log_replicated_rows(idl, "transaction");

    const struct capsulerec_host *wait_host = NULL;
    char *wait_chassis = NULL;
    if (wait_for_reload && ctl_might_write_to_db(commands, n_commands)) {
        char *error;
        wait_host = target_host(idl, &error);
        if (!wait_host) {
            ctl_fatal("--wait: %s", error);
        }
        wait_chassis = xstrdup(wait_host->chassis);
        ovsdb_idl_txn_increment(txn, &wait_host->header_, &capsulerec_host_col_next_cfg, false);
    }

    struct ovsdb_symbol_table *symtab = ovsdb_symbol_table_create();
    for (struct ctl_command *c = commands; c < &commands[n_commands]; c++) {
        ds_init(&c->output);
        c->table = NULL;
    }
    struct ctl_context ctx;
    ctl_context_init(&ctx, NULL, idl, txn, symtab, NULL);
    for (struct ctl_command *c = commands; c < &commands[n_commands]; c++) {
        ctl_context_init_command(&ctx, c, c == &commands[n_commands - 1]);
        if (c->syntax->run) {
            (c->syntax->run)(&ctx);
        }
        if (ctx.error) {
            ctl_fatal("%s", ctx.error);
        }
        ctl_context_done_command(&ctx, c);
        if (ctx.try_again) {
            ctl_context_done(&ctx, NULL);
            goto try_again;
        }
    }
    ctl_context_done(&ctx, NULL);

    struct shash_node *node;
    SHASH_FOR_EACH (node, &symtab->sh) {
        struct ovsdb_symbol *symbol = node->data;
        if (!symbol->created) {
            ctl_fatal("row id \"%s\" is referenced but never created (e.g. "
                      "with \"-- --id=%s create ...\")", node->name, node->name);
        }
        if (!symbol->strong_ref && !symbol->weak_ref) {
            VLOG_WARN("row id \"%s\" was created but no reference to it was "
                      "inserted, so it will not actually appear in the database",
                      node->name);
        }
    }

    enum ovsdb_idl_txn_status status = ovsdb_idl_txn_commit_block(txn);
    int64_t next_cfg = 0;
    if (wait_host && status == TXN_SUCCESS) {
        next_cfg = ovsdb_idl_txn_get_increment_new_value(txn);
    }
    if (status == TXN_UNCHANGED || status == TXN_SUCCESS) {
        for (struct ctl_command *c = commands; c < &commands[n_commands]; c++) {
            if (c->syntax->postprocess) {
                ctl_context_init(&ctx, c, idl, txn, symtab, NULL);
                (c->syntax->postprocess)(&ctx);
                if (ctx.error) {
                    ctl_fatal("%s", ctx.error);
                }
                ctl_context_done(&ctx, c);
            }
        }
    }
    switch (status) {
    case TXN_UNCOMMITTED:
    case TXN_INCOMPLETE:
        OVS_NOT_REACHED();
    case TXN_ABORTED:
        ctl_fatal("transaction aborted");
    case TXN_UNCHANGED:
    case TXN_SUCCESS:
        break;
    case TXN_TRY_AGAIN:
        free(wait_chassis);
        goto try_again;
    case TXN_ERROR:
        ctl_fatal("transaction error: %s", ovsdb_idl_txn_get_error(txn));
    case TXN_NOT_LOCKED:
        ctl_fatal("database not locked");
    default:
        OVS_NOT_REACHED();
    }
    ovsdb_symbol_table_destroy(symtab);
    print_outputs(commands, n_commands);
    free(commands);

    int exit_code = EXIT_SUCCESS;
    if (wait_host && status == TXN_SUCCESS) {
        /* Wait for capsuled to catch up (cur_cfg >= next_cfg). */
        ovsdb_idl_enable_reconnect(idl);
        for (;;) {
            ovsdb_idl_run(idl);
            cluster_session_run(&the_session, idl);
            const struct capsulerec_host *host;
            bool done = false;
            CAPSULEREC_HOST_FOR_EACH (host, idl) {
                if (!strcmp(host->chassis, wait_chassis) && host->cur_cfg >= next_cfg) {
                    done = true;
                }
            }
            if (done) {
                log_replicated_rows(idl, "applied");
                if (report_rejections(idl, wait_chassis, next_cfg)) {
                    exit_code = EXIT_FAILURE;
                }
                break;
            }
            ovsdb_idl_wait(idl);
            cluster_session_wait(&the_session);
            poll_block();
        }
    }
    free(wait_chassis);
    ovsdb_idl_txn_destroy(txn);
    the_idl_txn = NULL;
    if (exit_code != EXIT_SUCCESS) {
        capsule_ctl_exit(exit_code);
    }
    ovsdb_idl_destroy(idl);
    the_idl = NULL;
    return true;

try_again:
    ovsdb_idl_txn_abort(txn);
    ovsdb_idl_txn_destroy(txn);
    the_idl_txn = NULL;
    ovsdb_symbol_table_destroy(symtab);
    for (struct ctl_command *c = commands; c < &commands[n_commands]; c++) {
        ds_destroy(&c->output);
        table_destroy(c->table);
        free(c->table);
    }
    return false;
}

/* ---- Registration ----------------------------------------------------- */

static const struct ctl_table_class tables[CAPSULEREC_N_TABLES] = {
    [CAPSULEREC_TABLE_HOST].row_ids[0] = {&capsulerec_host_col_chassis, NULL, NULL},
    [CAPSULEREC_TABLE_VM].row_ids[0] = {&capsulerec_vm_col_name, NULL, NULL},
    [CAPSULEREC_TABLE_PORT].row_ids[0] = {&capsulerec_port_col_name, NULL, NULL},
    [CAPSULEREC_TABLE_QOS].row_ids[0] = {&capsulerec_port_col_name, NULL, &capsulerec_port_col_qos},
};

static const struct ctl_command_syntax capsule_commands[] = {
    {"show", 0, 0, "", pre_everything, cmd_show, NULL, "", RO},
    {"add-vm", 1, INT_MAX, "VM [COLUMN[:KEY]=VALUE]...", pre_add_vm, cmd_add_vm, NULL,
     "--may-exist", RW},
    {"del-vm", 1, 1, "VM", pre_named_vm, cmd_del_vm, NULL, "--if-exists", RW},
    {"add-port", 3, INT_MAX, "VM PORT VHOST_PATH [COLUMN[:KEY]=VALUE]...", pre_add_port,
     cmd_add_port, NULL, "--may-exist", RW},
    {"del-port", 1, 2, "[VM] PORT", pre_del_port, cmd_del_port, NULL, "--if-exists", RW},
    {"set-rsv", 3, 4, "VM RUNTIME PERIOD [DEADLINE]", pre_named_vm, cmd_set_rsv, NULL,
     "--net=,--net-margin=", RW},
    {"calibrate", 0, 0, "", pre_calibrate, cmd_calibrate, NULL,
     "--period=,--budgets=,--frame-sizes=,--directions=,--seconds=,--runs=", RW},
    {"set-qos", 2, INT_MAX, "PORT TYPE [KEY=VALUE]...", pre_set_qos, cmd_set_qos, NULL,
     "", RW},
    {NULL, 0, 0, NULL, NULL, NULL, NULL, NULL, RO},
};

static void
capsule_ctl_cmd_init(void)
{
    /* No cmd_show_tables: "show" is capsule's own (it prints status). */
    ctl_init(&capsulerec_idl_class, capsulerec_table_classes, tables, NULL, capsule_ctl_exit);
    ctl_register_commands(capsule_commands);
}
