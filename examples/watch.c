/*
 * watch: prints the services and nodes that ckv sees in Consul KV, once at
 * start and again whenever they change. Uses the typed API only: a service
 * list pins one snapshot, and node lists are read from it field by field.
 *
 *   watch http://127.0.0.1:8500 [prefix] [--changes N] [--seconds S]
 *
 * Exits after N changes (--changes) or S seconds (--seconds), or on
 * SIGINT/SIGTERM, always through ckv_shutdown + ckv_free.
 */
#define _POSIX_C_SOURCE 200809L

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "example.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void print_node(const ckv_node *n)
{
    printf("    %.*s:%u weight=%u", (int)n->host_len, (const char *)n->host,
           (unsigned)n->port, (unsigned)n->weight);
    if (n->present & CKV_NODE_HAS_MAX_FAILS) {
        printf(" max_fails=%llu", (unsigned long long)n->max_fails);
    }
    if (n->present & CKV_NODE_HAS_FAIL_TIMEOUT) {
        printf(" fail_timeout=%g", n->fail_timeout);
    }
    if (n->present & CKV_NODE_HAS_PRIORITY) {
        printf(" priority=%lld", (long long)n->priority);
    }
    if (n->metadata != NULL) {
        printf(" metadata=%.*s", (int)n->metadata_len, (const char *)n->metadata);
    }
    printf("\n");
}

/* Prints every service of one snapshot. */
static int print_services(const ckv_handle *h, unsigned change)
{
    const ckv_service_list *services = NULL;
    enum ckv_status rc = ckv_services_get(h, &services);
    if (rc != CKV_OK) {
        fprintf(stderr, "ckv_services_get: %s\n", ckv_status_str(rc));
        return -1;
    }
    size_t count = ckv_service_list_len(services);
    printf("change %u (snapshot %llu): %zu services\n", change,
           (unsigned long long)ckv_service_list_seq(services), count);
    for (size_t i = 0; i < count; i++) {
        const uint8_t *name;
        size_t name_len;
        const ckv_node_list *nodes = NULL;
        if (ckv_service_list_name(services, i, &name, &name_len) != CKV_OK ||
            ckv_service_list_nodes(services, i, &nodes) != CKV_OK) {
            fprintf(stderr, "service %zu vanished from a pinned list\n", i);
            ckv_service_list_free(services);
            return -1;
        }
        size_t len = ckv_node_list_len(nodes);
        printf("  %.*s (generation %llu): %zu nodes\n", (int)name_len, (const char *)name,
               (unsigned long long)ckv_node_list_generation(nodes), len);
        for (size_t j = 0; j < len; j++) {
            ckv_node node;
            if (ckv_node_list_get(nodes, j, &node) == CKV_OK) {
                print_node(&node);
            }
        }
        ckv_node_list_free(nodes);
    }
    fflush(stdout);
    ckv_service_list_free(services);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s http://host:port [prefix] [--changes N] [--seconds S]\n",
                argv[0]);
        return 2;
    }
    const char *prefix = "upstreams";
    long max_changes = -1, max_seconds = -1;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--changes") == 0 && i + 1 < argc) {
            max_changes = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            max_seconds = strtol(argv[++i], NULL, 10);
        } else {
            prefix = argv[i];
        }
    }

    printf("%s, ABI %u\n", ckv_version(), (unsigned)ckv_abi_version());
    ckv_handle *h = example_start(argv[1], prefix);
    if (h == NULL) {
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* Block in ckv_wait_change; wake every 200 ms to drain logs and check
     * the stop flag (a signal does not interrupt the wait). */
    uint64_t seen = ckv_change_seq(h);
    unsigned changes = 0;
    int status = print_services(h, changes) == 0 ? 0 : 1;
    time_t start = time(NULL);
    while (!stop && status == 0) {
        example_drain_logs(h);
        uint64_t now;
        enum ckv_status rc = ckv_wait_change(h, seen, 200, &now);
        if (rc == CKV_OK) {
            seen = now;
            changes++;
            if (print_services(h, changes) != 0) {
                status = 1;
            }
            if (max_changes >= 0 && (long)changes >= max_changes) {
                break;
            }
        } else if (rc != CKV_ERR_TIMEOUT) {
            fprintf(stderr, "ckv_wait_change: %s\n", ckv_status_str(rc));
            status = 1;
        }
        if (max_seconds >= 0 && time(NULL) - start >= max_seconds) {
            break;
        }
    }

    enum ckv_status rc = ckv_shutdown(h, 2000);
    example_drain_logs(h);
    if (rc != CKV_OK) {
        fprintf(stderr, "ckv_shutdown: %s\n", ckv_status_str(rc));
        status = 1;
    }
    ckv_free(h);
    return status;
}
