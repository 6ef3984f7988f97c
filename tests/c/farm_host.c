/*
 * A C host runs simulations on a farm (`hostloop/farm.h`): it makes a runtime, sleeps in poll()
 * on its wake fd and pumps when the fd is readable — nothing else. `hl_farm_run` submits a
 * chain of `hostloop-worker run` segments to Slurm; every progress callback and the done
 * callback must arrive on the main thread, progress never after done, the finalizer once after
 * done. A second, endless run is cancelled at its first progress report with a step above 0:
 * done says CANCELLED (the Rust side then checks that Slurm has none of its jobs left).
 *
 * Bad input first, which needs no cluster: NULL and wrongly sized specs, bad fields, a call off
 * the main thread, stale handles, an unreachable Slurm (done: FAILED), a shut-down runtime —
 * each its documented status, with neither callback nor the finalizer called on a refusal.
 *
 * Usage: farm_host WORKER PLUGIN DIR bad|all
 *   bad: only the bad-input part; all: also the two runs on the cluster (SLURM_CONF set), in
 *   DIR/run and DIR/cancelled.
 *
 * Prints `progress run=<a|b> main=<0|1> fraction=<f> message=<text>` per progress call,
 * `done run=<x> status=<name> main=<0|1> text=<text>`, `name=value` figures and
 * `farm_host: OK`; exits non-zero on any failed check.
 */
#define _POSIX_C_SOURCE 200809L

#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* A farm run waits on Slurm's scheduler: generous, and only reached on a hang. */
#define FARM_LIMIT_S 150.0

typedef struct {
    const char *name;
    int progress_calls;
    int progress_off_main;
    int progress_after_done;
    int progress_backwards;
    float last;
    uint64_t last_step;
    int cancel_at_first_step;
    hl_farm_run_t *handle;
    int cancelled;
    int done_calls;
    int done_off_main;
    hl_status_t done_status;
    char text[4096];
    atomic_int finalized;
    int finalized_before_done;
} run_data;

static void init_data(run_data *d, const char *name) {
    memset(d, 0, sizeof *d);
    d->name = name;
    d->last = -1.0f;
    d->done_status = HL_STATUS_PENDING;
}

/* The step in "segment k/n, step S of N"; 0 when there is none. */
static uint64_t step_of(const char *message) {
    const char *at = strstr(message, "step ");
    return at == NULL ? 0 : strtoull(at + 5, NULL, 10);
}

static void on_progress(void *user_data, float fraction, const char *message) {
    run_data *d = user_data;
    d->progress_calls++;
    d->progress_off_main += !on_main_thread();
    d->progress_after_done += d->done_calls > 0;
    d->progress_backwards += fraction < d->last;
    d->last = fraction;
    CHECK(message != NULL, "run %s: a NULL progress message", d->name);
    if (message == NULL) {
        return;
    }
    d->last_step = step_of(message);
    printf("progress run=%s main=%d fraction=%.4f message=%s\n", d->name, on_main_thread(),
           (double)fraction, message);
    if (d->cancel_at_first_step && !d->cancelled && d->last_step > 0) {
        /* [any-thread]: fine here too, inside the callback on the main thread. */
        CHECK_OK(hl_farm_run_cancel(d->handle));
        d->cancelled = 1;
        printf("cancelled run=%s at_step=%" PRIu64 "\n", d->name, d->last_step);
    }
}

static void on_done(void *user_data, hl_status_t status, const char *text) {
    run_data *d = user_data;
    d->done_calls++;
    d->done_off_main += !on_main_thread();
    d->done_status = status;
    CHECK(text != NULL, "run %s: done with NULL text", d->name);
    snprintf(d->text, sizeof d->text, "%s", text != NULL ? text : "");
    printf("done run=%s status=%s main=%d text=%s\n", d->name, hl_status_name(status),
           on_main_thread(), d->text);
}

static void on_finalize(void *user_data) {
    run_data *d = user_data;
    d->finalized_before_done += d->done_calls == 0;
    atomic_fetch_add(&d->finalized, 1);
}

/* Sleeps on the wake fd and pumps when it is readable, until `d` is finalized. */
static uint64_t pump_until_finalized(hl_runtime_t *rt, int fd, run_data *d) {
    uint64_t pumps = 0;
    double deadline = now_s() + FARM_LIMIT_S;
    while (atomic_load(&d->finalized) == 0) {
        if (now_s() > deadline) {
            CHECK(0, "run %s: not done after %.0f s", d->name, FARM_LIMIT_S);
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        int ready = poll(&p, 1, 1000);
        if (ready < 0 && errno != EINTR) {
            CHECK(0, "poll: %s", strerror(errno));
            break;
        }
        if (ready > 0) {
            CHECK_OK(hl_runtime_pump(rt, 2000, NULL));
            pumps++;
        }
    }
    return pumps;
}

static hl_farm_spec_t spec_for(const char *worker, const char *plugin, const char *dir) {
    hl_farm_spec_t spec;
    CHECK_OK(hl_farm_spec_init(&spec));
    spec.worker = worker;
    spec.plugin = plugin;
    spec.dir = dir;
    spec.configure = "agents=1000";
    spec.steps = 400;
    spec.segments = 2;
    spec.save_every = 50;
    return spec;
}

/* hl_farm_run with `spec` must return `want`, call nothing back and leave `out` alone. */
#define REFUSED(rt, spec_ptr, want)                                                            \
    do {                                                                                       \
        run_data r_;                                                                           \
        init_data(&r_, "refused");                                                             \
        hl_farm_run_t *out_ = (hl_farm_run_t *)&r_;                                            \
        hl_status_t st_ =                                                                      \
            hl_farm_run((rt), (spec_ptr), on_progress, on_done, &r_, on_finalize, &out_);      \
        CHECK(st_ == (want), "%s: %s (%s), expected %s", #spec_ptr, hl_status_name(st_),     \
              hl_last_error(), hl_status_name(want));                                          \
        CHECK(out_ == (hl_farm_run_t *)&r_, "%s: out was written on failure", #spec_ptr);     \
        CHECK(atomic_load(&r_.finalized) == 0, "%s: finalized on failure", #spec_ptr);       \
        refused++;                                                                             \
    } while (0)

static int refused;

typedef struct {
    hl_runtime_t *rt;
    const hl_farm_spec_t *spec;
    hl_status_t status;
    int finalized;
} off_main_call;

static void count_finalize(void *user_data) { ((off_main_call *)user_data)->finalized++; }

static void *call_off_main(void *arg) {
    off_main_call *c = arg;
    hl_farm_run_t *out = NULL;
    c->status = hl_farm_run(c->rt, c->spec, NULL, NULL, c, count_finalize, &out);
    return NULL;
}

/* Everything a host can get wrong, and an unreachable Slurm. */
static void bad_input(hl_runtime_t *rt, int fd, const char *worker, const char *plugin,
                      const char *dir) {
    hl_farm_spec_t good = spec_for(worker, plugin, dir);
    hl_farm_spec_t s;

    CHECK(hl_farm_spec_init(NULL) == HL_STATUS_NULL_ARG, "spec_init(NULL)");
    CHECK(good.struct_size == sizeof good && good.backend == HL_FARM_SLURM, "spec_init fields");
    REFUSED(NULL, &good, HL_STATUS_NULL_ARG);
    REFUSED((hl_runtime_t *)(uintptr_t)0x51, &good, HL_STATUS_INVALID_HANDLE);
    REFUSED(rt, NULL, HL_STATUS_NULL_ARG);
    s = good;
    s.worker = NULL;
    REFUSED(rt, &s, HL_STATUS_NULL_ARG);
    s = good;
    s.plugin = NULL;
    REFUSED(rt, &s, HL_STATUS_NULL_ARG);
    s = good;
    s.dir = NULL;
    REFUSED(rt, &s, HL_STATUS_NULL_ARG);
    s = good;
    s.dir = "";
    REFUSED(rt, &s, HL_STATUS_INVALID_ARG);
    s = good;
    s.struct_size = (uint32_t)sizeof s - 8;
    REFUSED(rt, &s, HL_STATUS_INVALID_ARG);
    s = good;
    s.struct_size = 0;
    REFUSED(rt, &s, HL_STATUS_INVALID_ARG);
    s = good;
    s.segments = 0;
    REFUSED(rt, &s, HL_STATUS_INVALID_ARG);
    s = good;
    s.steps = 0;
    REFUSED(rt, &s, HL_STATUS_INVALID_ARG);
    s = good;
    s.segments = 401;
    REFUSED(rt, &s, HL_STATUS_INVALID_ARG);
    s = good;
    s.backend = 7;
    REFUSED(rt, &s, HL_STATUS_INVALID_ARG);
    s = good;
    s.reserved = 1;
    REFUSED(rt, &s, HL_STATUS_INVALID_ARG);
    s = good;
    s.restore = "some.state";
    REFUSED(rt, &s, HL_STATUS_INVALID_ARG);
    s = good;
    s.configure = "agents=\xff";
    REFUSED(rt, &s, HL_STATUS_INVALID_UTF8);
    s = good;
    s.slurm_partition = "\xfe";
    REFUSED(rt, &s, HL_STATUS_INVALID_UTF8);
    /* A newer caller's larger struct: refused when it asks for something unknown. */
    struct {
        hl_farm_spec_t spec;
        uint64_t newer_field;
    } big;
    memset(&big, 0, sizeof big);
    big.spec = good;
    big.spec.struct_size = (uint32_t)sizeof big;
    big.newer_field = 1;
    REFUSED(rt, &big.spec, HL_STATUS_VERSION_MISMATCH);

    /* Off the main thread. */
    off_main_call c = {rt, &good, HL_STATUS_OK, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, call_off_main, &c) == 0, "pthread_create");
    pthread_join(t, NULL);
    CHECK(c.status == HL_STATUS_WRONG_THREAD, "off the main thread: %s",
          hl_status_name(c.status));
    CHECK(c.finalized == 0, "finalized after WRONG_THREAD");

    /* Handles: NULL, never made, stale. */
    float fraction = 0.0f;
    hl_status_t status = HL_STATUS_OK;
    hl_farm_run_t *bogus = (hl_farm_run_t *)(uintptr_t)0x1234;
    CHECK(hl_farm_run_cancel(NULL) == HL_STATUS_NULL_ARG, "cancel(NULL)");
    CHECK(hl_farm_run_progress(NULL, &fraction) == HL_STATUS_NULL_ARG, "progress(NULL)");
    CHECK(hl_farm_run_status(NULL, &status) == HL_STATUS_NULL_ARG, "status(NULL)");
    CHECK(hl_farm_run_free(NULL) == HL_STATUS_NULL_ARG, "free(NULL)");
    CHECK(hl_farm_run_cancel(bogus) == HL_STATUS_INVALID_HANDLE, "cancel(bogus)");
    CHECK(hl_farm_run_progress(bogus, &fraction) == HL_STATUS_INVALID_HANDLE, "progress(bogus)");
    CHECK(hl_farm_run_status(bogus, &status) == HL_STATUS_INVALID_HANDLE, "status(bogus)");
    CHECK(hl_farm_run_free(bogus) == HL_STATUS_INVALID_HANDLE, "free(bogus)");

    /* An unreachable Slurm, with a larger struct whose extra bytes are 0 (accepted): the
     * submission fails in the job, and done says so, on the main thread, then the finalizer. */
    char nowhere[4096];
    snprintf(nowhere, sizeof nowhere, "%s/no-slurm-here", dir);
    big.newer_field = 0;
    big.spec.slurm_bin_dir = nowhere;
    run_data u;
    init_data(&u, "unreachable");
    CHECK_OK(hl_farm_run(rt, &big.spec, on_progress, on_done, &u, on_finalize, &u.handle));
    pump_until_finalized(rt, fd, &u);
    CHECK(u.done_calls == 1 && u.done_status == HL_STATUS_FAILED, "unreachable: done %d, %s",
          u.done_calls, hl_status_name(u.done_status));
    /* "cannot run sbatch (No such file ...)"; under valgrind, whose exec emulation cannot
     * report the failed exec to the parent, "sbatch failed (exit status: 127)". */
    CHECK(strstr(u.text, "sbatch") != NULL, "unreachable: %s", u.text);
    CHECK(u.done_off_main == 0 && u.finalized_before_done == 0, "unreachable: threads/order");
    CHECK_OK(hl_farm_run_status(u.handle, &status));
    CHECK(status == HL_STATUS_FAILED, "unreachable: status %s", hl_status_name(status));
    CHECK(hl_farm_run_status(u.handle, NULL) == HL_STATUS_NULL_ARG, "status(run, NULL)");
    CHECK(hl_farm_run_progress(u.handle, NULL) == HL_STATUS_NULL_ARG, "progress(run, NULL)");
    CHECK_OK(hl_farm_run_cancel(u.handle)); /* after done: nothing */
    CHECK_OK(hl_farm_run_free(u.handle));
    CHECK(hl_farm_run_free(u.handle) == HL_STATUS_INVALID_HANDLE, "free twice");
    CHECK(hl_farm_run_status(u.handle, &status) == HL_STATUS_INVALID_HANDLE, "status(freed)");
    CHECK(hl_farm_run_cancel(u.handle) == HL_STATUS_INVALID_HANDLE, "cancel(freed)");
    CHECK(atomic_load(&u.finalized) == 1, "unreachable: finalized %d times",
          atomic_load(&u.finalized));
    printf("refused=%d unreachable=%s\n", refused, hl_status_name(u.done_status));
}

/* The farm: one run to its end, one cancelled while its first segment runs. */
static void farm_runs(hl_runtime_t *rt, int fd, const char *worker, const char *plugin,
                      const char *dir) {
    char run_dir[4096];
    snprintf(run_dir, sizeof run_dir, "%s/run", dir);
    hl_farm_spec_t spec = spec_for(worker, plugin, run_dir);
    run_data a;
    init_data(&a, "a");
    double start = now_s();
    CHECK_OK(hl_farm_run(rt, &spec, on_progress, on_done, &a, on_finalize, &a.handle));
    uint64_t pumps = pump_until_finalized(rt, fd, &a);
    CHECK(a.done_calls == 1 && a.done_status == HL_STATUS_OK, "run a: done %d, %s: %s",
          a.done_calls, hl_status_name(a.done_status), a.text);
    CHECK(a.progress_calls >= 1, "run a: no progress");
    CHECK(a.progress_off_main == 0 && a.done_off_main == 0, "run a: a callback off main");
    CHECK(a.progress_after_done == 0, "run a: progress after done");
    CHECK(a.progress_backwards == 0, "run a: progress went backwards");
    CHECK(a.last == 1.0f, "run a: last progress %f", (double)a.last);
    CHECK(a.finalized_before_done == 0 && atomic_load(&a.finalized) == 1, "run a: finalizer");
    float fraction = 0.0f;
    hl_status_t status = HL_STATUS_PENDING;
    CHECK_OK(hl_farm_run_progress(a.handle, &fraction));
    CHECK_OK(hl_farm_run_status(a.handle, &status));
    CHECK(fraction == 1.0f && status == HL_STATUS_OK, "run a: handle says %f, %s",
          (double)fraction, hl_status_name(status));
    CHECK_OK(hl_farm_run_free(a.handle));
    printf("run_a_seconds=%.1f run_a_pumps=%" PRIu64 " run_a_progress_calls=%d\n",
           now_s() - start, pumps, a.progress_calls);
    printf("final_state=%s\n", a.text);

    /* The frames the segments wrote, read back by memory map. */
    char cache_path[4200];
    snprintf(cache_path, sizeof cache_path, "%s/frames.hlcache", run_dir);
    hl_cache_t *cache = NULL;
    CHECK_OK(hl_cache_open(cache_path, &cache));
    uint64_t frames = 0;
    CHECK_OK(hl_cache_frame_count(cache, &frames));
    CHECK_OK(hl_cache_free(cache));
    printf("cache_frames=%" PRIu64 "\n", frames);

    /* An endless run, cancelled at its first report of a step. */
    char cancel_dir[4096];
    snprintf(cancel_dir, sizeof cancel_dir, "%s/cancelled", dir);
    spec = spec_for(worker, plugin, cancel_dir);
    spec.steps = 10000000;
    spec.save_every = 0;
    spec.cache = 0;
    run_data b;
    init_data(&b, "b");
    b.cancel_at_first_step = 1;
    CHECK_OK(hl_farm_run(rt, &spec, on_progress, on_done, &b, on_finalize, &b.handle));
    pump_until_finalized(rt, fd, &b);
    CHECK(b.cancelled, "run b: never reported a step, so it was not cancelled");
    CHECK(b.done_calls == 1 && b.done_status == HL_STATUS_CANCELLED, "run b: done %d, %s: %s",
          b.done_calls, hl_status_name(b.done_status), b.text);
    CHECK(b.progress_off_main == 0 && b.done_off_main == 0, "run b: a callback off main");
    CHECK(b.progress_after_done == 0 && b.finalized_before_done == 0, "run b: order");
    CHECK_OK(hl_farm_run_status(b.handle, &status));
    CHECK(status == HL_STATUS_CANCELLED, "run b: status %s", hl_status_name(status));
    CHECK_OK(hl_farm_run_free(b.handle));
    printf("cancelled_dir=%s\n", cancel_dir);
}

int main(int argc, char **argv) {
    main_thread = pthread_self();
    if (argc != 5 || (strcmp(argv[4], "bad") != 0 && strcmp(argv[4], "all") != 0)) {
        fprintf(stderr, "usage: farm_host WORKER PLUGIN DIR bad|all\n");
        return 2;
    }
    const char *worker = argv[1], *plugin = argv[2], *dir = argv[3];
    hl_runtime_options_t o;
    CHECK_OK(hl_runtime_options_init(&o));
    o.workers = 1;
    hl_runtime_t *rt = NULL;
    CHECK_OK(hl_runtime_new(&o, &rt));
    int fd = -1;
    CHECK_OK(hl_runtime_wake_fd(rt, &fd));

    bad_input(rt, fd, worker, plugin, dir);
    if (strcmp(argv[4], "all") == 0) {
        farm_runs(rt, fd, worker, plugin, dir);
    }

    /* After shutdown: SHUT_DOWN, nothing called back. */
    CHECK_OK(hl_runtime_shutdown(rt, 5000, NULL));
    hl_farm_spec_t spec = spec_for(worker, plugin, dir);
    REFUSED(rt, &spec, HL_STATUS_SHUT_DOWN);
    CHECK_OK(hl_runtime_free(rt));

    if (failures != 0) {
        fprintf(stderr, "farm_host: %d checks failed\n", failures);
        return 1;
    }
    printf("farm_host: OK\n");
    return 0;
}
