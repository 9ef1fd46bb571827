/*
 * zero_work.c: an HTTP/1.1 server that does no work at all, for bench.sh's row 0.
 *
 * It answers every request with the same small JSON body (the size of a real "queued"
 * answer) and never looks at what was asked: no parsing beyond finding where each request
 * ends, no Redis, no allocation. Measured with the same wrk script as the real buys, it
 * shows what the load generator and the kernel's loopback TCP alone cost per request on
 * this machine, i.e. the most requests per second any server could answer here.
 *
 * Build and run:  cc -O2 -pthread -o zero_work zero_work.c && ./zero_work PORT [THREADS]
 * One epoll loop per thread (default 2), all listening on 127.0.0.1:PORT (SO_REUSEPORT).
 * A request ends at the blank line after its headers; bench requests carry their small
 * body in the same segment and the body never contains a blank line, so counting the
 * "\r\n\r\n" markers counts the requests, also when one arrives split over two reads.
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BODY "{\"status\":\"queued\",\"order_no\":\"1-1763800000000-0\",\"remaining\":4999999}"
#define MAX_FDS 65536

static const char response[] =
    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s";
static char answer[256];
static int answer_len;
static int port;
/* How many bytes of "\r\n\r\n" each connection's last read ended with (0 to 3). */
static unsigned char matched[MAX_FDS];

static void *serve(void *unused) {
    (void)unused;
    int one = 1;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) || listen(listener, 1024)) {
        perror("zero_work: bind/listen");
        exit(1);
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
    epoll_ctl(ep, EPOLL_CTL_ADD, listener, &ev);
    struct epoll_event events[256];
    char buf[16384];
    for (;;) {
        int n = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            if (fd == listener) {
                int conn;
                while ((conn = accept4(listener, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    if (conn >= MAX_FDS) { close(conn); continue; }
                    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    matched[conn] = 0;
                    struct epoll_event cev = {.events = EPOLLIN, .data.fd = conn};
                    epoll_ctl(ep, EPOLL_CTL_ADD, conn, &cev);
                }
                continue;
            }
            ssize_t got = read(fd, buf, sizeof buf);
            if (got <= 0) {
                close(fd);
                continue;
            }
            int state = matched[fd], requests = 0;
            for (ssize_t k = 0; k < got; k++) {
                char want = (state % 2 == 0) ? '\r' : '\n';
                if (buf[k] == want) {
                    if (++state == 4) { requests++; state = 0; }
                } else {
                    state = (buf[k] == '\r') ? 1 : 0;
                }
            }
            matched[fd] = (unsigned char)state;
            for (int r = 0; r < requests; r++) {
                if (write(fd, answer, answer_len) != answer_len) { close(fd); break; }
            }
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: zero_work PORT [THREADS]\n");
        return 2;
    }
    port = atoi(argv[1]);
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    answer_len = snprintf(answer, sizeof answer, response, (int)strlen(BODY), BODY);
    pthread_t tids[64];
    if (threads < 1 || threads > 64) threads = 2;
    for (int t = 0; t < threads; t++) pthread_create(&tids[t], NULL, serve, NULL);
    pthread_join(tids[0], NULL);
    return 0;
}
