/*
 * watch: prints the services and nodes that ckv sees in Consul KV, once at
 * start and again whenever they change.
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

#include "ckv.h"

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void drain_logs(const ckv_handle *h)
{
    uint8_t buf[2048];
    size_t len;
    int32_t level;
    while (ckv_log_next(h, buf, sizeof buf, &len, &level) == CKV_OK) {
        fprintf(stderr, "[log %d] %.*s\n", (int)level, (int)len, (const char *)buf);
    }
}

/* Prints all services; grows the buffer as the library asks. */
static int print_services(const ckv_handle *h, unsigned change)
{
    size_t cap = 4096, len = 0;
    uint64_t seq = 0;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) {
        return -1;
    }
    enum ckv_status rc;
    while ((rc = ckv_all_nodes(h, buf, cap, &len, &seq)) == CKV_ERR_BUFFER_TOO_SMALL) {
        uint8_t *bigger = realloc(buf, len);
        if (bigger == NULL) {
            free(buf);
            return -1;
        }
        buf = bigger;
        cap = len;
    }
    if (rc != CKV_OK) {
        fprintf(stderr, "ckv_all_nodes: %s\n", ckv_status_str(rc));
        free(buf);
        return -1;
    }
    printf("change %u (snapshot %llu): %.*s\n", change, (unsigned long long)seq,
           (int)len, (const char *)buf);
    fflush(stdout);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s http://host:port [prefix] [--changes N] [--seconds S]\n",
                argv[0]);
        return 2;
    }
    const char *server = argv[1];
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

    char config[1024];
    int n = snprintf(config, sizeof config,
                     "{\"servers\":[\"%s\"],\"prefix\":\"%s\",\"timeout\":{\"wait\":5},"
                     "\"share\":{\"enabled\":false}}",
                     server, prefix);
    if (n < 0 || (size_t)n >= sizeof config) {
        fprintf(stderr, "arguments too long\n");
        return 2;
    }

    printf("%s, ABI %u\n", ckv_version(), (unsigned)ckv_abi_version());
    ckv_handle *h = NULL;
    uint8_t err[512];
    size_t err_len = sizeof err;
    enum ckv_status rc = ckv_init((const uint8_t *)config, (size_t)n, &h, err, &err_len);
    if (rc != CKV_OK) {
        fprintf(stderr, "ckv_init: %s: %.*s\n", ckv_status_str(rc), (int)err_len,
                (const char *)err);
        return 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    /* Pull-style: read the generation counter; fetch only when it moved. */
    const uint32_t *generation = ckv_generation_ptr(h);
    uint32_t seen = *generation;
    unsigned changes = 0;
    int status = 0;
    print_services(h, changes);
    struct timespec tick = {0, 5 * 1000 * 1000};
    time_t start = time(NULL);
    while (!stop) {
        drain_logs(h);
        uint32_t now = __atomic_load_n(generation, __ATOMIC_ACQUIRE);
        if (now != seen) {
            seen = now;
            changes++;
            if (print_services(h, changes) != 0) {
                status = 1;
                break;
            }
            if (max_changes >= 0 && (long)changes >= max_changes) {
                break;
            }
        }
        if (max_seconds >= 0 && time(NULL) - start >= max_seconds) {
            break;
        }
        nanosleep(&tick, NULL);
    }

    rc = ckv_shutdown(h, 2000);
    drain_logs(h);
    if (rc != CKV_OK) {
        fprintf(stderr, "ckv_shutdown: %s\n", ckv_status_str(rc));
        status = 1;
    }
    ckv_free(h);
    return status;
}
