/* Reaching a clustered database's leader quickly after it changed (C, OVS
 * headers; used by the shim and by capsule-ctl).
 *
 * OVS's client session tries each member of a remote list once for free,
 * then backs off exponentially, up to 8 s between tries. During a Raft
 * election every member refuses a leader-only client for a second or two
 * (followers until a new leader is elected, the dead leader always), so the
 * session is often deep in its backoff when a leader exists again: seconds
 * of needless unavailability. While an IDL on a list of remotes is not
 * connected, cluster_session_run() starts a new round over the members after
 * CLUSTER_SESSION_RETRY_MS, then at doubling intervals up to a maximum (OVS's
 * 8 s for the agents, of which there are hundreds; 1 s for capsule-ctl, one
 * client that someone waits for), spread at random (the same members, rotated: a new session with
 * fresh tries; the IDL keeps its rows and its last transaction id, so it
 * still asks only for what changed). A single remote is left to OVS. */
#ifndef CAPSULE_CLUSTER_SESSION_H
#define CAPSULE_CLUSTER_SESSION_H 1

#include <stdbool.h>

struct ovsdb_idl;

#define CLUSTER_SESSION_RETRY_MS 500

struct cluster_session {
    char *remote;              /* the list as the IDL has it now */
    long long int down_since;  /* when the IDL lost its leader, 0: it has one */
    long long int connected_since;  /* when the current connection came up, 0: none */
    long long int retry_at;
    int interval;              /* ms between rounds now */
    int max_interval;          /* ms, the most it grows to */
};

/* `max_interval_ms`: how far the interval between rounds may grow. */
void cluster_session_init(struct cluster_session *, const char *remote, int max_interval_ms);
void cluster_session_destroy(struct cluster_session *);
/* After ovsdb_idl_run(). The IDL must have been created with retry. */
void cluster_session_run(struct cluster_session *, struct ovsdb_idl *);
/* Before poll_block(): wakes up for the next round while not connected. */
void cluster_session_wait(const struct cluster_session *);
/* How long the members have been without a leader for this client, 0 while
 * it has one (or for a single remote). */
long long int cluster_session_leaderless_ms(const struct cluster_session *);

#endif
