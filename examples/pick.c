/*
 * pick: an event loop that load-balances over one service's nodes.
 *
 *   pick http://127.0.0.1:8500 SERVICE [prefix]
 *
 * One epoll loop waits on three descriptors:
 *  - ckv_notify_fd: the snapshot changed; if SERVICE changed, take a new
 *    node list and reset the balancer (prints "nodes ...");
 *  - stdin: commands, one per line: "pick N" prints the next N picks
 *    ("pick host:port"), "quit" leaves;
 *  - a signalfd for SIGINT/SIGTERM (signals are blocked, so no handler runs
 *    on a library thread or interrupts a call).
 * Picks use smooth weighted round robin, as nginx's upstream module does:
 * each node's current weight grows by its weight, the largest is chosen and
 * lowered by the total. Nodes of weight 0 are never chosen.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "example.h"

/* The balancer: a pinned node list and one current weight per node. */
struct balancer {
    const ckv_node_list *nodes; /* NULL: the service is unknown */
    uint64_t generation;
    int64_t *current;
    size_t len;
};

static void balancer_reset(struct balancer *b, const ckv_node_list *nodes)
{
    ckv_node_list_free(b->nodes);
    free(b->current);
    b->nodes = nodes;
    b->generation = ckv_node_list_generation(nodes);
    b->len = ckv_node_list_len(nodes);
    b->current = b->len ? calloc(b->len, sizeof *b->current) : NULL;
    if (b->len && b->current == NULL) {
        b->len = 0; /* out of memory: pick nothing */
    }
}

/* The index of the next node, or -1 when no node has a weight. */
static long balancer_pick(struct balancer *b)
{
    int64_t total = 0;
    long best = -1;
    for (size_t i = 0; i < b->len; i++) {
        ckv_node n;
        if (ckv_node_list_get(b->nodes, i, &n) != CKV_OK || n.weight == 0) {
            continue;
        }
        b->current[i] += n.weight;
        total += n.weight;
        if (best < 0 || b->current[i] > b->current[best]) {
            best = (long)i;
        }
    }
    if (best >= 0) {
        b->current[best] -= total;
    }
    return best;
}

/* Takes the service's nodes again if they changed; prints them. */
static void refresh(const ckv_handle *h, const char *name, struct balancer *b)
{
    const ckv_node_list *nodes = NULL;
    enum ckv_status rc = ckv_nodes_get(h, (const uint8_t *)name, strlen(name), &nodes);
    if (rc != CKV_OK) {
        if (b->nodes != NULL || rc != CKV_ERR_NOT_FOUND) {
            printf("nodes: %s\n", ckv_status_str(rc));
        }
        balancer_reset(b, NULL);
        return;
    }
    if (b->nodes != NULL && ckv_node_list_generation(nodes) == b->generation) {
        ckv_node_list_free(nodes); /* another service changed */
        return;
    }
    balancer_reset(b, nodes);
    printf("nodes seq=%llu:", (unsigned long long)ckv_node_list_seq(nodes));
    for (size_t i = 0; i < b->len; i++) {
        ckv_node n;
        if (ckv_node_list_get(nodes, i, &n) == CKV_OK) {
            printf(" %s:%u*%u", (const char *)n.host, (unsigned)n.port, (unsigned)n.weight);
        }
    }
    printf("\n");
}

/* Handles one command line; returns 0 to stop. */
static int command(const char *line, struct balancer *b)
{
    long count;
    if (strncmp(line, "quit", 4) == 0) {
        return 0;
    }
    if (sscanf(line, "pick %ld", &count) != 1) {
        printf("unknown command: %s\n", line);
        return 1;
    }
    for (long i = 0; i < count; i++) {
        long at = balancer_pick(b);
        ckv_node n;
        if (at < 0 || ckv_node_list_get(b->nodes, (size_t)at, &n) != CKV_OK) {
            printf("pick none\n");
            continue;
        }
        /* host is NUL-terminated, so it can be printed with %s. */
        printf("pick %s:%u\n", (const char *)n.host, (unsigned)n.port);
    }
    return 1;
}

/* Command input, read with read(2): stdio would buffer lines that epoll
 * then never reports again. */
struct input {
    char buf[256];
    size_t len;
};

/* Reads what stdin has and runs every complete line; returns 0 to stop. */
static int read_commands(struct input *in, struct balancer *b)
{
    ssize_t n = read(STDIN_FILENO, in->buf + in->len, sizeof in->buf - 1 - in->len);
    if (n <= 0) {
        return n < 0 && errno == EAGAIN; /* EOF or error: stop */
    }
    in->len += (size_t)n;
    in->buf[in->len] = '\0';
    char *line = in->buf, *nl;
    while ((nl = strchr(line, '\n')) != NULL) {
        *nl = '\0';
        if (!command(line, b)) {
            return 0;
        }
        line = nl + 1;
    }
    in->len = strlen(line);
    memmove(in->buf, line, in->len);
    if (in->len == sizeof in->buf - 1) {
        in->len = 0; /* a line too long: drop it */
    }
    return 1;
}

static int watch(int ep, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s http://host:port SERVICE [prefix]\n", argv[0]);
        return 2;
    }
    const char *prefix = argc > 3 ? argv[3] : "upstreams";
    char name[1024];
    int n = snprintf(name, sizeof name, "%s/v1/kv/%s/%s/", argv[1], prefix, argv[2]);
    if (n < 0 || (size_t)n >= sizeof name) {
        fprintf(stderr, "arguments too long\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Block the signals before the library starts its threads: they inherit
     * the mask, so the signals are only ever read from the signalfd. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    ckv_handle *h = example_start(argv[1], prefix);
    if (h == NULL) {
        return 1;
    }
    int nfd = ckv_notify_fd(h);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || nfd < 0 || ep < 0 || watch(ep, nfd) || watch(ep, STDIN_FILENO) ||
        watch(ep, sfd)) {
        perror("pick: setup");
        ckv_free(h);
        return 1;
    }

    struct balancer b = {0};
    refresh(h, name, &b); /* what the snapshot holds already, if anything */
    int status = 0, running = 1;
    struct input in = {0};
    while (running) {
        struct epoll_event events[4];
        int ready = epoll_wait(ep, events, 4, 1000);
        if (ready < 0 && errno != EINTR) {
            perror("epoll_wait");
            status = 1;
            break;
        }
        example_drain_logs(h);
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == nfd) {
                uint64_t changes;
                while (read(nfd, &changes, sizeof changes) == sizeof changes) {
                    /* drained: several changes may arrive as one wake-up */
                }
                refresh(h, name, &b);
            } else if (fd == STDIN_FILENO) {
                running = read_commands(&in, &b);
            } else if (fd == sfd) {
                running = 0;
            }
        }
    }

    /* Leave the event loop before the library closes the fd. */
    epoll_ctl(ep, EPOLL_CTL_DEL, nfd, NULL);
    balancer_reset(&b, NULL);
    ckv_free(h);
    if (fcntl(nfd, F_GETFD) != -1) {
        fprintf(stderr, "pick: ckv_free left the notification fd open\n");
        status = 1;
    }
    close(ep);
    close(sfd);
    printf("bye\n");
    return status;
}
