/*
 * A real C11 host loop on libhostloop, the way a DCC integration would write it.
 *
 * It creates a runtime, watches the doorbell fd with poll() next to a 16 ms frame timer, pumps
 * with a 2 ms budget, registers a sink and two event subscriptions, spawns JOBS C jobs that
 * compute, report progress and emit bytes and float xyz positions to the sink, cancels one
 * long-running job, posts events, then shuts down and frees the runtime. Every callback checks
 * that it runs on the main thread; every user_data must be finalized exactly once.
 *
 * Prints `key=value` lines that tests/tests/host.rs asserts on, and exits non-zero if any check
 * failed (each failure is printed as a `FAIL` line on stderr).
 */
#define _POSIX_C_SOURCE 200809L

#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define JOBS 50
#define WORKERS 4
#define IO_THREADS 2

/* ---- jobs ------------------------------------------------------------------------------- */

typedef struct job_data {
    int index;
    uint64_t n;
    uint64_t sum;          /* written by run */
    int emit_errors;       /* written by run */
    int done_calls;        /* main thread */
    hl_status_t done_status;
    int32_t done_code;
    int done_off_main;
    int finalized_before_done;
    atomic_int finalized;
    hl_job_t *handle;
} job_data;

typedef struct point4 {
    float x, y, z, pad;
} point4;

static hl_runtime_t *rt;
static job_data jobs[JOBS];
static int done_count;

/* sum of i*i for i < n */
static uint64_t expected_sum(uint64_t n) {
    return n == 0 ? 0 : (n - 1) * n * (2 * n - 1) / 6;
}

static int32_t job_run(void *user_data, hl_job_ctx_t *ctx) {
    job_data *jd = user_data;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < jd->n; i++) {
        if (i % 1000 == 0) {
            if (hl_job_ctx_check(ctx) != HL_STATUS_OK) {
                return 1;
            }
            hl_job_ctx_progress(ctx, (float)i / (float)jd->n);
        }
        sum += i * i;
    }
    jd->sum = sum;
    hl_job_ctx_progress(ctx, 1.0f);

    char text[64];
    int len = snprintf(text, sizeof text, "job=%d sum=%" PRIu64, jd->index, sum);
    if (hl_runtime_emit(rt, "hostloop/result", text, (size_t)len) != HL_STATUS_OK) {
        jd->emit_errors++;
    }

    /* Strided input (16-byte records holding 12 bytes of xyz): the sink must see them packed. */
    size_t count = (size_t)jd->index + 1;
    point4 *points = malloc(count * sizeof *points);
    if (points == NULL) {
        return 2;
    }
    for (size_t i = 0; i < count; i++) {
        points[i].x = (float)jd->index;
        points[i].y = (float)i;
        points[i].z = -(float)i;
        points[i].pad = 12345.0f;
    }
    hl_array_view_t view = {HL_ELEM_F32, 3, count, sizeof(point4), points,
                            count * sizeof(point4)};
    if (hl_runtime_emit_array(rt, "hostloop/positions", &view) != HL_STATUS_OK) {
        jd->emit_errors++;
    }
    free(points);
    return 0;
}

static void job_done(void *user_data, hl_status_t status, int32_t code) {
    job_data *jd = user_data;
    jd->done_calls++;
    jd->done_status = status;
    jd->done_code = code;
    jd->done_off_main += !on_main_thread();
    jd->finalized_before_done += atomic_load(&jd->finalized) != 0;
    done_count++;
}

static void job_finalize(void *user_data) {
    job_data *jd = user_data;
    atomic_fetch_add(&jd->finalized, 1);
}

/* The long job: runs until cancelled. */
typedef struct long_data {
    atomic_int started;
    uint64_t iterations;
    int last_error_empty;  /* hl_last_error() after hl_job_ctx_check said CANCELLED */
    int done_calls;
    hl_status_t done_status;
    int done_off_main;
    atomic_int finalized;
} long_data;

static long_data long_job;

static int32_t long_run(void *user_data, hl_job_ctx_t *ctx) {
    long_data *ld = user_data;
    atomic_store(&ld->started, 1);
    while (hl_job_ctx_check(ctx) == HL_STATUS_OK) {
        ld->iterations++;
        if (ld->iterations % 4096 == 0) {
            hl_job_ctx_progress(ctx, 0.5f);
        }
    }
    ld->last_error_empty = hl_last_error()[0] == '\0';
    return 0;
}

static void long_done(void *user_data, hl_status_t status, int32_t code) {
    long_data *ld = user_data;
    (void)code;
    ld->done_calls++;
    ld->done_status = status;
    ld->done_off_main += !on_main_thread();
    done_count++;
}

static void long_finalize(void *user_data) {
    long_data *ld = user_data;
    atomic_fetch_add(&ld->finalized, 1);
}

/* The idle-wake probe: one job spawned while the host is idle. */
static int wake_probe_done;
static atomic_int wake_probe_finalized;

static int32_t wake_probe_run(void *user_data, hl_job_ctx_t *ctx) {
    (void)user_data;
    (void)ctx;
    return 0;
}

static void wake_probe_done_fn(void *user_data, hl_status_t status, int32_t code) {
    (void)user_data;
    wake_probe_done += status == HL_STATUS_OK && code == 0 && on_main_thread();
}

static void wake_probe_finalize(void *user_data) {
    (void)user_data;
    atomic_fetch_add(&wake_probe_finalized, 1);
}

/* ---- sink --------------------------------------------------------------------------------- */

typedef struct sink_data {
    int messages;
    int seen_bytes[JOBS];
    int seen_array[JOBS];
    /* Each array message's payload, kept past its sink call (hl_message_lend). */
    hl_lease_t *leases[JOBS];
    const void *lent_data[JOBS];
    int off_main;
    int bad;
    atomic_int finalized;
} sink_data;

static sink_data sink;

static void on_message(void *user_data, const hl_message_t *m) {
    sink_data *s = user_data;
    s->messages++;
    s->off_main += !on_main_thread();
    if (m->struct_size < sizeof(hl_message_t) || strlen(m->topic) != m->topic_len) {
        s->bad++;
        return;
    }
    if (strcmp(m->topic, "hostloop/result") == 0 && m->payload_kind == HL_PAYLOAD_BYTES) {
        char text[64];
        if (m->bytes == NULL || m->bytes_len == 0 || m->bytes_len >= sizeof text) {
            s->bad++;
            return;
        }
        memcpy(text, m->bytes, m->bytes_len);
        text[m->bytes_len] = '\0';
        int index = -1;
        uint64_t sum = 0;
        if (sscanf(text, "job=%d sum=%" SCNu64, &index, &sum) != 2 || index < 0 ||
            index >= JOBS || sum != expected_sum(jobs[index].n)) {
            fprintf(stderr, "bad result message: %s\n", text);
            s->bad++;
            return;
        }
        s->seen_bytes[index]++;
    } else if (strcmp(m->topic, "hostloop/positions") == 0 &&
               m->payload_kind == HL_PAYLOAD_ARRAY) {
        const hl_array_view_t *a = &m->array;
        if (a->elem_type != HL_ELEM_F32 || a->components != 3 || a->stride != 12 ||
            a->count == 0 || a->count > JOBS || a->byte_len != a->count * 12 || a->data == NULL) {
            s->bad++;
            return;
        }
        int index = (int)a->count - 1;
        for (uint64_t i = 0; i < a->count; i++) {
            float xyz[3];
            memcpy(xyz, (const char *)a->data + i * a->stride, sizeof xyz);
            if (xyz[0] != (float)index || xyz[1] != (float)i || xyz[2] != -(float)i) {
                s->bad++;
                return;
            }
        }
        s->seen_array[index]++;
        if (s->leases[index] == NULL) {
            s->leases[index] = hl_message_lend(m);
            s->lent_data[index] = a->data;
            if (s->leases[index] == NULL) {
                fprintf(stderr, "hl_message_lend: %s\n", hl_last_error());
                s->bad++;
            }
        }
    } else {
        s->bad++;
    }
}

static void *release_half(void *arg) {
    hl_lease_t **leases = arg;
    for (int k = 0; k < JOBS / 2; k++) {
        hl_lease_release(leases[k]);
    }
    return NULL;
}

static void sink_finalize(void *user_data) {
    sink_data *s = user_data;
    atomic_fetch_add(&s->finalized, 1);
}

/* ---- events ------------------------------------------------------------------------------- */

typedef struct event_data {
    int custom;
    int frames;
    double last_frame;
    int other;
    int off_main;
    atomic_int finalized;
} event_data;

static event_data events_all, events_unsubscribed;

static void on_event(void *user_data, const hl_event_t *e) {
    event_data *d = user_data;
    d->off_main += !on_main_thread();
    if (e->kind == HL_EVENT_FRAME_CHANGED) {
        d->frames++;
        d->last_frame = e->frame;
    } else if (e->kind == HL_EVENT_CUSTOM && e->topic != NULL &&
               strcmp(e->topic, "host/ping") == 0 && e->bytes_len == 5 &&
               memcmp(e->bytes, "hello", 5) == 0) {
        d->custom++;
    } else {
        d->other++;
    }
}

static void event_finalize(void *user_data) {
    event_data *d = user_data;
    atomic_fetch_add(&d->finalized, 1);
}

/* ---- request_pump ------------------------------------------------------------------------- */

static atomic_uint_fast64_t pump_requests;
static atomic_int request_pump_finalized;

static void request_pump(void *user_data) {
    (void)user_data;
    atomic_fetch_add(&pump_requests, 1);
}

static void request_pump_finalize(void *user_data) {
    (void)user_data;
    atomic_fetch_add(&request_pump_finalized, 1);
}

/* ---- the host ----------------------------------------------------------------------------- */

int main(void) {
    main_thread = pthread_self();
    const int fds_before = open_fds();

    hl_runtime_options_t options;
    CHECK_OK(hl_runtime_options_init(&options));
    CHECK(options.struct_size == sizeof options, "options.struct_size %u",
          (unsigned)options.struct_size);
    CHECK(options.abi_version == HL_ABI_VERSION, "options.abi_version %u",
          (unsigned)options.abi_version);
    CHECK(hl_abi_version() == HL_ABI_VERSION, "hl_abi_version %u", (unsigned)hl_abi_version());
    CHECK(hl_version() == HL_VERSION, "hl_version %u", (unsigned)hl_version());
    options.workers = WORKERS;
    options.io_threads = IO_THREADS;
    options.thread_name = "c-host";
    CHECK_OK(hl_runtime_new(&options, &rt));
    if (rt == NULL) {
        fprintf(stderr, "no runtime: %s\n", hl_last_error());
        return 1;
    }

    int fd = -1;
    CHECK_OK(hl_runtime_wake_fd(rt, &fd));
    CHECK(fd >= 0, "wake fd %d", fd);
    CHECK_OK(hl_runtime_set_request_pump(rt, request_pump, NULL, request_pump_finalize));
    CHECK_OK(hl_runtime_set_sink(rt, on_message, &sink, sink_finalize));

    uint64_t sub_all = 0, sub_gone = 0;
    CHECK_OK(hl_runtime_subscribe(rt, 0, on_event, &events_all, event_finalize, &sub_all));
    CHECK_OK(hl_runtime_subscribe(rt, HL_EVENT_CUSTOM, on_event, &events_unsubscribed,
                                  event_finalize, &sub_gone));
    CHECK(sub_all != sub_gone, "subscription ids %" PRIu64 " and %" PRIu64, sub_all, sub_gone);
    CHECK_OK(hl_runtime_unsubscribe(rt, sub_gone));
    CHECK(atomic_load(&events_unsubscribed.finalized) == 1,
          "unsubscribing on the main thread finalizes at once (finalized %d)",
          atomic_load(&events_unsubscribed.finalized));

    /* The long job first, on the high lane, so it is running while the others are. */
    hl_job_t *long_handle = NULL;
    hl_job_desc_t desc;
    memset(&desc, 0, sizeof desc);
    desc.struct_size = sizeof desc;
    desc.priority = HL_PRIORITY_HIGH;
    desc.lane = HL_LANE_CPU;
    desc.name = "long-job";
    desc.run = long_run;
    desc.done = long_done;
    desc.user_data = &long_job;
    desc.finalize = long_finalize;
    CHECK_OK(hl_job_spawn(rt, &desc, &long_handle));

    for (int k = 0; k < JOBS; k++) {
        jobs[k].index = k;
        jobs[k].n = 1000u * (uint64_t)(k + 1);
        memset(&desc, 0, sizeof desc);
        desc.struct_size = sizeof desc;
        desc.priority = (uint32_t)(k % 4);
        desc.lane = k % 5 == 0 ? HL_LANE_IO : HL_LANE_CPU;
        desc.name = "sum-job";
        desc.run = job_run;
        desc.done = job_done;
        desc.user_data = &jobs[k];
        desc.finalize = job_finalize;
        CHECK_OK(hl_job_spawn(rt, &desc, &jobs[k].handle));
    }

    /* Three frame changes and a custom event before any pump: the frames coalesce to one. */
    hl_event_t ev;
    for (int f = 1; f <= 3; f++) {
        memset(&ev, 0, sizeof ev);
        ev.struct_size = sizeof ev;
        ev.kind = HL_EVENT_FRAME_CHANGED;
        ev.frame = (double)f;
        CHECK_OK(hl_runtime_post_event(rt, &ev));
    }
    memset(&ev, 0, sizeof ev);
    ev.struct_size = sizeof ev;
    ev.kind = HL_EVENT_CUSTOM;
    ev.topic = "host/ping";
    ev.bytes = "hello";
    ev.bytes_len = 5;
    CHECK_OK(hl_runtime_post_event(rt, &ev));

    /* The loop: poll the doorbell with a frame timer; pump when readable and on every frame. */
    uint64_t pumps = 0, wakes = 0, frame_pumps = 0, wake_items = 0, items = 0;
    int cancel_sent = 0;
    float long_progress = -1.0f;
    double deadline = now_s() + HANG_LIMIT_S;
    while (done_count < JOBS + 1 || events_all.custom + events_all.frames < 2) {
        if (now_s() > deadline) {
            CHECK(0, "the loop did not finish in %.0f s: %d done callbacks", HANG_LIMIT_S,
                  done_count);
            break;
        }
        if (!cancel_sent && atomic_load(&long_job.started)) {
            CHECK_OK(hl_job_progress(long_handle, &long_progress));
            CHECK_OK(hl_job_cancel(long_handle));
            cancel_sent = 1;
        }
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, 16);
        if (r < 0) {
            CHECK(errno == EINTR, "poll: %s", strerror(errno));
            if (errno != EINTR) {
                break;
            }
            continue;
        }
        hl_pump_report_t report;
        memset(&report, 0, sizeof report);
        report.struct_size = sizeof report;
        CHECK_OK(hl_runtime_pump(rt, 2000, &report));
        CHECK(report.struct_size == sizeof report, "pump report struct_size %u",
              (unsigned)report.struct_size);
        pumps++;
        items += report.ran;
        if (r > 0 && (p.revents & POLLIN)) {
            wakes++;
            wake_items += report.ran;
        } else {
            frame_pumps++;
        }
    }

    /* Drain, then one more pump: with nothing left to do the doorbell must be quiet. */
    hl_pump_report_t report;
    for (int i = 0; i < 1000; i++) {
        memset(&report, 0, sizeof report);
        report.struct_size = sizeof report;
        CHECK_OK(hl_runtime_pump(rt, 2000, &report));
        pumps++;
        items += report.ran;
        if (report.remaining == 0) {
            break;
        }
    }
    CHECK(report.remaining == 0, "pump left %" PRIu64 " items", report.remaining);
    memset(&report, 0, sizeof report);
    report.struct_size = sizeof report;
    CHECK_OK(hl_runtime_pump(rt, 2000, &report));
    pumps++;
    CHECK(report.ran == 0, "an idle pump ran %" PRIu64 " items", report.ran);
    struct pollfd quiet = {fd, POLLIN, 0};
    int doorbell_quiet = poll(&quiet, 1, 0) == 0;
    CHECK(doorbell_quiet, "the doorbell is readable with nothing queued");

    /* The doorbell wakes an idle host: with the queue drained and the fd quiet, a job's result
     * alone must make poll() return (the 10 s timeout only runs out if the doorbell is broken). */
    memset(&desc, 0, sizeof desc);
    desc.struct_size = sizeof desc;
    desc.priority = HL_PRIORITY_NORMAL;
    desc.name = "wake-probe";
    desc.run = wake_probe_run;
    desc.done = wake_probe_done_fn;
    desc.finalize = wake_probe_finalize;
    CHECK_OK(hl_job_spawn(rt, &desc, NULL));
    struct pollfd idle = {fd, POLLIN, 0};
    int idle_wake = poll(&idle, 1, 10000) == 1 && (idle.revents & POLLIN);
    CHECK(idle_wake, "an idle host was not woken by the doorbell when a job finished");
    for (int i = 0; i < 1000 && wake_probe_done == 0; i++) {
        memset(&report, 0, sizeof report);
        report.struct_size = sizeof report;
        CHECK_OK(hl_runtime_pump(rt, 2000, &report));
        pumps++;
        items += report.ran;
    }
    CHECK(wake_probe_done == 1, "the probe job's done ran %d times", wake_probe_done);

    /* Check every job. */
    int results = 0, bytes_messages = 0, array_messages = 0;
    for (int k = 0; k < JOBS; k++) {
        job_data *jd = &jobs[k];
        CHECK(jd->done_calls == 1, "job %d: done called %d times", k, jd->done_calls);
        CHECK(jd->done_status == HL_STATUS_OK && jd->done_code == 0, "job %d: done(%s, %d)", k,
              hl_status_name(jd->done_status), (int)jd->done_code);
        CHECK(jd->done_off_main == 0, "job %d: done ran off the main thread", k);
        CHECK(jd->finalized_before_done == 0, "job %d: finalized before done", k);
        CHECK(jd->sum == expected_sum(jd->n), "job %d: sum %" PRIu64, k, jd->sum);
        CHECK(jd->emit_errors == 0, "job %d: %d emits failed", k, jd->emit_errors);
        CHECK(sink.seen_bytes[k] == 1 && sink.seen_array[k] == 1,
              "job %d: sink saw %d byte and %d array messages", k, sink.seen_bytes[k],
              sink.seen_array[k]);
        bytes_messages += sink.seen_bytes[k];
        array_messages += sink.seen_array[k];
        hl_status_t status = HL_STATUS_PENDING;
        CHECK_OK(hl_job_status(jd->handle, &status));
        CHECK(status == HL_STATUS_OK, "job %d: hl_job_status %s", k, hl_status_name(status));
        float progress = -1.0f;
        CHECK_OK(hl_job_progress(jd->handle, &progress));
        CHECK(progress == 1.0f, "job %d: progress %f", k, (double)progress);
        results += jd->done_status == HL_STATUS_OK && jd->sum == expected_sum(jd->n);
        CHECK_OK(hl_job_free(jd->handle));
    }
    int cancelled = long_job.done_status == HL_STATUS_CANCELLED;
    CHECK(cancel_sent, "the long job never started");
    CHECK(long_job.done_calls == 1, "long job: done called %d times", long_job.done_calls);
    CHECK(cancelled, "long job: done(%s)", hl_status_name(long_job.done_status));
    CHECK(long_job.done_off_main == 0, "long job: done ran off the main thread");
    CHECK(!long_job.last_error_empty, "hl_job_ctx_check said CANCELLED with no message");
    CHECK(long_progress >= 0.0f && long_progress <= 1.0f, "long job progress %f",
          (double)long_progress);
    CHECK_OK(hl_job_free(long_handle));

    /* The kept payloads still hold their records after their sink calls, at the addresses the
     * sink saw; half are released on another thread ([any-thread]), half here. */
    for (int k = 0; k < JOBS; k++) {
        const float *xyz = sink.lent_data[k];
        CHECK(sink.leases[k] != NULL, "job %d: no lease", k);
        for (int i = 0; i <= k; i++) {
            CHECK(xyz[3 * i] == (float)k && xyz[3 * i + 1] == (float)i &&
                      xyz[3 * i + 2] == -(float)i,
                  "job %d: the lent record %d changed", k, i);
        }
    }
    pthread_t releaser;
    CHECK(pthread_create(&releaser, NULL, release_half, sink.leases) == 0, "pthread_create");
    CHECK(pthread_join(releaser, NULL) == 0, "pthread_join");
    for (int k = JOBS / 2; k < JOBS; k++) {
        hl_lease_release(sink.leases[k]);
    }
    hl_lease_release(NULL);
    CHECK(hl_message_lend(NULL) == NULL, "hl_message_lend(NULL) returned a lease");

    CHECK(sink.off_main == 0, "the sink ran %d times off the main thread", sink.off_main);
    CHECK(sink.bad == 0, "the sink got %d malformed messages", sink.bad);
    CHECK(sink.messages == 2 * JOBS, "the sink got %d messages", sink.messages);
    CHECK(events_all.off_main == 0, "event callback ran off the main thread");
    CHECK(events_all.frames == 1 && events_all.last_frame == 3.0,
          "frame events: %d, last %f (three posted before a pump must coalesce to the last)",
          events_all.frames, events_all.last_frame);
    CHECK(events_all.custom == 1 && events_all.other == 0, "custom events %d, others %d",
          events_all.custom, events_all.other);
    CHECK(events_unsubscribed.custom + events_unsubscribed.frames + events_unsubscribed.other == 0,
          "an unsubscribed callback ran");
    CHECK(wakes > 0 && wake_items > 0,
          "the doorbell fd never drove a pump (wakes %" PRIu64 ", items %" PRIu64 ")", wakes,
          wake_items);

    hl_stats_t stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    CHECK_OK(hl_runtime_stats(rt, &stats));
    CHECK(stats.workers == WORKERS, "stats.workers %u", (unsigned)stats.workers);
    CHECK(stats.jobs_spawned == JOBS + 2, "stats.jobs_spawned %" PRIu64, stats.jobs_spawned);
    CHECK(stats.jobs_finished + stats.jobs_cancelled == JOBS + 2 && stats.jobs_failed == 0 &&
              stats.jobs_panicked == 0,
          "stats: finished %" PRIu64 " cancelled %" PRIu64 " failed %" PRIu64
          " panicked %" PRIu64,
          stats.jobs_finished, stats.jobs_cancelled, stats.jobs_failed, stats.jobs_panicked);
    CHECK(stats.pumps == pumps, "stats.pumps %" PRIu64 ", host counted %" PRIu64, stats.pumps,
          pumps);
    CHECK(stats.main_items_run == items, "stats.main_items_run %" PRIu64 ", pumps ran %" PRIu64,
          stats.main_items_run, items);
    CHECK(stats.sink_messages == 2 * JOBS && stats.sink_dropped == 0,
          "stats: sink_messages %" PRIu64 " sink_dropped %" PRIu64, stats.sink_messages,
          stats.sink_dropped);
    CHECK(stats.main_items_panicked == 0, "stats.main_items_panicked %" PRIu64,
          stats.main_items_panicked);
    CHECK(stats.queued_cpu == 0 && stats.queued_io == 0 && stats.queued_main == 0,
          "stats: work still queued");

    hl_shutdown_report_t down;
    memset(&down, 0, sizeof down);
    down.struct_size = sizeof down;
    CHECK_OK(hl_runtime_shutdown(rt, 1000, &down));
    CHECK(down.stragglers == 0, "shutdown: %" PRIu64 " stragglers", down.stragglers);
    CHECK(down.threads_joined == WORKERS + IO_THREADS, "shutdown joined %u threads",
          (unsigned)down.threads_joined);
    CHECK(down.cancelled_queued == 0 && down.main_items_dropped == 0,
          "shutdown: %" PRIu64 " jobs cancelled, %" PRIu64 " items dropped",
          down.cancelled_queued, down.main_items_dropped);
    hl_status_t late = hl_runtime_pump(rt, 0, NULL);
    CHECK(late == HL_STATUS_SHUT_DOWN, "pump after shutdown: %s", hl_status_name(late));
    /* After shutdown every worker has finished ringing (a worker counts a ring just before it
     * calls request_pump, so a snapshot taken while they run may be one ahead). */
    CHECK_OK(hl_runtime_stats(rt, &stats));
    CHECK(stats.doorbell_rings >= 1 && stats.doorbell_rings == atomic_load(&pump_requests),
          "doorbell rang %" PRIu64 " times, request_pump was called %" PRIu64 " times",
          stats.doorbell_rings, (uint64_t)atomic_load(&pump_requests));
    CHECK_OK(hl_runtime_free(rt));
    const int fds_leaked = open_fds() - fds_before;
    CHECK(fds_leaked == 0, "%d file descriptors still open after hl_runtime_free", fds_leaked);

    /* Every user_data, exactly once. */
    int registered = 0, finalized = 0;
    for (int k = 0; k < JOBS; k++) {
        int f = atomic_load(&jobs[k].finalized);
        CHECK(f == 1, "job %d finalized %d times", k, f);
        registered++;
        finalized += f;
    }
    int once[] = {atomic_load(&long_job.finalized),
                  atomic_load(&wake_probe_finalized),
                  atomic_load(&sink.finalized),
                  atomic_load(&events_all.finalized),
                  atomic_load(&events_unsubscribed.finalized),
                  atomic_load(&request_pump_finalized)};
    const char *names[] = {"long job",     "wake probe job",           "sink",
                           "subscription", "unsubscribed subscription", "request_pump"};
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++) {
        CHECK(once[i] == 1, "%s finalized %d times", names[i], once[i]);
        registered++;
        finalized += once[i];
    }

    printf("results=%d cancelled=%d sink_messages=%d bytes_messages=%d array_messages=%d\n",
           results, cancelled, sink.messages, bytes_messages, array_messages);
    printf("events=%d frames=%d last_frame=%g\n", events_all.custom + events_all.frames,
           events_all.frames, events_all.last_frame);
    printf("wakes=%" PRIu64 " idle_wake=%d wake_items=%" PRIu64 " frame_pumps=%" PRIu64
           " pumps=%" PRIu64
           " items=%" PRIu64 " doorbell_rings=%" PRIu64 " request_pumps=%" PRIu64
           " doorbell_quiet=%d\n",
           wakes, idle_wake, wake_items, frame_pumps, pumps, items, stats.doorbell_rings,
           (uint64_t)atomic_load(&pump_requests), doorbell_quiet);
    printf("threads_joined=%u stragglers=%" PRIu64 "\n", (unsigned)down.threads_joined,
           down.stragglers);
    printf("finalized=%d registered=%d fds_leaked=%d\n", finalized, registered, fds_leaked);
    if (failures != 0) {
        printf("host: FAILED (%d checks)\n", failures);
        return 1;
    }
    printf("host: OK\n");
    return 0;
}
