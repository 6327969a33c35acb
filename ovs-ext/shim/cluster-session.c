#include <config.h>

#include "cluster-session.h"

#include <string.h>

#include "openvswitch/poll-loop.h"
#include "openvswitch/vlog.h"
#include "ovsdb-idl.h"
#include "random.h"
#include "timeval.h"
#include "util.h"

VLOG_DEFINE_THIS_MODULE(cluster_session);

void
cluster_session_init(struct cluster_session *s, const char *remote, int max_interval_ms)
{
    s->max_interval = MAX(max_interval_ms, CLUSTER_SESSION_RETRY_MS);
    s->remote = xstrdup(remote);
    s->down_since = 0;
    s->connected_since = 0;
    s->retry_at = 0;
    s->interval = CLUSTER_SESSION_RETRY_MS;
}

void
cluster_session_destroy(struct cluster_session *s)
{
    free(s->remote);
    s->remote = NULL;
}

/* "a,b,c" -> "b,c,a". ovsdb-cs shuffles the members anyway; a different
 * string is what makes ovsdb_idl_set_remote() start a new session rather
 * than take the call as a no-op. */
static void
rotate(char *list)
{
    char *comma = strchr(list, ',');
    if (!comma) {
        return;
    }
    size_t head = comma - list;
    char *first = xmemdup0(list, head);
    memmove(list, comma + 1, strlen(comma + 1) + 1);
    strcat(list, ",");
    strcat(list, first);
    free(first);
}

void
cluster_session_run(struct cluster_session *s, struct ovsdb_idl *idl)
{
    if (!strchr(s->remote, ',')) {
        return;
    }
    long long int now = time_msec();
    if (ovsdb_idl_is_connected(idl)) {
        /* A follower accepts the connection before ovsdb-cs learns it is
         * not the leader and drops it: only a connection that lasted the
         * current interval ends the backoff (OVS's reconnect rule), or an
         * election would restart it at CLUSTER_SESSION_RETRY_MS each turn. */
        if (!s->connected_since) {
            s->connected_since = now;
        }
        if (s->down_since && now - s->connected_since >= s->interval) {
            s->down_since = 0;
        }
        return;
    }
    s->connected_since = 0;
    /* The round interval doubles from CLUSTER_SESSION_RETRY_MS up to
     * max_interval, with up to 50 % random spread: a hundred agents that lost
     * the same leader must not all knock on the new one at the same instant,
     * or keep knocking while it takes over (measured: at 2 s rounds, 100
     * agents on 2 cores starved the new leader until it missed its
     * heartbeats, and the cluster kept re-electing). */
    if (!s->down_since) {
        s->down_since = now;
        s->interval = CLUSTER_SESSION_RETRY_MS;
        s->retry_at = now + s->interval + random_range(s->interval / 2);
    } else if (now >= s->retry_at) {
        rotate(s->remote);
        VLOG_DBG("no leader for %lld ms: trying the members again (%s)", now - s->down_since,
                 s->remote);
        ovsdb_idl_set_remote(idl, s->remote, true);
        s->interval = MIN(s->interval * 2, s->max_interval);
        s->retry_at = now + s->interval + random_range(s->interval / 2);
    }
}

void
cluster_session_wait(const struct cluster_session *s)
{
    if (s->down_since) {
        poll_timer_wait_until(s->connected_since ? s->connected_since + s->interval : s->retry_at);
    }
}

long long int
cluster_session_leaderless_ms(const struct cluster_session *s)
{
    return s->down_since ? time_msec() - s->down_since : 0;
}
