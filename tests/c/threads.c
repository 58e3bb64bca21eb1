/*
 * threads: 16 threads read one service through the typed API while the
 * Consul double churns it, and check that no view ever mixes two
 * snapshots. Built with clang -fsanitize=thread by examples/Makefile
 * (SAN=tsan) and run by tests/c/threads.sh.
 *
 *   threads http://127.0.0.1:8500 SECONDS
 *
 * The churner (threads.sh) writes every version v of the service "churn" in
 * one atomic write: (v % 5) + 1 nodes, each with metadata {"v":"<v>"} and
 * weight v. A view is consistent when all its nodes carry the same v and
 * there are exactly (v % 5) + 1 of them. Half of the threads take views in a
 * tight loop, the other half block in ckv_wait_change and take a view after
 * each change (checking that the sequence only grows). Exit status 0 when
 * every view was consistent and the readers saw the service change.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example.h"

#define THREADS 16

static ckv_handle *handle;
static char name[512];
static atomic_int stop;
static atomic_long views, inconsistent, changes, versions_seen;

/* Reads "v" from {"v":"123"}; -1 when absent. */
static long version_of(const ckv_node *n)
{
    const char *m = (const char *)n->metadata;
    if (m == NULL || m[n->metadata_len] != '\0') {
        return -1;
    }
    const char *at = strstr(m, "\"v\":\"");
    return at ? strtol(at + 5, NULL, 10) : -1;
}

/* Takes one view and checks it; returns its version (or -1). */
static long check_view(void)
{
    const ckv_node_list *list = NULL;
    if (ckv_nodes_get(handle, (const uint8_t *)name, strlen(name), &list) != CKV_OK) {
        return -1; /* not there yet */
    }
    size_t len = ckv_node_list_len(list);
    long v = -1;
    int ok = len > 0;
    for (size_t i = 0; i < len && ok; i++) {
        ckv_node n;
        if (ckv_node_list_get(list, i, &n) != CKV_OK) {
            ok = 0;
            break;
        }
        long nv = version_of(&n);
        if (i == 0) {
            v = nv;
        }
        ok = nv >= 0 && nv == v && n.weight == (uint32_t)nv && n.host[n.host_len] == '\0';
    }
    if (ok && len != (size_t)(v % 5) + 1) {
        ok = 0;
    }
    ckv_node_list_free(list);
    atomic_fetch_add(&views, 1);
    if (!ok) {
        atomic_fetch_add(&inconsistent, 1);
        fprintf(stderr, "inconsistent view: %zu nodes, first version %ld\n", len, v);
    }
    return v;
}

static void *reader(void *arg)
{
    (void)arg;
    long last = -1;
    while (!atomic_load(&stop)) {
        long v = check_view();
        if (v >= 0 && v != last) {
            atomic_fetch_add(&versions_seen, 1);
            last = v;
        }
    }
    return NULL;
}

static void *waiter(void *arg)
{
    (void)arg;
    uint64_t seen = 0;
    while (!atomic_load(&stop)) {
        uint64_t now;
        enum ckv_status rc = ckv_wait_change(handle, seen, 100, &now);
        if (rc == CKV_OK) {
            if (seen != 0 && now < seen) {
                fprintf(stderr, "sequence went back: %" PRIu64 " after %" PRIu64 "\n", now, seen);
                atomic_fetch_add(&inconsistent, 1);
            }
            seen = now;
            atomic_fetch_add(&changes, 1);
            check_view();
        } else if (rc != CKV_ERR_TIMEOUT) {
            fprintf(stderr, "ckv_wait_change: %s\n", ckv_status_str(rc));
            atomic_fetch_add(&inconsistent, 1);
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s http://host:port SECONDS\n", argv[0]);
        return 2;
    }
    snprintf(name, sizeof name, "%s/v1/kv/upstreams/churn/", argv[1]);
    handle = example_start(argv[1], "upstreams");
    if (handle == NULL) {
        return 1;
    }
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        if (pthread_create(&threads[i], NULL, i % 2 ? waiter : reader, NULL) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    struct timespec period = {strtol(argv[2], NULL, 10), 0};
    nanosleep(&period, NULL); /* the test's duration, not a synchronisation */
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
    }
    example_drain_logs(handle);
    ckv_free(handle);
    long bad = atomic_load(&inconsistent);
    printf("views=%ld inconsistent=%ld changes=%ld versions_seen=%ld\n", atomic_load(&views),
           bad, atomic_load(&changes), atomic_load(&versions_seen));
    if (bad != 0 || atomic_load(&changes) < 10 || atomic_load(&versions_seen) < 10) {
        fprintf(stderr, "threads: FAILED\n");
        return 1;
    }
    printf("threads: ok\n");
    return 0;
}
