/*
 * A job's progress on the main thread, from C: `hl_job_desc_t::progress` is called at pumps,
 * coalesced (at most once per pump, with the newest value), never after `done`, and the
 * finalizer runs once after both; a description from before the field (a `struct_size` that
 * ends at `finalize`) is accepted and its `progress` bytes are never read; a job whose runtime
 * shuts down before a pump is finalized without `done`.
 *
 * Prints `name=value` figures and `job_progress: OK`; exits non-zero on any failed check.
 */
#define _POSIX_C_SOURCE 200809L

#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stddef.h>
#include <stdatomic.h>
#include <string.h>

#define REPORTS 200000

typedef struct {
    int progress_calls;
    int progress_off_main;
    int progress_after_done;
    int progress_backwards;
    float last;
    int done_calls;
    hl_status_t done_status;
    atomic_int finalized;
    atomic_int finalized_before_done;
} job_data;

static int32_t report_run(void *user_data, hl_job_ctx_t *ctx) {
    (void)user_data;
    for (int i = 0; i <= REPORTS; i++) {
        if (hl_job_ctx_progress(ctx, (float)i / (float)REPORTS) != HL_STATUS_OK) {
            return 1;
        }
    }
    return 0;
}

static void on_progress(void *user_data, float fraction) {
    job_data *d = user_data;
    d->progress_calls++;
    d->progress_off_main += !on_main_thread();
    d->progress_after_done += d->done_calls > 0;
    d->progress_backwards += fraction < d->last;
    d->last = fraction;
}

static void on_done(void *user_data, hl_status_t status, int32_t code) {
    job_data *d = user_data;
    (void)code;
    d->done_calls++;
    d->done_status = status;
}

static void on_finalize(void *user_data) {
    job_data *d = user_data;
    if (d->done_calls == 0) {
        atomic_fetch_add(&d->finalized_before_done, 1);
    }
    atomic_fetch_add(&d->finalized, 1);
}

static int never_called;
static void must_not_run(void *user_data, float fraction) {
    (void)user_data;
    (void)fraction;
    never_called++;
}

static hl_job_desc_t desc_for(job_data *d, hl_job_done_fn done, hl_job_progress_fn progress) {
    hl_job_desc_t desc;
    memset(&desc, 0, sizeof desc);
    desc.struct_size = sizeof desc;
    desc.priority = HL_PRIORITY_NORMAL;
    desc.lane = HL_LANE_CPU;
    desc.name = "progress-job";
    desc.run = report_run;
    desc.done = done;
    desc.progress = progress;
    desc.user_data = d;
    desc.finalize = on_finalize;
    return desc;
}

/* Pumps (sleeping on the doorbell) until `*flag` reaches `want`; returns the pumps it took. */
static uint64_t pump_until(hl_runtime_t *rt, int fd, atomic_int *flag, int *plain, int want) {
    uint64_t pumps = 0;
    double deadline = now_s() + HANG_LIMIT_S;
    while ((flag != NULL ? atomic_load(flag) : *plain) < want) {
        if (now_s() > deadline) {
            CHECK(0, "nothing after %.0f s", HANG_LIMIT_S);
            break;
        }
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 16) < 0 && errno != EINTR) {
            CHECK(0, "poll: %s", strerror(errno));
            break;
        }
        CHECK_OK(hl_runtime_pump(rt, 2000, NULL));
        pumps++;
    }
    return pumps;
}

static hl_runtime_t *new_runtime(void) {
    hl_runtime_options_t o;
    hl_runtime_options_init(&o);
    o.workers = 2;
    hl_runtime_t *rt = NULL;
    CHECK_OK(hl_runtime_new(&o, &rt));
    return rt;
}

int main(void) {
    main_thread = pthread_self();
    hl_runtime_t *rt = new_runtime();
    int fd = -1;
    CHECK_OK(hl_runtime_wake_fd(rt, &fd));

    /* 1. progress and done: coalesced progress on the main thread, then done, then finalize. */
    job_data a;
    memset(&a, 0, sizeof a);
    a.last = -1.0f;
    hl_job_desc_t desc = desc_for(&a, on_done, on_progress);
    CHECK_OK(hl_job_spawn(rt, &desc, NULL));
    uint64_t pumps_a = pump_until(rt, fd, &a.finalized, NULL, 1);
    CHECK(a.done_calls == 1 && a.done_status == HL_STATUS_OK, "done: %d calls, %s",
          a.done_calls, hl_status_name(a.done_status));
    CHECK(a.progress_calls >= 1, "progress was never called");
    CHECK((uint64_t)a.progress_calls <= pumps_a, "%d progress calls in %" PRIu64 " pumps",
          a.progress_calls, pumps_a);
    CHECK(a.progress_off_main == 0, "progress ran off the main thread");
    CHECK(a.progress_after_done == 0, "progress ran after done");
    CHECK(a.progress_backwards == 0, "progress went backwards");
    CHECK(a.last == 1.0f, "the last progress seen was %f, not the final 1.0", (double)a.last);
    CHECK(atomic_load(&a.finalized_before_done) == 0, "finalized before done");

    /* 2. progress without done: still coalesced, and finalized once the job has ended. */
    job_data b;
    memset(&b, 0, sizeof b);
    b.last = -1.0f;
    desc = desc_for(&b, NULL, on_progress);
    hl_job_t *handle = NULL;
    CHECK_OK(hl_job_spawn(rt, &desc, &handle));
    uint64_t pumps_b = pump_until(rt, fd, &b.finalized, NULL, 1);
    hl_status_t status = HL_STATUS_PENDING;
    CHECK_OK(hl_job_status(handle, &status));
    CHECK(status == HL_STATUS_OK, "job b: %s", hl_status_name(status));
    CHECK(b.progress_off_main == 0 && b.progress_backwards == 0, "job b: bad progress calls");
    CHECK((uint64_t)b.progress_calls <= pumps_b, "job b: %d progress calls in %" PRIu64 " pumps",
          b.progress_calls, pumps_b);
    CHECK_OK(hl_job_free(handle));

    /* 3. an older caller's description, ending at `finalize`: accepted, `progress` not read. */
    job_data c;
    memset(&c, 0, sizeof c);
    desc = desc_for(&c, on_done, must_not_run);
    desc.struct_size = (uint32_t)offsetof(hl_job_desc_t, progress);
    CHECK_OK(hl_job_spawn(rt, &desc, NULL));
    pump_until(rt, fd, &c.finalized, NULL, 1);
    CHECK(c.done_calls == 1 && c.done_status == HL_STATUS_OK, "job c: done %d, %s", c.done_calls,
          hl_status_name(c.done_status));
    CHECK(never_called == 0, "the progress field of a short description was read");
    /* Shorter than that: refused, and the user data stays the caller's. */
    job_data d;
    memset(&d, 0, sizeof d);
    desc = desc_for(&d, on_done, on_progress);
    desc.struct_size = (uint32_t)offsetof(hl_job_desc_t, progress) - 8;
    hl_status_t refused = hl_job_spawn(rt, &desc, NULL);
    CHECK(refused == HL_STATUS_INVALID_ARG, "a description without `finalize`: %s",
          hl_status_name(refused));

    /* 4. shutdown before a pump: no done, no progress, finalized once. */
    job_data e;
    memset(&e, 0, sizeof e);
    e.last = -1.0f;
    desc = desc_for(&e, on_done, on_progress);
    CHECK_OK(hl_job_spawn(rt, &desc, &handle));
    double deadline = now_s() + HANG_LIMIT_S;
    status = HL_STATUS_PENDING;
    while (status == HL_STATUS_PENDING && now_s() < deadline) {
        CHECK_OK(hl_job_status(handle, &status));
        struct pollfd p = {fd, POLLIN, 0};
        (void)poll(&p, 1, 5); /* the host is busy elsewhere: it does not pump */
    }
    CHECK(status == HL_STATUS_OK, "job e: %s", hl_status_name(status));
    CHECK_OK(hl_job_free(handle));
    CHECK_OK(hl_runtime_shutdown(rt, 2000, NULL));
    CHECK_OK(hl_runtime_free(rt));
    CHECK(e.done_calls == 0 && e.progress_calls == 0, "job e: done %d, progress %d after shutdown",
          e.done_calls, e.progress_calls);
    CHECK(atomic_load(&e.finalized) == 1, "job e: finalized %d times", atomic_load(&e.finalized));
    CHECK(atomic_load(&a.finalized) == 1 && atomic_load(&b.finalized) == 1 &&
              atomic_load(&c.finalized) == 1 && atomic_load(&d.finalized) == 0,
          "finalized a=%d b=%d c=%d d=%d (d was refused: never)", atomic_load(&a.finalized),
          atomic_load(&b.finalized), atomic_load(&c.finalized), atomic_load(&d.finalized));

    printf("reports=%d progress_calls=%d pumps=%" PRIu64 " last=%.3f\n", REPORTS + 1,
           a.progress_calls, pumps_a, (double)a.last);
    printf("progress_after_done=%d short_desc_read=%d\n", a.progress_after_done, never_called);
    if (failures != 0) {
        fprintf(stderr, "job_progress: %d checks failed\n", failures);
        return 1;
    }
    printf("job_progress: OK\n");
    return 0;
}
