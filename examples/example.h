/*
 * Helpers the examples share: start a handle on one Consul server, and
 * drain the library's log records to stderr. Everything else an example
 * does is in its own file.
 */
#ifndef CKV_EXAMPLE_H
#define CKV_EXAMPLE_H

#include <stdio.h>
#include <stdlib.h>

#include "ckv.h"

/* Starts a handle watching `prefix` on `server`. Returns NULL (after
 * printing why) on failure. The handle watches Consul alone: a handle
 * shares a watch only when its configuration names a share.group, and
 * "enabled": false says so explicitly. */
static ckv_handle *example_start(const char *server, const char *prefix)
{
    char config[1024];
    int n = snprintf(config, sizeof config,
                     "{\"servers\":[\"%s\"],\"prefix\":\"%s\",\"timeout\":{\"wait\":5},"
                     "\"share\":{\"enabled\":false}}",
                     server, prefix);
    if (n < 0 || (size_t)n >= sizeof config) {
        fprintf(stderr, "arguments too long\n");
        return NULL;
    }
    ckv_handle *h = NULL;
    uint8_t err[512];
    size_t err_len = sizeof err;
    enum ckv_status rc = ckv_init((const uint8_t *)config, (size_t)n, &h, err, &err_len);
    if (rc != CKV_OK) {
        fprintf(stderr, "ckv_init: %s: %.*s\n", ckv_status_str(rc), (int)err_len,
                (const char *)err);
        return NULL;
    }
    return h;
}

/* Writes every queued log record to stderr. A record longer than the
 * buffer is kept by the library and reported with its size; print that. */
static void example_drain_logs(const ckv_handle *h)
{
    uint8_t buf[2048];
    size_t len;
    int32_t level;
    for (;;) {
        enum ckv_status rc = ckv_log_next(h, buf, sizeof buf, &len, &level);
        if (rc == CKV_OK) {
            fprintf(stderr, "[log %d] %.*s\n", (int)level, (int)len, (const char *)buf);
        } else if (rc == CKV_ERR_BUFFER_TOO_SMALL) {
            /* Read it with a bigger buffer; here, just show its start. */
            uint8_t *big = malloc(len);
            if (big == NULL || ckv_log_next(h, big, len, &len, &level) != CKV_OK) {
                free(big);
                return;
            }
            fprintf(stderr, "[log %d] %.*s\n", (int)level, (int)len, (const char *)big);
            free(big);
        } else {
            return;
        }
    }
}

#endif
