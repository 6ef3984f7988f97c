/*
 * Misuse of the C API: every documented error status, from C.
 *
 * Usage: bad_input <case>. Each case prints one `ok` line per check (or a `FAIL` line), then
 * `PASS <case> checks=<n>` or `FAIL <case> failures=<n> checks=<n>`, and exits 0 only if every
 * check held. tests/tests/bad_input.rs runs each case as its own test.
 *
 * A check of an expected status also checks hl_last_error(): non-empty after a failure, "" after
 * success, as hostloop/common.h promises.
 */
#define _GNU_SOURCE

#define HL_TEST_OWN_CHECKS
#include "common.h"

#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <dirent.h>
#include <sys/prctl.h>
#include <time.h>

static int checks;

static void check_status(const char *expr, hl_status_t got, hl_status_t want, int line) {
    char err[512];
    snprintf(err, sizeof err, "%s", hl_last_error());
    checks++;
    if (got != want) {
        failures++;
        printf("FAIL line %d: %s returned %s, expected %s (last error: \"%s\")\n", line, expr,
               hl_status_name(got), hl_status_name(want), err);
    } else if (want != HL_STATUS_OK && err[0] == '\0') {
        failures++;
        printf("FAIL line %d: %s returned %s with an empty hl_last_error()\n", line, expr,
               hl_status_name(got));
    } else if (want == HL_STATUS_OK && err[0] != '\0') {
        failures++;
        printf("FAIL line %d: %s succeeded but hl_last_error() is \"%s\"\n", line, expr, err);
    } else {
        printf("ok   %s -> %s%s%s%s\n", expr, hl_status_name(got), err[0] ? " (\"" : "", err,
               err[0] ? "\")" : "");
    }
}

#define EXPECT(expr, want) check_status(#expr, (expr), (want), __LINE__)

static void check_true(int cond, const char *what, int line) {
    checks++;
    if (!cond) {
        failures++;
        printf("FAIL line %d: %s\n", line, what);
    } else {
        printf("ok   %s\n", what);
    }
}

#define CHECK(cond) check_true((cond), #cond, __LINE__)

/* ---- helpers ------------------------------------------------------------------------------ */

static hl_runtime_t *new_runtime(uint32_t workers) {
    hl_runtime_options_t o;
    hl_runtime_options_init(&o);
    o.workers = workers;
    o.io_threads = 1;
    o.thread_name = "bad";
    hl_runtime_t *rt = NULL;
    hl_status_t st = hl_runtime_new(&o, &rt);
    if (st != HL_STATUS_OK || rt == NULL) {
        printf("FAIL cannot create a runtime: %s %s\n", hl_status_name(st), hl_last_error());
        exit(2);
    }
    return rt;
}

static hl_job_desc_t job_desc(hl_job_run_fn run, hl_job_done_fn done, void *user_data,
                              hl_finalizer_fn finalize) {
    hl_job_desc_t d;
    memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.priority = HL_PRIORITY_NORMAL;
    d.lane = HL_LANE_CPU;
    d.name = "bad-input-job";
    d.run = run;
    d.done = done;
    d.user_data = user_data;
    d.finalize = finalize;
    return d;
}

static hl_event_t custom_event(const char *topic) {
    hl_event_t e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    e.kind = HL_EVENT_CUSTOM;
    e.topic = topic;
    return e;
}

/* Pumps until `*flag` reaches `want`, failing after HANG_LIMIT_S. Never sleeps: pump blocks on
 * nothing, and each round waits at most for one poll of the doorbell. */
static int pump_until(hl_runtime_t *rt, const atomic_int *flag, int want) {
    int fd = -1;
    if (hl_runtime_wake_fd(rt, &fd) != HL_STATUS_OK) {
        return 0;
    }
    double deadline = now_s() + HANG_LIMIT_S;
    while (atomic_load(flag) < want) {
        if (now_s() > deadline) {
            printf("FAIL timed out waiting for a flag to reach %d (at %d)\n", want,
                   atomic_load(flag));
            failures++;
            return 0;
        }
        struct pollfd p = {fd, POLLIN, 0};
        poll(&p, 1, 50);
        hl_status_t st = hl_runtime_pump(rt, 0, NULL);
        if (st != HL_STATUS_OK) {
            printf("FAIL pump: %s %s\n", hl_status_name(st), hl_last_error());
            failures++;
            return 0;
        }
    }
    return 1;
}

/* Spins (never sleeps) until `*flag` reaches `want`, failing after HANG_LIMIT_S. */
static int spin_until(const atomic_int *flag, int want) {
    double deadline = now_s() + HANG_LIMIT_S;
    while (atomic_load(flag) < want) {
        if (now_s() > deadline) {
            printf("FAIL timed out spinning for a flag to reach %d\n", want);
            failures++;
            return 0;
        }
    }
    return 1;
}

static atomic_int finalized_count;
static void count_finalize(void *user_data) {
    (void)user_data;
    atomic_fetch_add(&finalized_count, 1);
}

static void done_never_called(void *user_data, hl_status_t status, int32_t code) {
    (void)user_data;
    (void)status;
    (void)code;
    printf("FAIL a done callback ran without a pump\n");
    failures++;
}

static int32_t run_ok(void *user_data, hl_job_ctx_t *ctx) {
    (void)user_data;
    (void)ctx;
    return 0;
}

static void sink_noop(void *user_data, const hl_message_t *m) {
    (void)user_data;
    (void)m;
}

static void event_noop(void *user_data, const hl_event_t *e) {
    (void)user_data;
    (void)e;
}

static void request_noop(void *user_data) {
    (void)user_data;
}

/* ---- cases -------------------------------------------------------------------------------- */

/* NULL for every pointer parameter of every function. */
static void case_null_args(void) {
    hl_runtime_options_t o;
    EXPECT(hl_runtime_options_init(NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_options_init(&o), HL_STATUS_OK);

    hl_runtime_t *sentinel_rt = (hl_runtime_t *)&o;
    hl_runtime_t *out = sentinel_rt;
    EXPECT(hl_runtime_new(NULL, &out), HL_STATUS_NULL_ARG);
    CHECK(out == sentinel_rt); /* out-params are written only on success */
    EXPECT(hl_runtime_new(&o, NULL), HL_STATUS_NULL_ARG);

    hl_runtime_t *rt = new_runtime(1);
    atomic_store(&finalized_count, 0);

    EXPECT(hl_runtime_free(NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_shutdown(NULL, 10, NULL), HL_STATUS_NULL_ARG);

    int fd = -7;
    EXPECT(hl_runtime_wake_fd(NULL, &fd), HL_STATUS_NULL_ARG);
    CHECK(fd == -7);
    EXPECT(hl_runtime_wake_fd(rt, NULL), HL_STATUS_NULL_ARG);

    EXPECT(hl_runtime_set_request_pump(NULL, request_noop, NULL, count_finalize),
           HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_pump(NULL, 0, NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_pump(rt, 0, NULL), HL_STATUS_OK); /* report may be NULL */

    hl_stats_t stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    EXPECT(hl_runtime_stats(NULL, &stats), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_stats(rt, NULL), HL_STATUS_NULL_ARG);

    EXPECT(hl_runtime_set_sink(NULL, sink_noop, NULL, count_finalize), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_emit(NULL, "t", "x", 1), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_emit(rt, NULL, "x", 1), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_emit(rt, "t", NULL, 3), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_emit(rt, "t", NULL, 0), HL_STATUS_OK); /* NULL is fine when empty */

    float xyz[3] = {1, 2, 3};
    hl_array_view_t view = {HL_ELEM_F32, 3, 1, 12, xyz, sizeof xyz};
    EXPECT(hl_runtime_emit_array(NULL, "t", &view), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_emit_array(rt, NULL, &view), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_emit_array(rt, "t", NULL), HL_STATUS_NULL_ARG);
    hl_array_view_t no_data = {HL_ELEM_F32, 3, 2, 12, NULL, 24};
    EXPECT(hl_runtime_emit_array(rt, "t", &no_data), HL_STATUS_NULL_ARG);
    hl_array_view_t empty = {HL_ELEM_F32, 3, 0, 12, NULL, 0};
    EXPECT(hl_runtime_emit_array(rt, "t", &empty), HL_STATUS_OK);

    hl_event_t e = custom_event("t");
    EXPECT(hl_runtime_post_event(NULL, &e), HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_post_event(rt, NULL), HL_STATUS_NULL_ARG);
    e.topic = NULL;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_NULL_ARG);
    e = custom_event("t");
    e.bytes_len = 3;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_NULL_ARG);
    e.bytes_len = 0;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_OK);
    e = custom_event(NULL);
    e.kind = HL_EVENT_SCENE_OPENED;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_NULL_ARG);
    e.kind = HL_EVENT_SCENE_SAVED;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_NULL_ARG);

    uint64_t sub = 77;
    EXPECT(hl_runtime_subscribe(NULL, 0, event_noop, NULL, count_finalize, &sub),
           HL_STATUS_NULL_ARG);
    EXPECT(hl_runtime_subscribe(rt, 0, NULL, NULL, count_finalize, &sub), HL_STATUS_NULL_ARG);
    CHECK(sub == 77);
    EXPECT(hl_runtime_subscribe(rt, 0, event_noop, NULL, NULL, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_unsubscribe(NULL, 1), HL_STATUS_NULL_ARG);

    hl_job_desc_t d = job_desc(run_ok, NULL, NULL, count_finalize);
    hl_job_t *sentinel_job = (hl_job_t *)&d;
    hl_job_t *job = sentinel_job;
    EXPECT(hl_job_spawn(NULL, &d, &job), HL_STATUS_NULL_ARG);
    EXPECT(hl_job_spawn(rt, NULL, &job), HL_STATUS_NULL_ARG);
    d.run = NULL;
    EXPECT(hl_job_spawn(rt, &d, &job), HL_STATUS_NULL_ARG);
    CHECK(job == sentinel_job);
    CHECK(atomic_load(&finalized_count) == 0); /* no user_data was taken over by a failed call */
    d = job_desc(run_ok, NULL, NULL, NULL);
    EXPECT(hl_job_spawn(rt, &d, NULL), HL_STATUS_OK); /* fire and forget */
    EXPECT(hl_job_spawn(rt, &d, &job), HL_STATUS_OK);

    float fraction = -2.0f;
    hl_status_t status = 999;
    EXPECT(hl_job_cancel(NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_job_progress(NULL, &fraction), HL_STATUS_NULL_ARG);
    EXPECT(hl_job_progress(job, NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_job_status(NULL, &status), HL_STATUS_NULL_ARG);
    EXPECT(hl_job_status(job, NULL), HL_STATUS_NULL_ARG);
    CHECK(fraction == -2.0f && status == 999);
    EXPECT(hl_job_free(NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_job_ctx_check(NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_job_ctx_progress(NULL, 0.5f), HL_STATUS_NULL_ARG);
    EXPECT(hl_job_free(job), HL_STATUS_OK);

    EXPECT(hl_runtime_shutdown(rt, 1000, NULL), HL_STATUS_OK); /* report may be NULL */
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* Wrong struct sizes and ABI versions. */
static void case_struct_sizes(void) {
    hl_runtime_t *sentinel = (hl_runtime_t *)&checks;
    hl_runtime_t *rt = sentinel;

    hl_runtime_options_t o;
    hl_runtime_options_init(&o);
    CHECK(o.struct_size == sizeof o && o.abi_version == HL_ABI_VERSION && o.main_backlog_limit == 0);
    o.struct_size = sizeof o - 8;
    EXPECT(hl_runtime_new(&o, &rt), HL_STATUS_INVALID_ARG);
    o.struct_size = 4;
    EXPECT(hl_runtime_new(&o, &rt), HL_STATUS_INVALID_ARG);
    o.struct_size = 0;
    EXPECT(hl_runtime_new(&o, &rt), HL_STATUS_INVALID_ARG);
    CHECK(rt == sentinel);

    /* A newer caller's larger struct: fine while the extra bytes are zero, refused otherwise. */
    struct {
        hl_runtime_options_t v1;
        uint64_t future[2];
    } bigger;
    memset(&bigger, 0, sizeof bigger);
    hl_runtime_options_init(&bigger.v1);
    bigger.v1.struct_size = sizeof bigger;
    bigger.v1.workers = 1;
    bigger.future[1] = 1;
    EXPECT(hl_runtime_new(&bigger.v1, &rt), HL_STATUS_VERSION_MISMATCH);
    CHECK(rt == sentinel);
    bigger.future[1] = 0;
    EXPECT(hl_runtime_new(&bigger.v1, &rt), HL_STATUS_OK);
    CHECK(rt != sentinel && rt != NULL);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
    rt = sentinel;

    hl_runtime_options_init(&o);
    o.abi_version = HL_ABI_VERSION + 1;
    EXPECT(hl_runtime_new(&o, &rt), HL_STATUS_VERSION_MISMATCH);
    o.abi_version = 0;
    EXPECT(hl_runtime_new(&o, &rt), HL_STATUS_VERSION_MISMATCH);
    CHECK(rt == sentinel);

    rt = new_runtime(1);

    /* Out-structs: too small is refused and not written; a larger one is written up to ours. */
    hl_pump_report_t pr;
    memset(&pr, 0xAB, sizeof pr);
    pr.struct_size = sizeof pr - 8;
    EXPECT(hl_runtime_pump(rt, 0, &pr), HL_STATUS_INVALID_ARG);
    CHECK(pr.struct_size == sizeof pr - 8 && pr.elapsed_us == 0xABABABABABABABABull);

    hl_stats_t st;
    memset(&st, 0xAB, sizeof st);
    st.struct_size = 8;
    EXPECT(hl_runtime_stats(rt, &st), HL_STATUS_INVALID_ARG);
    CHECK(st.struct_size == 8 && st.jobs_spawned == 0xABABABABABABABABull);
    struct {
        hl_stats_t v1;
        uint64_t future;
    } big_stats;
    memset(&big_stats, 0xCD, sizeof big_stats);
    big_stats.v1.struct_size = sizeof big_stats;
    EXPECT(hl_runtime_stats(rt, &big_stats.v1), HL_STATUS_OK);
    CHECK(big_stats.v1.struct_size == sizeof(hl_stats_t)); /* tells the caller what it wrote */
    CHECK(big_stats.future == 0xCDCDCDCDCDCDCDCDull);     /* and it wrote no further */
    CHECK(big_stats.v1.workers == 1);

    hl_job_desc_t d = job_desc(run_ok, NULL, NULL, count_finalize);
    atomic_store(&finalized_count, 0);
    /* Short of `finalize` (an older caller's struct ends at `finalize`: job_progress.c). */
    d.struct_size = (uint32_t)offsetof(hl_job_desc_t, progress) - 8;
    hl_job_t *job = NULL;
    EXPECT(hl_job_spawn(rt, &d, &job), HL_STATUS_INVALID_ARG);
    d.struct_size = 0;
    EXPECT(hl_job_spawn(rt, &d, &job), HL_STATUS_INVALID_ARG);
    CHECK(job == NULL && atomic_load(&finalized_count) == 0);

    hl_event_t e = custom_event("t");
    e.struct_size = sizeof e - 8;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_INVALID_ARG);

    hl_shutdown_report_t sr;
    memset(&sr, 0xAB, sizeof sr);
    sr.struct_size = 4;
    EXPECT(hl_runtime_shutdown(rt, 1000, &sr), HL_STATUS_INVALID_ARG);
    CHECK(sr.struct_size == 4 && sr.elapsed_us == 0xABABABABABABABABull);
    sr.struct_size = sizeof sr;
    EXPECT(hl_runtime_shutdown(rt, 1000, &sr), HL_STATUS_OK); /* the first call's report */
    CHECK(sr.struct_size == sizeof sr && sr.stragglers == 0 && sr.threads_joined == 2);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* The header: INVALID_ARG when `options->thread_name` is not UTF-8. */
static void case_thread_name_not_utf8(void) {
    hl_runtime_options_t o;
    hl_runtime_options_init(&o);
    o.workers = 1;
    o.thread_name = "bad\xff\xfe";
    hl_runtime_t *rt = NULL;
    EXPECT(hl_runtime_new(&o, &rt), HL_STATUS_INVALID_UTF8);
    CHECK(rt == NULL);
    if (rt != NULL) {
        hl_runtime_free(rt);
    }
}

/* [main-thread] functions from another thread; [any-thread] ones work there. */
typedef struct thread_results {
    hl_runtime_t *rt;
    hl_status_t pump, wake_fd, set_sink, shutdown, free_, emit, stats, post_event, subscribe,
        request_pump, spawn;
    int wake_fd_untouched;
    int error_messages;
    int sink_finalized_here;
} thread_results;

static void *other_thread(void *arg) {
    thread_results *r = arg;
    r->pump = hl_runtime_pump(r->rt, 0, NULL);
    r->error_messages += hl_last_error()[0] != '\0';
    int fd = -7;
    r->wake_fd = hl_runtime_wake_fd(r->rt, &fd);
    r->error_messages += hl_last_error()[0] != '\0';
    r->wake_fd_untouched = fd == -7;
    int before = atomic_load(&finalized_count);
    r->set_sink = hl_runtime_set_sink(r->rt, sink_noop, NULL, count_finalize);
    r->error_messages += hl_last_error()[0] != '\0';
    r->sink_finalized_here = atomic_load(&finalized_count) - before;
    r->shutdown = hl_runtime_shutdown(r->rt, 100, NULL);
    r->error_messages += hl_last_error()[0] != '\0';
    r->free_ = hl_runtime_free(r->rt);
    r->error_messages += hl_last_error()[0] != '\0';

    r->emit = hl_runtime_emit(r->rt, "from/thread", "x", 1);
    hl_stats_t st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    r->stats = hl_runtime_stats(r->rt, &st);
    hl_event_t e = custom_event("from/thread");
    r->post_event = hl_runtime_post_event(r->rt, &e);
    r->subscribe = hl_runtime_subscribe(r->rt, 0, event_noop, NULL, NULL, NULL);
    r->request_pump = hl_runtime_set_request_pump(r->rt, request_noop, NULL, NULL);
    hl_job_desc_t d = job_desc(run_ok, NULL, NULL, NULL);
    r->spawn = hl_job_spawn(r->rt, &d, NULL);
    return NULL;
}

static void case_wrong_thread(void) {
    hl_runtime_t *rt = new_runtime(1);
    thread_results r;
    memset(&r, 0, sizeof r);
    r.rt = rt;
    atomic_store(&finalized_count, 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, other_thread, &r) == 0);
    pthread_join(t, NULL);
#define SHOW(field, want)                                                                      \
    do {                                                                                       \
        checks++;                                                                              \
        if (r.field != (want)) {                                                               \
            failures++;                                                                        \
            printf("FAIL %s from another thread returned %s, expected %s\n", #field,          \
                   hl_status_name(r.field), hl_status_name(want));                            \
        } else {                                                                               \
            printf("ok   %s from another thread -> %s\n", #field, hl_status_name(r.field));   \
        }                                                                                      \
    } while (0)
    SHOW(pump, HL_STATUS_WRONG_THREAD);
    SHOW(wake_fd, HL_STATUS_WRONG_THREAD);
    SHOW(set_sink, HL_STATUS_WRONG_THREAD);
    SHOW(shutdown, HL_STATUS_WRONG_THREAD);
    SHOW(free_, HL_STATUS_WRONG_THREAD);
    SHOW(emit, HL_STATUS_OK);
    SHOW(stats, HL_STATUS_OK);
    SHOW(post_event, HL_STATUS_OK);
    SHOW(subscribe, HL_STATUS_OK);
    SHOW(request_pump, HL_STATUS_OK);
    SHOW(spawn, HL_STATUS_OK);
#undef SHOW
    CHECK(r.error_messages == 5); /* each refusal left a message on that thread */
    CHECK(r.wake_fd_untouched);
    CHECK(r.sink_finalized_here == 0);
    /* The refusals changed nothing: the main thread still owns a working runtime. */
    int fd = -1;
    EXPECT(hl_runtime_wake_fd(rt, &fd), HL_STATUS_OK);
    EXPECT(hl_runtime_pump(rt, 0, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_shutdown(rt, 1000, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* hl_runtime_pump from inside callbacks a pump runs: REENTRANT, never a deadlock. */
typedef struct reentry {
    hl_runtime_t *rt;
    hl_status_t from_sink, from_event, from_done, wake_fd_in_sink, emit_in_sink;
    int sink_calls, event_calls, done_calls;
    atomic_int kinds_called; /* how many of the three callbacks ran at least once */
} reentry;

static void reentrant_sink(void *user_data, const hl_message_t *m) {
    reentry *r = user_data;
    (void)m;
    int fd;
    r->from_sink = hl_runtime_pump(r->rt, 0, NULL);
    r->wake_fd_in_sink = hl_runtime_wake_fd(r->rt, &fd);
    if (r->sink_calls++ == 0) {
        /* Once: the message emitted here comes back to this sink at a later pump. */
        r->emit_in_sink = hl_runtime_emit(r->rt, "from/sink", NULL, 0);
        atomic_fetch_add(&r->kinds_called, 1);
    }
}

static void reentrant_event(void *user_data, const hl_event_t *e) {
    reentry *r = user_data;
    (void)e;
    r->from_event = hl_runtime_pump(r->rt, 0, NULL);
    if (r->event_calls++ == 0) {
        atomic_fetch_add(&r->kinds_called, 1);
    }
}

static void reentrant_done(void *user_data, hl_status_t status, int32_t code) {
    reentry *r = user_data;
    (void)status;
    (void)code;
    r->from_done = hl_runtime_pump(r->rt, 0, NULL);
    if (r->done_calls++ == 0) {
        atomic_fetch_add(&r->kinds_called, 1);
    }
}

static void case_reentrant_pump(void) {
    reentry r;
    memset(&r, 0, sizeof r);
    r.from_sink = r.from_event = r.from_done = 999;
    r.rt = new_runtime(1);
    EXPECT(hl_runtime_set_sink(r.rt, reentrant_sink, &r, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_subscribe(r.rt, HL_EVENT_CUSTOM, reentrant_event, &r, NULL, NULL),
           HL_STATUS_OK);
    EXPECT(hl_runtime_emit(r.rt, "to/sink", "x", 1), HL_STATUS_OK);
    hl_event_t e = custom_event("to/subscriber");
    EXPECT(hl_runtime_post_event(r.rt, &e), HL_STATUS_OK);
    hl_job_desc_t d = job_desc(run_ok, reentrant_done, &r, NULL);
    EXPECT(hl_job_spawn(r.rt, &d, NULL), HL_STATUS_OK);
    CHECK(pump_until(r.rt, &r.kinds_called, 3));
    CHECK(r.event_calls == 1 && r.done_calls == 1);
#define SHOW(field, want)                                                                      \
    do {                                                                                       \
        checks++;                                                                              \
        if (r.field != (want)) {                                                               \
            failures++;                                                                        \
            printf("FAIL %s returned %s, expected %s\n", #field, hl_status_name(r.field),     \
                   hl_status_name(want));                                                      \
        } else {                                                                               \
            printf("ok   %s -> %s\n", #field, hl_status_name(r.field));                        \
        }                                                                                      \
    } while (0)
    SHOW(from_sink, HL_STATUS_REENTRANT);
    SHOW(from_event, HL_STATUS_REENTRANT);
    SHOW(from_done, HL_STATUS_REENTRANT);
    SHOW(wake_fd_in_sink, HL_STATUS_OK);
    SHOW(emit_in_sink, HL_STATUS_OK);
#undef SHOW
    /* The pump that was re-entered finished normally and the next one works. */
    EXPECT(hl_runtime_pump(r.rt, 0, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_free(r.rt), HL_STATUS_OK);
}

/* Every call after shutdown: SHUT_DOWN, except stats, shutdown and free. */
static void case_after_shutdown(void) {
    hl_runtime_t *rt = new_runtime(1);
    hl_job_t *job = NULL;
    hl_job_desc_t d = job_desc(run_ok, NULL, NULL, NULL);
    EXPECT(hl_job_spawn(rt, &d, &job), HL_STATUS_OK);
    hl_shutdown_report_t first, again;
    memset(&first, 0, sizeof first);
    first.struct_size = sizeof first;
    EXPECT(hl_runtime_shutdown(rt, 1000, &first), HL_STATUS_OK);

    atomic_store(&finalized_count, 0);
    int fd = -7;
    EXPECT(hl_runtime_wake_fd(rt, &fd), HL_STATUS_SHUT_DOWN);
    CHECK(fd == -7);
    EXPECT(hl_runtime_set_request_pump(rt, request_noop, NULL, count_finalize),
           HL_STATUS_SHUT_DOWN);
    EXPECT(hl_runtime_set_request_pump(rt, NULL, NULL, NULL), HL_STATUS_SHUT_DOWN);
    hl_pump_report_t pr;
    memset(&pr, 0, sizeof pr);
    pr.struct_size = sizeof pr;
    EXPECT(hl_runtime_pump(rt, 0, &pr), HL_STATUS_SHUT_DOWN);
    EXPECT(hl_runtime_set_sink(rt, sink_noop, NULL, count_finalize), HL_STATUS_SHUT_DOWN);
    EXPECT(hl_runtime_set_sink(rt, NULL, NULL, NULL), HL_STATUS_SHUT_DOWN);
    EXPECT(hl_runtime_emit(rt, "t", "x", 1), HL_STATUS_SHUT_DOWN);
    float xyz[3] = {1, 2, 3};
    hl_array_view_t view = {HL_ELEM_F32, 3, 1, 12, xyz, sizeof xyz};
    EXPECT(hl_runtime_emit_array(rt, "t", &view), HL_STATUS_SHUT_DOWN);
    hl_event_t e = custom_event("t");
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_SHUT_DOWN);
    EXPECT(hl_runtime_subscribe(rt, 0, event_noop, NULL, count_finalize, NULL),
           HL_STATUS_SHUT_DOWN);
    EXPECT(hl_runtime_unsubscribe(rt, 0), HL_STATUS_SHUT_DOWN);
    d = job_desc(run_ok, NULL, NULL, count_finalize);
    hl_job_t *late = NULL;
    EXPECT(hl_job_spawn(rt, &d, &late), HL_STATUS_SHUT_DOWN);
    CHECK(late == NULL);
    CHECK(atomic_load(&finalized_count) == 0); /* refused registrations keep their user_data */

    hl_stats_t st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    EXPECT(hl_runtime_stats(rt, &st), HL_STATUS_OK);
    CHECK(st.jobs_spawned == 1);
    memset(&again, 0, sizeof again);
    again.struct_size = sizeof again;
    EXPECT(hl_runtime_shutdown(rt, 1, &again), HL_STATUS_OK);
    CHECK(memcmp(&first, &again, sizeof first) == 0); /* the first call's report, again */

    /* The job handle outlives the runtime's shutdown. */
    hl_status_t status = 999;
    EXPECT(hl_job_status(job, &status), HL_STATUS_OK);
    CHECK(status == HL_STATUS_OK || status == HL_STATUS_CANCELLED);
    EXPECT(hl_job_free(job), HL_STATUS_OK);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* Stale, double-freed and made-up handles. */
static void case_invalid_handles(void) {
    hl_runtime_t *old = new_runtime(1);
    EXPECT(hl_runtime_free(old), HL_STATUS_OK);
    EXPECT(hl_runtime_free(old), HL_STATUS_INVALID_HANDLE);
    hl_runtime_t *newer = new_runtime(1);
    CHECK(newer != old);
    EXPECT(hl_runtime_free(old), HL_STATUS_INVALID_HANDLE); /* never aliases the newer one */
    EXPECT(hl_runtime_pump(newer, 0, NULL), HL_STATUS_OK);   /* which is untouched */

    hl_job_t *job = NULL;
    hl_job_desc_t d = job_desc(run_ok, NULL, NULL, NULL);
    EXPECT(hl_job_spawn(newer, &d, &job), HL_STATUS_OK);
    EXPECT(hl_job_free(job), HL_STATUS_OK);
    EXPECT(hl_job_free(job), HL_STATUS_INVALID_HANDLE);
    float f;
    hl_status_t s;
    EXPECT(hl_job_cancel(job), HL_STATUS_INVALID_HANDLE);
    EXPECT(hl_job_progress(job, &f), HL_STATUS_INVALID_HANDLE);
    EXPECT(hl_job_status(job, &s), HL_STATUS_INVALID_HANDLE);

    /* A freed runtime, a pointer hostloop never returned, and a job passed as a runtime. */
    int local = 0;
    hl_job_t *live_job = NULL;
    EXPECT(hl_job_spawn(newer, &d, &live_job), HL_STATUS_OK);
    hl_runtime_t *bad[3] = {old, (hl_runtime_t *)&local, (hl_runtime_t *)live_job};
    const char *what[3] = {"freed runtime", "garbage pointer", "job handle as runtime"};
    for (int i = 0; i < 3; i++) {
        hl_runtime_t *rt = bad[i];
        printf("--   %s\n", what[i]);
        int fd;
        hl_stats_t st;
        memset(&st, 0, sizeof st);
        st.struct_size = sizeof st;
        float xyz[3] = {0};
        hl_array_view_t view = {HL_ELEM_F32, 3, 1, 12, xyz, sizeof xyz};
        hl_event_t e = custom_event("t");
        atomic_store(&finalized_count, 0);
        EXPECT(hl_runtime_pump(rt, 0, NULL), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_wake_fd(rt, &fd), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_stats(rt, &st), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_shutdown(rt, 10, NULL), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_set_sink(rt, sink_noop, NULL, count_finalize),
               HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_set_request_pump(rt, request_noop, NULL, count_finalize),
               HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_emit(rt, "t", "x", 1), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_emit_array(rt, "t", &view), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_subscribe(rt, 0, event_noop, NULL, count_finalize, NULL),
               HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_unsubscribe(rt, 0), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_job_spawn(rt, &d, NULL), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_runtime_free(rt), HL_STATUS_INVALID_HANDLE);
        CHECK(atomic_load(&finalized_count) == 0);
    }
    hl_job_t *bad_jobs[2] = {(hl_job_t *)&local, (hl_job_t *)newer};
    for (int i = 0; i < 2; i++) {
        printf("--   %s\n", i == 0 ? "garbage job pointer" : "runtime handle as job");
        EXPECT(hl_job_cancel(bad_jobs[i]), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_job_progress(bad_jobs[i], &f), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_job_status(bad_jobs[i], &s), HL_STATUS_INVALID_HANDLE);
        EXPECT(hl_job_free(bad_jobs[i]), HL_STATUS_INVALID_HANDLE);
    }
    EXPECT(hl_job_free(live_job), HL_STATUS_OK);
    EXPECT(hl_runtime_pump(newer, 0, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_free(newer), HL_STATUS_OK);
    EXPECT(hl_runtime_free(newer), HL_STATUS_INVALID_HANDLE);
}

/* Strings that are not UTF-8. */
static void case_invalid_utf8(void) {
    hl_runtime_t *rt = new_runtime(1);
    const char *bad = "topic\xc3\x28";
    float xyz[3] = {0};
    hl_array_view_t view = {HL_ELEM_F32, 3, 1, 12, xyz, sizeof xyz};
    EXPECT(hl_runtime_emit(rt, bad, "x", 1), HL_STATUS_INVALID_UTF8);
    EXPECT(hl_runtime_emit_array(rt, bad, &view), HL_STATUS_INVALID_UTF8);
    hl_event_t e = custom_event(bad);
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_INVALID_UTF8);
    e = custom_event(NULL);
    e.kind = HL_EVENT_SCENE_OPENED;
    e.path = "/scenes/\xff.ma";
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_INVALID_UTF8);
    atomic_store(&finalized_count, 0);
    hl_job_desc_t d = job_desc(run_ok, NULL, NULL, count_finalize);
    d.name = "job-\xfe";
    hl_job_t *job = NULL;
    EXPECT(hl_job_spawn(rt, &d, &job), HL_STATUS_INVALID_UTF8);
    CHECK(job == NULL && atomic_load(&finalized_count) == 0);
    EXPECT(hl_runtime_emit(rt, "caf\xc3\xa9/ok", "x", 1), HL_STATUS_OK); /* valid UTF-8 */
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* Array views that do not describe their data. */
static void case_bad_array_views(void) {
    hl_runtime_t *rt = new_runtime(1);
    float data[12] = {0};
    hl_array_view_t v = {HL_ELEM_F32, 3, 4, 12, data, sizeof data};
    EXPECT(hl_runtime_emit_array(rt, "t", &v), HL_STATUS_OK);
    v.stride = 8; /* smaller than a record */
    EXPECT(hl_runtime_emit_array(rt, "t", &v), HL_STATUS_INVALID_ARG);
    v.stride = 12;
    v.byte_len = 3 * 12 + 11; /* the last record does not fit */
    EXPECT(hl_runtime_emit_array(rt, "t", &v), HL_STATUS_INVALID_ARG);
    v.byte_len = 3 * 12 + 12; /* exactly fits */
    EXPECT(hl_runtime_emit_array(rt, "t", &v), HL_STATUS_OK);
    v.stride = 16;
    v.count = 3;
    v.byte_len = 2 * 16 + 12; /* strided, exactly fits */
    EXPECT(hl_runtime_emit_array(rt, "t", &v), HL_STATUS_OK);
    v.byte_len = 2 * 16 + 11;
    EXPECT(hl_runtime_emit_array(rt, "t", &v), HL_STATUS_INVALID_ARG);
    hl_array_view_t w = {0, 3, 4, 12, data, sizeof data}; /* unknown element types */
    EXPECT(hl_runtime_emit_array(rt, "t", &w), HL_STATUS_INVALID_ARG);
    w.elem_type = HL_ELEM_F64 + 1;
    EXPECT(hl_runtime_emit_array(rt, "t", &w), HL_STATUS_INVALID_ARG);
    w.elem_type = 0xFFFFFFFFu;
    EXPECT(hl_runtime_emit_array(rt, "t", &w), HL_STATUS_INVALID_ARG);
    hl_array_view_t z = {HL_ELEM_F32, 0, 4, 12, data, sizeof data}; /* zero components */
    EXPECT(hl_runtime_emit_array(rt, "t", &z), HL_STATUS_INVALID_ARG);
    hl_array_view_t huge = {HL_ELEM_F64, 3, UINT64_MAX / 8, 24, data, sizeof data};
    EXPECT(hl_runtime_emit_array(rt, "t", &huge), HL_STATUS_INVALID_ARG); /* overflow */
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* Out-of-range numbers: event kinds, subscriptions, priorities, lanes. */
static void case_bad_values(void) {
    hl_runtime_t *rt = new_runtime(1);
    atomic_store(&finalized_count, 0);
    hl_event_t e = custom_event("t");
    e.kind = 0;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_INVALID_ARG);
    e.kind = HL_EVENT_CUSTOM + 1;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_INVALID_ARG);
    EXPECT(hl_runtime_subscribe(rt, HL_EVENT_CUSTOM + 1, event_noop, NULL, count_finalize, NULL),
           HL_STATUS_INVALID_ARG);
    EXPECT(hl_runtime_unsubscribe(rt, 123456), HL_STATUS_INVALID_ARG);
    uint64_t sub = 0;
    EXPECT(hl_runtime_subscribe(rt, 0, event_noop, NULL, count_finalize, &sub), HL_STATUS_OK);
    EXPECT(hl_runtime_unsubscribe(rt, sub), HL_STATUS_OK);
    CHECK(atomic_load(&finalized_count) == 1);
    EXPECT(hl_runtime_unsubscribe(rt, sub), HL_STATUS_INVALID_ARG); /* already ended */

    hl_job_desc_t d = job_desc(run_ok, NULL, NULL, count_finalize);
    d.priority = HL_PRIORITY_BACKGROUND + 1;
    EXPECT(hl_job_spawn(rt, &d, NULL), HL_STATUS_INVALID_ARG);
    d = job_desc(run_ok, NULL, NULL, count_finalize);
    d.lane = HL_LANE_IO + 1;
    EXPECT(hl_job_spawn(rt, &d, NULL), HL_STATUS_INVALID_ARG);
    CHECK(atomic_load(&finalized_count) == 1); /* refused jobs keep their user_data */
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* Lengths no copy can be made of: OUT_OF_MEMORY before a byte is read, never an abort. */
static void case_huge_lengths(void) {
    hl_runtime_t *rt = new_runtime(1);
    static const uint8_t small[4] = {1, 2, 3, 4};
    /* SIZE_MAX is refused before any allocation (the sanitizers' allocators see none). */
    EXPECT(hl_runtime_emit(rt, "t", small, SIZE_MAX), HL_STATUS_OUT_OF_MEMORY);
    hl_event_t e = custom_event("t");
    e.bytes = small;
    e.bytes_len = SIZE_MAX;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_OUT_OF_MEMORY);
    /* The runtime is unharmed: the real lengths still work. */
    EXPECT(hl_runtime_emit(rt, "t", small, sizeof small), HL_STATUS_OK);
    e.bytes_len = sizeof small;
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_OK);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* A job that never returns cannot hold shutdown past its deadline. */
static atomic_int spinner_started, spinner_release;
static int32_t spin_forever(void *user_data, hl_job_ctx_t *ctx) {
    (void)user_data;
    (void)ctx; /* ignored on purpose */
    atomic_store(&spinner_started, 1);
    while (!atomic_load(&spinner_release)) {
    }
    return 0;
}

static void case_shutdown_timeout(void) {
    hl_runtime_t *rt = new_runtime(1);
    hl_job_desc_t d = job_desc(spin_forever, NULL, NULL, NULL);
    d.name = "spinner-7";
    EXPECT(hl_job_spawn(rt, &d, NULL), HL_STATUS_OK);
    CHECK(spin_until(&spinner_started, 1));

    hl_shutdown_report_t r;
    memset(&r, 0, sizeof r);
    r.struct_size = sizeof r;
    double start = now_s();
    hl_status_t st = hl_runtime_shutdown(rt, 200, &r);
    double took = now_s() - start;
    char err[512];
    snprintf(err, sizeof err, "%s", hl_last_error());
    check_status("hl_runtime_shutdown(rt, 200, &r)", st, HL_STATUS_TIMEOUT, __LINE__);
    printf("shutdown_seconds=%.3f\n", took);
    CHECK(took < 2.0);
    CHECK(strstr(err, "spinner-7") != NULL); /* names the job */
    CHECK(r.struct_size == sizeof r);         /* the report is written anyway */
    CHECK(r.stragglers == 1 && r.cancelled_running == 1);
    CHECK(r.threads_joined == 1); /* the IO thread; the spinner's worker is detached */
    hl_shutdown_report_t again;
    memset(&again, 0, sizeof again);
    again.struct_size = sizeof again;
    EXPECT(hl_runtime_shutdown(rt, 200, &again), HL_STATUS_TIMEOUT); /* the first call's */
    CHECK(memcmp(&r, &again, sizeof r) == 0);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
    atomic_store(&spinner_release, 1); /* let the detached thread end before exit */
}

/* Status names, versions, and hl_last_error after success. */
static void case_status_names(void) {
    static const char *names[] = {
        "HL_STATUS_OK",        "HL_STATUS_NULL_ARG",         "HL_STATUS_INVALID_ARG",
        "HL_STATUS_WRONG_THREAD", "HL_STATUS_REENTRANT",     "HL_STATUS_HOST_BUSY",
        "HL_STATUS_SHUT_DOWN", "HL_STATUS_VERSION_MISMATCH", "HL_STATUS_PANIC",
        "HL_STATUS_INVALID_HANDLE", "HL_STATUS_CANCELLED",   "HL_STATUS_TIMEOUT",
        "HL_STATUS_FAILED",    "HL_STATUS_PENDING",          "HL_STATUS_INVALID_UTF8",
        "HL_STATUS_OS",        "HL_STATUS_FILE_NOT_FOUND",   "HL_STATUS_NOT_A_LIBRARY",
        "HL_STATUS_NO_ENTRY_SYMBOL", "HL_STATUS_BAD_DESCRIPTOR", "HL_STATUS_ALREADY_LOADED",
        "HL_STATUS_WORKER",    "HL_STATUS_OUT_OF_MEMORY", "HL_STATUS_BACKLOG"};
    static const hl_status_t values[] = {
        HL_STATUS_OK,        HL_STATUS_NULL_ARG,         HL_STATUS_INVALID_ARG,
        HL_STATUS_WRONG_THREAD, HL_STATUS_REENTRANT,     HL_STATUS_HOST_BUSY,
        HL_STATUS_SHUT_DOWN, HL_STATUS_VERSION_MISMATCH, HL_STATUS_PANIC,
        HL_STATUS_INVALID_HANDLE, HL_STATUS_CANCELLED,   HL_STATUS_TIMEOUT,
        HL_STATUS_FAILED,    HL_STATUS_PENDING,          HL_STATUS_INVALID_UTF8,
        HL_STATUS_OS,        HL_STATUS_FILE_NOT_FOUND,   HL_STATUS_NOT_A_LIBRARY,
        HL_STATUS_NO_ENTRY_SYMBOL, HL_STATUS_BAD_DESCRIPTOR, HL_STATUS_ALREADY_LOADED,
        HL_STATUS_WORKER,    HL_STATUS_OUT_OF_MEMORY, HL_STATUS_BACKLOG};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        const char *got = hl_status_name(values[i]);
        checks++;
        if (got == NULL || strcmp(got, names[i]) != 0) {
            failures++;
            printf("FAIL hl_status_name(%u) is \"%s\", expected \"%s\"\n", (unsigned)values[i],
                   got ? got : "(null)", names[i]);
        } else {
            printf("ok   hl_status_name(%u) == \"%s\"\n", (unsigned)values[i], got);
        }
    }
    hl_status_t unknown[] = {24, 100, UINT32_MAX};
    for (size_t i = 0; i < 3; i++) {
        const char *got = hl_status_name(unknown[i]);
        checks++;
        if (got == NULL || strcmp(got, "HL_STATUS_UNKNOWN") != 0) {
            failures++;
            printf("FAIL hl_status_name(%u) is \"%s\"\n", (unsigned)unknown[i],
                   got ? got : "(null)");
        } else {
            printf("ok   hl_status_name(%u) == \"HL_STATUS_UNKNOWN\"\n", (unsigned)unknown[i]);
        }
    }
    CHECK(hl_version() == HL_VERSION);
    CHECK(hl_abi_version() == HL_ABI_VERSION);
    EXPECT(hl_runtime_options_init(NULL), HL_STATUS_NULL_ARG);
    CHECK(hl_last_error() != NULL && hl_last_error()[0] != '\0');
    hl_runtime_options_t o;
    EXPECT(hl_runtime_options_init(&o), HL_STATUS_OK);
    CHECK(hl_last_error() != NULL && hl_last_error()[0] == '\0');
}

/* A job cancelled while queued never runs; its done sees CANCELLED, and so does its status. */
static atomic_int gate_started, gate_release, queued_ran, queued_done;
static hl_status_t queued_done_status = 999;
static int32_t gate_run(void *user_data, hl_job_ctx_t *ctx) {
    (void)user_data;
    (void)ctx;
    atomic_store(&gate_started, 1);
    while (!atomic_load(&gate_release)) {
    }
    return 0;
}
static int32_t queued_run(void *user_data, hl_job_ctx_t *ctx) {
    (void)user_data;
    (void)ctx;
    atomic_store(&queued_ran, 1);
    return 0;
}
static void queued_done_fn(void *user_data, hl_status_t status, int32_t code) {
    (void)user_data;
    (void)code;
    queued_done_status = status;
    atomic_fetch_add(&queued_done, 1);
}

static void case_cancel_before_start(void) {
    hl_runtime_t *rt = new_runtime(1); /* one worker, held by the gate job */
    atomic_store(&finalized_count, 0);
    hl_job_desc_t gate = job_desc(gate_run, NULL, NULL, NULL);
    EXPECT(hl_job_spawn(rt, &gate, NULL), HL_STATUS_OK);
    CHECK(spin_until(&gate_started, 1));
    hl_job_desc_t d = job_desc(queued_run, queued_done_fn, NULL, count_finalize);
    hl_job_t *job = NULL;
    EXPECT(hl_job_spawn(rt, &d, &job), HL_STATUS_OK);
    hl_status_t status = 999;
    EXPECT(hl_job_status(job, &status), HL_STATUS_OK);
    CHECK(status == HL_STATUS_PENDING);
    EXPECT(hl_job_cancel(job), HL_STATUS_OK);
    EXPECT(hl_job_cancel(job), HL_STATUS_OK); /* cancelling twice is harmless */
    atomic_store(&gate_release, 1);
    CHECK(pump_until(rt, &queued_done, 1));
    CHECK(queued_done_status == HL_STATUS_CANCELLED);
    CHECK(atomic_load(&queued_ran) == 0);
    EXPECT(hl_job_status(job, &status), HL_STATUS_OK);
    CHECK(status == HL_STATUS_CANCELLED);
    CHECK(atomic_load(&finalized_count) == 1);
    EXPECT(hl_job_free(job), HL_STATUS_OK);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* A running job that sees CANCELLED and returns: done gets CANCELLED (the header: "CANCELLED
 * (the job was cancelled before or while it ran ...)"), whatever run returned, and
 * hl_job_status agrees with done. */
typedef struct cancel_probe {
    int32_t return_code;
    atomic_int started, saw_cancel, done_calls;
    hl_status_t done_status;
    int32_t done_code;
} cancel_probe;

static int32_t cancel_probe_run(void *user_data, hl_job_ctx_t *ctx) {
    cancel_probe *p = user_data;
    atomic_store(&p->started, 1);
    double deadline = now_s() + HANG_LIMIT_S;
    while (hl_job_ctx_check(ctx) == HL_STATUS_OK) {
        if (now_s() > deadline) {
            return 99;
        }
    }
    atomic_store(&p->saw_cancel, 1);
    return p->return_code;
}

static void cancel_probe_done(void *user_data, hl_status_t status, int32_t code) {
    cancel_probe *p = user_data;
    p->done_status = status;
    p->done_code = code;
    atomic_fetch_add(&p->done_calls, 1);
}

static void cancel_while_running(int32_t return_code) {
    cancel_probe p;
    memset(&p, 0, sizeof p);
    p.return_code = return_code;
    p.done_status = 999;
    hl_runtime_t *rt = new_runtime(1);
    hl_job_desc_t d = job_desc(cancel_probe_run, cancel_probe_done, &p, NULL);
    hl_job_t *job = NULL;
    EXPECT(hl_job_spawn(rt, &d, &job), HL_STATUS_OK);
    CHECK(spin_until(&p.started, 1));
    EXPECT(hl_job_cancel(job), HL_STATUS_OK);
    CHECK(pump_until(rt, &p.done_calls, 1));
    CHECK(atomic_load(&p.saw_cancel) == 1);
    printf("run_returned=%d done_status=%s done_code=%d\n", (int)return_code,
           hl_status_name(p.done_status), (int)p.done_code);
    CHECK(p.done_status == HL_STATUS_CANCELLED);
    hl_status_t status = 999;
    EXPECT(hl_job_status(job, &status), HL_STATUS_OK);
    printf("hl_job_status=%s\n", hl_status_name(status));
    CHECK(status == p.done_status);
    EXPECT(hl_job_free(job), HL_STATUS_OK);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

static void case_cancelled_job_returning_zero(void) {
    cancel_while_running(0);
}

static void case_cancelled_job_returning_nonzero(void) {
    cancel_while_running(HL_STATUS_CANCELLED);
}

/* A job that fails: done gets FAILED with run's code, hl_job_status FAILED. */
static atomic_int failed_done;
static hl_status_t failed_status = 999;
static int32_t failed_code;
static int32_t run_fail(void *user_data, hl_job_ctx_t *ctx) {
    (void)user_data;
    (void)ctx;
    return -42;
}
static void failed_done_fn(void *user_data, hl_status_t status, int32_t code) {
    (void)user_data;
    failed_status = status;
    failed_code = code;
    atomic_fetch_add(&failed_done, 1);
}

static void case_failed_job(void) {
    hl_runtime_t *rt = new_runtime(1);
    hl_job_desc_t d = job_desc(run_fail, failed_done_fn, NULL, NULL);
    hl_job_t *job = NULL;
    EXPECT(hl_job_spawn(rt, &d, &job), HL_STATUS_OK);
    CHECK(pump_until(rt, &failed_done, 1));
    CHECK(failed_status == HL_STATUS_FAILED && failed_code == -42);
    hl_status_t status = 999;
    EXPECT(hl_job_status(job, &status), HL_STATUS_OK);
    CHECK(status == HL_STATUS_FAILED);
    hl_stats_t st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    EXPECT(hl_runtime_stats(rt, &st), HL_STATUS_OK);
    CHECK(st.jobs_failed == 1);
    EXPECT(hl_job_free(job), HL_STATUS_OK);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* Finalizers: on replace, on removal, at free; on the main thread for the sink. */
typedef struct fin_probe {
    atomic_int count;
    atomic_int off_main;
} fin_probe;

static void fin_probe_finalize(void *user_data) {
    fin_probe *p = user_data;
    atomic_fetch_add(&p->count, 1);
    if (!pthread_equal(pthread_self(), main_thread)) {
        atomic_fetch_add(&p->off_main, 1);
    }
}

static void case_finalizers(void) {
    int fds_before = open_fds();
    hl_runtime_t *rt = new_runtime(1);
    fin_probe sink1, sink2, sink3, req1, req2, sub1;
    memset(&sink1, 0, sizeof sink1);
    sink2 = sink3 = req1 = req2 = sub1 = sink1;
    EXPECT(hl_runtime_set_sink(rt, sink_noop, &sink1, fin_probe_finalize), HL_STATUS_OK);
    EXPECT(hl_runtime_set_sink(rt, sink_noop, &sink2, fin_probe_finalize), HL_STATUS_OK);
    CHECK(atomic_load(&sink1.count) == 1 && atomic_load(&sink2.count) == 0); /* replaced */
    EXPECT(hl_runtime_set_sink(rt, NULL, &sink3, fin_probe_finalize), HL_STATUS_OK);
    CHECK(atomic_load(&sink2.count) == 1); /* removed */
    CHECK(atomic_load(&sink3.count) <= 1); /* a removal's own user_data: at most once */
    EXPECT(hl_runtime_set_sink(rt, sink_noop, &sink2, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_set_request_pump(rt, request_noop, &req1, fin_probe_finalize),
           HL_STATUS_OK);
    EXPECT(hl_runtime_set_request_pump(rt, request_noop, &req2, fin_probe_finalize),
           HL_STATUS_OK);
    CHECK(atomic_load(&req1.count) == 1 && atomic_load(&req2.count) == 0);
    EXPECT(hl_runtime_subscribe(rt, 0, event_noop, &sub1, fin_probe_finalize, NULL),
           HL_STATUS_OK);
    /* An undelivered event is dropped with the runtime; every finalizer runs at free. */
    hl_event_t e = custom_event("pending");
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_OK);
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
    CHECK(atomic_load(&req2.count) == 1);
    CHECK(atomic_load(&sub1.count) == 1);
    CHECK(atomic_load(&sink1.count) == 1 && atomic_load(&sink2.count) == 1);
    CHECK(atomic_load(&sink1.off_main) + atomic_load(&sink2.off_main) == 0);
    CHECK(open_fds() == fds_before); /* the doorbell's descriptors are closed */
}

/* hostloop/job.h: a job's finalizer runs "after done (or after run if the job never reaches
 * done, e.g. at shutdown)": freeing the runtime ends every job, so every job's user_data is
 * finalized then, whether or not the host still holds (or ever frees) the job handles. */
static atomic_int held_started;
static int32_t held_run(void *user_data, hl_job_ctx_t *ctx) {
    (void)user_data;
    atomic_store(&held_started, 1);
    double deadline = now_s() + HANG_LIMIT_S;
    while (hl_job_ctx_check(ctx) == HL_STATUS_OK && now_s() < deadline) {
    }
    return 0;
}

static void case_runtime_free_finalizes_jobs_with_live_handles(void) {
    int fds_before = open_fds();
    hl_runtime_t *rt = new_runtime(1);
    atomic_store(&finalized_count, 0);
    hl_job_desc_t d = job_desc(held_run, done_never_called, NULL, count_finalize);
    hl_job_t *running = NULL, *queued = NULL;
    EXPECT(hl_job_spawn(rt, &d, &running), HL_STATUS_OK);
    CHECK(spin_until(&held_started, 1));
    EXPECT(hl_job_spawn(rt, &d, &queued), HL_STATUS_OK); /* behind it on the only worker */
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
    printf("finalized_at_free=%d\n", atomic_load(&finalized_count));
    CHECK(atomic_load(&finalized_count) == 2);
    CHECK(open_fds() == fds_before); /* and the runtime's descriptors are closed */
    EXPECT(hl_job_free(running), HL_STATUS_OK);
    EXPECT(hl_job_free(queued), HL_STATUS_OK);
    CHECK(atomic_load(&finalized_count) == 2); /* exactly once */
}

/* The header: the sink's finalizer runs "when the sink is replaced, removed ...", and a sink
 * callback "may call [main-thread] functions except hl_runtime_pump". A sink that removes itself
 * must be gone: not called again, finalized once. */
typedef struct self_removing {
    hl_runtime_t *rt;
    atomic_int calls, finalized;
    int finalized_during_call;
    hl_status_t remove_status;
} self_removing;

static void self_removing_sink(void *user_data, const hl_message_t *m) {
    self_removing *s = user_data;
    (void)m;
    atomic_fetch_add(&s->calls, 1);
    s->remove_status = hl_runtime_set_sink(s->rt, NULL, NULL, NULL);
    /* hostloop/common.h: never finalized while the callback is running. */
    s->finalized_during_call = atomic_load(&s->finalized);
}

static void self_removing_finalize(void *user_data) {
    self_removing *s = user_data;
    atomic_fetch_add(&s->finalized, 1);
}

static void case_sink_removes_itself(void) {
    self_removing s;
    memset(&s, 0, sizeof s);
    s.remove_status = 999;
    s.rt = new_runtime(1);
    EXPECT(hl_runtime_set_sink(s.rt, self_removing_sink, &s, self_removing_finalize),
           HL_STATUS_OK);
    EXPECT(hl_runtime_emit(s.rt, "first", NULL, 0), HL_STATUS_OK);
    CHECK(pump_until(s.rt, &s.calls, 1));
    CHECK(s.remove_status == HL_STATUS_OK);
    CHECK(s.finalized_during_call == 0);
    CHECK(atomic_load(&s.finalized) == 1);
    EXPECT(hl_runtime_emit(s.rt, "second", NULL, 0), HL_STATUS_OK);
    hl_pump_report_t r;
    for (int i = 0; i < 100; i++) {
        memset(&r, 0, sizeof r);
        r.struct_size = sizeof r;
        EXPECT(hl_runtime_pump(s.rt, 0, &r), HL_STATUS_OK);
        if (r.remaining == 0) {
            break;
        }
    }
    printf("sink_calls=%d finalized=%d\n", atomic_load(&s.calls), atomic_load(&s.finalized));
    CHECK(atomic_load(&s.calls) == 1);
    hl_stats_t st;
    memset(&st, 0, sizeof st);
    st.struct_size = sizeof st;
    EXPECT(hl_runtime_stats(s.rt, &st), HL_STATUS_OK);
    CHECK(st.sink_messages == 1 && st.sink_dropped == 1);
    EXPECT(hl_runtime_free(s.rt), HL_STATUS_OK);
    CHECK(atomic_load(&s.finalized) == 1);
}

/* hostloop/common.h: a callback that replaces or removes itself is finalized after it returns,
 * never while it runs; its replacement takes over. */
typedef struct self_replacing {
    hl_runtime_t *rt;
    atomic_int calls, finalized;
    int finalized_during_call;
    hl_status_t status;
    uint64_t subscription;
} self_replacing;

static self_replacing sink_a, sink_b, sub_a, pump_a, pump_b;

static void replacing_finalize(void *user_data) {
    self_replacing *s = user_data;
    atomic_fetch_add(&s->finalized, 1);
}

static void sink_b_fn(void *user_data, const hl_message_t *m) {
    self_replacing *s = user_data;
    (void)m;
    atomic_fetch_add(&s->calls, 1);
}

static void sink_a_fn(void *user_data, const hl_message_t *m) {
    self_replacing *s = user_data;
    (void)m;
    atomic_fetch_add(&s->calls, 1);
    s->status = hl_runtime_set_sink(s->rt, sink_b_fn, &sink_b, replacing_finalize);
    s->finalized_during_call = atomic_load(&s->finalized);
}

static void sub_a_fn(void *user_data, const hl_event_t *e) {
    self_replacing *s = user_data;
    (void)e;
    atomic_fetch_add(&s->calls, 1);
    s->status = hl_runtime_unsubscribe(s->rt, s->subscription);
    s->finalized_during_call = atomic_load(&s->finalized);
}

static void pump_b_fn(void *user_data) {
    self_replacing *s = user_data;
    atomic_fetch_add(&s->calls, 1);
}

static void pump_a_fn(void *user_data) {
    self_replacing *s = user_data;
    atomic_fetch_add(&s->calls, 1);
    s->status = hl_runtime_set_request_pump(s->rt, pump_b_fn, &pump_b, replacing_finalize);
    s->finalized_during_call = atomic_load(&s->finalized);
}

static void case_callbacks_replacing_themselves(void) {
    hl_runtime_t *rt = new_runtime(1);
    self_replacing *all[] = {&sink_a, &sink_b, &sub_a, &pump_a, &pump_b};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        memset(all[i], 0, sizeof *all[i]);
        all[i]->rt = rt;
        all[i]->status = 999;
    }

    /* The sink. */
    EXPECT(hl_runtime_set_sink(rt, sink_a_fn, &sink_a, replacing_finalize), HL_STATUS_OK);
    EXPECT(hl_runtime_emit(rt, "one", NULL, 0), HL_STATUS_OK);
    CHECK(pump_until(rt, &sink_a.calls, 1));
    CHECK(sink_a.status == HL_STATUS_OK);
    CHECK(sink_a.finalized_during_call == 0);
    CHECK(atomic_load(&sink_a.finalized) == 1);
    EXPECT(hl_runtime_emit(rt, "two", NULL, 0), HL_STATUS_OK);
    CHECK(pump_until(rt, &sink_b.calls, 1));
    CHECK(atomic_load(&sink_a.calls) == 1);

    /* A subscriber that unsubscribes itself. */
    EXPECT(hl_runtime_subscribe(rt, HL_EVENT_CUSTOM, sub_a_fn, &sub_a, replacing_finalize,
                                &sub_a.subscription),
           HL_STATUS_OK);
    hl_event_t e = custom_event("first");
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_OK);
    CHECK(pump_until(rt, &sub_a.calls, 1));
    CHECK(sub_a.status == HL_STATUS_OK);
    CHECK(sub_a.finalized_during_call == 0);
    CHECK(atomic_load(&sub_a.finalized) == 1);
    e = custom_event("second");
    EXPECT(hl_runtime_post_event(rt, &e), HL_STATUS_OK);
    EXPECT(hl_runtime_pump(rt, 0, NULL), HL_STATUS_OK);
    CHECK(atomic_load(&sub_a.calls) == 1);

    /* request_pump, rung on this thread by an emit after a pump cleared the doorbell. */
    EXPECT(hl_runtime_pump(rt, 0, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_set_request_pump(rt, pump_a_fn, &pump_a, replacing_finalize), HL_STATUS_OK);
    EXPECT(hl_runtime_emit(rt, "ring", NULL, 0), HL_STATUS_OK);
    CHECK(atomic_load(&pump_a.calls) == 1);
    CHECK(pump_a.status == HL_STATUS_OK);
    CHECK(pump_a.finalized_during_call == 0);
    CHECK(atomic_load(&pump_a.finalized) == 1);
    EXPECT(hl_runtime_pump(rt, 0, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_emit(rt, "ring again", NULL, 0), HL_STATUS_OK);
    CHECK(atomic_load(&pump_b.calls) == 1 && atomic_load(&pump_a.calls) == 1);

    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        CHECK(atomic_load(&all[i]->finalized) == 1);
    }
}

/* Lanes and priorities: each is accepted, and IO jobs run on the IO threads. */
typedef struct lane_probe {
    char thread[32];
    atomic_int ran;
} lane_probe;

static int32_t lane_run(void *user_data, hl_job_ctx_t *ctx) {
    lane_probe *p = user_data;
    (void)ctx;
    char name[17] = {0};
    prctl(PR_GET_NAME, name, 0, 0, 0);
    snprintf(p->thread, sizeof p->thread, "%s", name);
    atomic_store(&p->ran, 1);
    return 0;
}

static atomic_int lanes_done;
static void lane_done(void *user_data, hl_status_t status, int32_t code) {
    (void)user_data;
    (void)status;
    (void)code;
    atomic_fetch_add(&lanes_done, 1);
}

static void case_lanes_and_priorities(void) {
    hl_runtime_t *rt = new_runtime(2);
    lane_probe probes[5];
    memset(probes, 0, sizeof probes);
    uint32_t priorities[4] = {HL_PRIORITY_HIGH, HL_PRIORITY_NORMAL, HL_PRIORITY_LOW,
                              HL_PRIORITY_BACKGROUND};
    for (int i = 0; i < 5; i++) {
        hl_job_desc_t d = job_desc(lane_run, lane_done, &probes[i], NULL);
        if (i < 4) {
            d.priority = priorities[i];
        } else {
            d.lane = HL_LANE_IO;
            d.priority = 3; /* ignored on the IO lane */
        }
        EXPECT(hl_job_spawn(rt, &d, NULL), HL_STATUS_OK);
    }
    CHECK(pump_until(rt, &lanes_done, 5));
    for (int i = 0; i < 5; i++) {
        printf("job %d ran on thread \"%s\"\n", i, probes[i].thread);
        checks++;
        const char *want = i < 4 ? "bad-worker-" : "bad-io-";
        if (strncmp(probes[i].thread, want, strlen(want)) != 0) {
            failures++;
            printf("FAIL job %d ran on \"%s\", expected a \"%s*\" thread\n", i, probes[i].thread,
                   want);
        }
    }
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* The main-thread backlog: with the host not pumping, emits and spawns past the limit are
 * refused with BACKLOG (counted, nothing queued); the callbacks of jobs spawned before it still
 * arrive; everything admitted is delivered once the host pumps, and the limit frees again. */
static atomic_int backlog_messages;
static void backlog_sink(void *user_data, const hl_message_t *message) {
    (void)user_data;
    (void)message;
    atomic_fetch_add(&backlog_messages, 1);
}

static int32_t backlog_run(void *user_data, hl_job_ctx_t *ctx) {
    (void)user_data;
    (void)ctx;
    return 0;
}

static atomic_int backlog_jobs_done;
static void backlog_done(void *user_data, hl_status_t status, int32_t code) {
    (void)user_data;
    (void)status;
    (void)code;
    atomic_fetch_add(&backlog_jobs_done, 1);
}

static void case_backlog(void) {
    hl_runtime_options_t o;
    hl_runtime_options_init(&o);
    o.workers = 1;
    o.io_threads = 1;
    o.main_backlog_limit = 8;
    hl_runtime_t *rt = NULL;
    EXPECT(hl_runtime_new(&o, &rt), HL_STATUS_OK);
    if (rt == NULL) {
        return;
    }
    EXPECT(hl_runtime_set_sink(rt, backlog_sink, NULL, NULL), HL_STATUS_OK);
    /* Two jobs first: their callbacks are promised whatever the backlog becomes. */
    for (int i = 0; i < 2; i++) {
        hl_job_desc_t d = job_desc(backlog_run, backlog_done, NULL, NULL);
        EXPECT(hl_job_spawn(rt, &d, NULL), HL_STATUS_OK);
    }
    int admitted = 0;
    hl_status_t st = HL_STATUS_OK;
    for (int i = 0; i < 100 && st == HL_STATUS_OK; i++) {
        st = hl_runtime_emit(rt, "backlog/msg", "x", 1);
        admitted += st == HL_STATUS_OK;
    }
    EXPECT(st, HL_STATUS_BACKLOG);
    CHECK(admitted >= 6 && admitted <= 8); /* 8 less the job callbacks already queued */
    hl_job_desc_t d = job_desc(backlog_run, backlog_done, NULL, NULL);
    EXPECT(hl_job_spawn(rt, &d, NULL), HL_STATUS_BACKLOG);
    uint64_t queued = 0, limit = 0, refused = 0;
    EXPECT(hl_runtime_backlog(rt, &queued, &limit, &refused), HL_STATUS_OK);
    CHECK(limit == 8);
    CHECK(refused == 2);
    CHECK(queued >= 8);
    EXPECT(hl_runtime_backlog(rt, NULL, NULL, NULL), HL_STATUS_OK);
    EXPECT(hl_runtime_backlog(NULL, &queued, NULL, NULL), HL_STATUS_NULL_ARG);
    CHECK(pump_until(rt, &backlog_messages, admitted));
    CHECK(pump_until(rt, &backlog_jobs_done, 2));
    /* Drained: the limit admits again. */
    EXPECT(hl_runtime_emit(rt, "backlog/msg", "x", 1), HL_STATUS_OK);
    d = job_desc(backlog_run, backlog_done, NULL, NULL);
    EXPECT(hl_job_spawn(rt, &d, NULL), HL_STATUS_OK);
    CHECK(pump_until(rt, &backlog_messages, admitted + 1));
    CHECK(pump_until(rt, &backlog_jobs_done, 3));
    EXPECT(hl_runtime_free(rt), HL_STATUS_OK);
}

/* ---- main --------------------------------------------------------------------------------- */

typedef struct named_case {
    const char *name;
    void (*run)(void);
} named_case;

static const named_case cases[] = {
    {"null_args", case_null_args},
    {"struct_sizes", case_struct_sizes},
    {"thread_name_not_utf8", case_thread_name_not_utf8},
    {"wrong_thread", case_wrong_thread},
    {"reentrant_pump", case_reentrant_pump},
    {"after_shutdown", case_after_shutdown},
    {"invalid_handles", case_invalid_handles},
    {"invalid_utf8", case_invalid_utf8},
    {"bad_array_views", case_bad_array_views},
    {"bad_values", case_bad_values},
    {"huge_lengths", case_huge_lengths},
    {"shutdown_timeout", case_shutdown_timeout},
    {"status_names", case_status_names},
    {"cancel_before_start", case_cancel_before_start},
    {"cancelled_job_returning_zero", case_cancelled_job_returning_zero},
    {"cancelled_job_returning_nonzero", case_cancelled_job_returning_nonzero},
    {"failed_job", case_failed_job},
    {"finalizers", case_finalizers},
    {"runtime_free_finalizes_jobs_with_live_handles",
     case_runtime_free_finalizes_jobs_with_live_handles},
    {"sink_removes_itself", case_sink_removes_itself},
    {"callbacks_replacing_themselves", case_callbacks_replacing_themselves},
    {"lanes_and_priorities", case_lanes_and_priorities},
    {"backlog", case_backlog},
};

int main(int argc, char **argv) {
    main_thread = pthread_self();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fprintf(stderr, "usage: %s <case>\ncases:", argv[0]);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            fprintf(stderr, " %s", cases[i].name);
        }
        fputc('\n', stderr);
        return 2;
    }
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (strcmp(argv[1], cases[i].name) == 0) {
            cases[i].run();
            if (failures != 0) {
                printf("FAIL %s failures=%d checks=%d\n", cases[i].name, failures, checks);
                return 1;
            }
            printf("PASS %s checks=%d\n", cases[i].name, checks);
            return 0;
        }
    }
    fprintf(stderr, "unknown case %s\n", argv[1]);
    return 2;
}
