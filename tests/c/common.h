/*
 * What the C test hosts share: the main-thread check, the failure counter and CHECK macros,
 * a monotonic clock, the open-fd count and the hang limit every wait is bounded by.
 *
 * A file that keeps its own counting CHECK (bad_input.c) defines HL_TEST_OWN_CHECKS before
 * including this header and gets everything but the macros.
 */
#ifndef HOSTLOOP_TEST_COMMON_H
#define HOSTLOOP_TEST_COMMON_H

#include "hostloop.h"

#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

/* Every wait of a test host gives up (and fails) after this long: it only catches a hang. */
#define HANG_LIMIT_S 60.0

/* The thread that created the runtime; set first thing in main(). */
static pthread_t main_thread;
/* Failed checks; main() exits non-zero when it is not 0. */
static int failures;

#ifndef HL_TEST_OWN_CHECKS
/* Counts a failure and prints `FAIL file:line: message` on stderr if `cond` is false. */
#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            failures++;                                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                               \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
        }                                                                                      \
    } while (0)

/* CHECKs that `call` returns HL_STATUS_OK, printing the status and hl_last_error() if not. */
#define CHECK_OK(call)                                                                         \
    do {                                                                                       \
        hl_status_t st_ = (call);                                                              \
        CHECK(st_ == HL_STATUS_OK, "%s returned %s: %s", #call, hl_status_name(st_),          \
              hl_last_error());                                                                \
    } while (0)
#endif

static inline int on_main_thread(void) {
    return pthread_equal(pthread_self(), main_thread);
}

/* Open file descriptors of this process (-1 if /proc is not there). */
static inline int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        return -1;
    }
    int n = 0;
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n;
}

/* Seconds on the monotonic clock. */
static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

#endif
