/*
 * A C11 host that loads tool plugins through hostloop.h alone, the way a DCC integration would:
 *
 *     plugin_host C_PLUGIN COUNTER_V1 COUNTER_V2
 *
 * C_PLUGIN is tests/fixtures/c/plugin.c built as a shared library ("cplugin"), COUNTER_V1 and
 * COUNTER_V2 are the Rust counter fixture plugins (tests/fixtures/counter/plugin.rs) of builds 1
 * and 2. The host makes a runtime, registers a sink that records the plugins' messages, and runs
 * its main loop as poll() on the doorbell fd (next to a 16 ms frame timer) plus hl_runtime_pump.
 *
 * - cplugin: the custom event "work" (uint32 n) makes it run n tasks on the pool; each answers
 *   "cplugin/total" (the running total, uint64) from the main thread.
 * - counter: each "tick" answers "counter/step" = [u32 build, u64 step, u64 value] (little
 *   endian): v1 adds 1 per step, v2 adds 2. A reload to v2 mid-run must continue from the step
 *   v1 reached.
 * - hl_plugin_info, the error statuses of a few wrong calls, hl_plugin_unload's report and the
 *   runtime's plugin counters are checked; then the runtime is freed.
 *
 * Every wait is bounded (HANG_LIMIT_S). Prints `key=value` lines that
 * tests/tests/plugin_host.rs asserts on and a last line `plugin_host: OK`; exits non-zero if any
 * check failed (each failure is printed as a `FAIL` line on stderr).
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

#define WORKERS 2
#define WORK_ITEMS 100
/* What one cplugin task adds to the total: 1 + 2 + ... + 1000. */
#define WORK_SUM 500500u
/* The frame timer of the loop: poll() returns at least this often. */
#define FRAME_MS 16
/* How long unload and reload may wait for a plugin's running calls. */
#define DEADLINE_MS 5000u

/* Checks that `call` fails with `expected`; evaluates to the status. */
#define CHECK_STATUS(call, expected)                                                           \
    check_status((call), (expected), #call, __LINE__)

static hl_status_t check_status(hl_status_t got, hl_status_t expected, const char *call,
                                int line) {
    if (got != expected) {
        failures++;
        fprintf(stderr, "FAIL %s:%d: %s returned %s, expected %s: %s\n", __FILE__, line, call,
                hl_status_name(got), hl_status_name(expected), hl_last_error());
    }
    return got;
}

static uint32_t le32(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static uint64_t le64(const uint8_t *b) {
    return (uint64_t)le32(b) | (uint64_t)le32(b + 4) << 32;
}

/* ---- the sink: records what the plugins send -------------------------------------------- */

typedef struct step_t {
    uint32_t build;
    uint64_t step;
    uint64_t value;
} step_t;

typedef struct sink_data {
    int messages;
    int totals;          /* "cplugin/total" messages */
    uint64_t last_total;
    int steps;           /* "counter/step" messages */
    step_t last_step;
    int other;           /* any other topic */
    int bad;             /* malformed messages */
    int off_main;
    atomic_int finalized;
} sink_data;

static sink_data sink;

static void on_message(void *user_data, const hl_message_t *m) {
    sink_data *s = user_data;
    s->messages++;
    s->off_main += !on_main_thread();
    if (m->struct_size < sizeof(hl_message_t) || m->topic == NULL ||
        strlen(m->topic) != m->topic_len || m->payload_kind != HL_PAYLOAD_BYTES) {
        s->bad++;
        return;
    }
    if (strcmp(m->topic, "cplugin/total") == 0) {
        if (m->bytes_len != sizeof(uint64_t)) {
            s->bad++;
            return;
        }
        /* The C plugin sends its uint64 in native byte order. */
        memcpy(&s->last_total, m->bytes, sizeof s->last_total);
        s->totals++;
    } else if (strcmp(m->topic, "counter/step") == 0) {
        if (m->bytes_len != 20) {
            s->bad++;
            return;
        }
        s->last_step.build = le32(m->bytes);
        s->last_step.step = le64(m->bytes + 4);
        s->last_step.value = le64(m->bytes + 12);
        s->steps++;
    } else {
        s->other++;
    }
}

static void sink_finalize(void *user_data) {
    sink_data *s = user_data;
    atomic_fetch_add(&s->finalized, 1);
}

/* ---- the loop ---------------------------------------------------------------------------- */

static hl_runtime_t *rt;
static int wake_fd = -1;
static uint64_t pumps, wakes, frame_pumps, items;

static void pump(void) {
    hl_pump_report_t report;
    memset(&report, 0, sizeof report);
    report.struct_size = sizeof report;
    CHECK_OK(hl_runtime_pump(rt, 2000, &report));
    pumps++;
    items += report.ran;
}

/*
 * The host's main loop, run until `ready(arg)` holds: wait on the doorbell with a frame timer,
 * pump when it rings and on every frame. Returns 0 (after a FAIL line) if `ready` does not hold
 * within HANG_LIMIT_S.
 */
static int loop_until(const char *what, int (*ready)(void *), void *arg) {
    const double deadline = now_s() + HANG_LIMIT_S;
    while (!ready(arg)) {
        if (now_s() > deadline) {
            CHECK(0, "%s: not within %.0f s", what, HANG_LIMIT_S);
            return 0;
        }
        struct pollfd p = {wake_fd, POLLIN, 0};
        int r = poll(&p, 1, FRAME_MS);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            CHECK(0, "poll: %s", strerror(errno));
            return 0;
        }
        if (r > 0 && (p.revents & POLLIN)) {
            wakes++;
        } else {
            frame_pumps++;
        }
        pump();
    }
    return 1;
}

static void post_custom(const char *topic, const void *bytes, size_t len) {
    hl_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.struct_size = sizeof ev;
    ev.kind = HL_EVENT_CUSTOM;
    ev.topic = topic;
    ev.bytes = bytes;
    ev.bytes_len = len;
    CHECK_OK(hl_runtime_post_event(rt, &ev));
}

static int totals_reached(void *arg) {
    return sink.totals >= *(const int *)arg;
}

static int steps_reached(void *arg) {
    return sink.steps >= *(const int *)arg;
}

/* Ticks the counter plugin once; returns its answer (zeroes if none came). */
static step_t tick(void) {
    int want = sink.steps + 1;
    post_custom("tick", NULL, 0);
    if (!loop_until("a counter/step answer", steps_reached, &want)) {
        step_t none = {0, 0, 0};
        return none;
    }
    return sink.last_step;
}

/* ---- plugins ----------------------------------------------------------------------------- */

static hl_plugin_info_t plugin_info(const hl_plugin_t *plugin) {
    hl_plugin_info_t info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    CHECK_OK(hl_plugin_info(plugin, &info));
    return info;
}

static const char *text(const char *s) {
    return s != NULL ? s : "(null)";
}

static int same_text(const char *a, const char *b) {
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* No work of the plugin queued or running any more. */
static int plugin_idle(void *arg) {
    return plugin_info(arg).pending == 0;
}

static hl_unload_report_t unload(hl_plugin_t *plugin, const char *name) {
    hl_unload_report_t report;
    memset(&report, 0, sizeof report);
    report.struct_size = sizeof report;
    hl_status_t status = hl_plugin_unload(plugin, DEADLINE_MS, &report);
    CHECK(status == HL_STATUS_OK, "unloading %s: %s: %s", name, hl_status_name(status),
          hl_last_error());
    CHECK(report.elapsed_us < (uint64_t)DEADLINE_MS * 1000,
          "unloading %s took %" PRIu64 " us", name, report.elapsed_us);
    return report;
}

/* Loads `path`, which must fail with `expected`; returns that status's name for printing. */
static const char *load_fails(const char *path, hl_status_t expected, const char *must_mention) {
    hl_plugin_t *plugin = NULL;
    hl_status_t status = hl_plugin_load(rt, path, &plugin);
    CHECK(status == expected, "loading %s: %s (expected %s): %s", text(path),
          hl_status_name(status), hl_status_name(expected), hl_last_error());
    CHECK(plugin == NULL, "a failed load wrote a handle");
    if (must_mention != NULL) {
        CHECK(strstr(hl_last_error(), must_mention) != NULL,
              "the error of loading %s does not mention %s: %s", text(path), must_mention,
              hl_last_error());
    }
    if (status == HL_STATUS_OK && plugin != NULL) {
        hl_plugin_unload(plugin, DEADLINE_MS, NULL);
    }
    return hl_status_name(status);
}

int main(int argc, char **argv) {
    main_thread = pthread_self();
    /* Line-buffered even into a pipe: what was printed survives a sanitizer's report at exit. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 4) {
        fprintf(stderr, "usage: %s C_PLUGIN COUNTER_V1 COUNTER_V2\n", argv[0]);
        return 2;
    }
    const char *c_path = argv[1];
    const char *v1_path = argv[2];
    const char *v2_path = argv[3];
    const int fds_before = open_fds();

    hl_runtime_options_t options;
    CHECK_OK(hl_runtime_options_init(&options));
    options.workers = WORKERS;
    options.thread_name = "plugin-host";
    CHECK_OK(hl_runtime_new(&options, &rt));
    if (rt == NULL) {
        fprintf(stderr, "no runtime: %s\n", hl_last_error());
        return 1;
    }
    CHECK_OK(hl_runtime_wake_fd(rt, &wake_fd));
    CHECK(wake_fd >= 0, "wake fd %d", wake_fd);
    CHECK_OK(hl_runtime_set_sink(rt, on_message, &sink, sink_finalize));

    /* ---- the C plugin: work on the pool, results on the main thread ---- */
    hl_plugin_t *cplugin = NULL;
    CHECK_OK(hl_plugin_load(rt, c_path, &cplugin));
    if (cplugin == NULL) {
        printf("plugin_host: FAILED (the C plugin did not load)\n");
        hl_runtime_free(rt);
        return 1;
    }
    hl_plugin_info_t info = plugin_info(cplugin);
    CHECK(info.struct_size == sizeof info, "info.struct_size %u", (unsigned)info.struct_size);
    CHECK(same_text(info.name, "cplugin"), "cplugin name %s", text(info.name));
    CHECK(same_text(info.version, "1.0.0"), "cplugin version %s", text(info.version));
    CHECK(same_text(info.path, c_path), "cplugin path %s", text(info.path));
    CHECK(info.generation == 0 && (info.flags & HL_PLUGIN_FLAG_RETAIN_IMAGE) == 0,
          "cplugin generation %u flags %u", (unsigned)info.generation, (unsigned)info.flags);
    printf("cplugin_name=%s cplugin_version=%s cplugin_generation=%u cplugin_retain=%u"
           " cplugin_path_matches=%d\n",
           text(info.name), text(info.version), (unsigned)info.generation,
           (unsigned)(info.flags & HL_PLUGIN_FLAG_RETAIN_IMAGE), same_text(info.path, c_path));

    uint32_t count = WORK_ITEMS;
    post_custom("work", &count, sizeof count);
    int want = WORK_ITEMS;
    loop_until("the C plugin's results", totals_reached, &want);
    loop_until("the C plugin going idle", plugin_idle, cplugin);
    CHECK(sink.last_total == (uint64_t)WORK_ITEMS * WORK_SUM, "cplugin total %" PRIu64,
          sink.last_total);
    printf("totals=%d total=%" PRIu64 " cplugin_pending=%" PRIu64 "\n", sink.totals,
           sink.last_total, plugin_info(cplugin).pending);

    /* ---- the Rust counter: v1, then a hot reload to v2 ---- */
    hl_plugin_t *counter = NULL;
    CHECK_OK(hl_plugin_load(rt, v1_path, &counter));
    if (counter == NULL) {
        printf("plugin_host: FAILED (the counter plugin did not load)\n");
        hl_runtime_free(rt);
        return 1;
    }
    info = plugin_info(counter);
    CHECK(same_text(info.name, "counter") && same_text(info.version, "1.0.0"),
          "counter v1 is %s %s", text(info.name), text(info.version));
    CHECK(info.generation == 0 && (info.flags & HL_PLUGIN_FLAG_RETAIN_IMAGE) != 0,
          "counter v1 generation %u flags %u", (unsigned)info.generation, (unsigned)info.flags);
    CHECK(same_text(info.path, v1_path), "counter v1 path %s", text(info.path));
    printf("counter_name=%s counter_version=%s counter_generation=%u counter_retain=%u"
           " counter_path_matches=%d\n",
           text(info.name), text(info.version), (unsigned)info.generation,
           (unsigned)(info.flags & HL_PLUGIN_FLAG_RETAIN_IMAGE), same_text(info.path, v1_path));

    int ticks = 0;
    step_t s;
    for (uint64_t k = 1; k <= 3; k++) {
        s = tick();
        CHECK(s.build == 1 && s.step == k && s.value == k,
              "tick %" PRIu64 " of v1: build %u step %" PRIu64 " value %" PRIu64, k,
              (unsigned)s.build, s.step, s.value);
        printf("tick%d=%u/%" PRIu64 "/%" PRIu64 "\n", ++ticks, (unsigned)s.build, s.step,
               s.value);
    }

    /* ---- errors: each has its status, and changes nothing ---- */
    size_t missing_len = strlen(c_path) + sizeof ".missing";
    char *missing = malloc(missing_len);
    if (missing == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    snprintf(missing, missing_len, "%s.missing", c_path);
    printf("missing=%s\n", load_fails(missing, HL_STATUS_FILE_NOT_FOUND, missing));
    printf("cplugin_twice=%s\n", load_fails(c_path, HL_STATUS_ALREADY_LOADED, "cplugin"));
    printf("counter_twice=%s\n", load_fails(v1_path, HL_STATUS_ALREADY_LOADED, "counter"));
    printf("counter_v2_beside_v1=%s\n",
           load_fails(v2_path, HL_STATUS_ALREADY_LOADED, "counter"));
    printf("null_path=%s\n", load_fails(NULL, HL_STATUS_NULL_ARG, NULL));
    hl_status_t reload_missing = CHECK_STATUS(hl_plugin_reload(counter, missing, DEADLINE_MS),
                                              HL_STATUS_FILE_NOT_FOUND);
    printf("reload_missing=%s\n", hl_status_name(reload_missing));
    free(missing);
    info = plugin_info(counter);
    CHECK(info.generation == 0 && same_text(info.version, "1.0.0"),
          "a failed reload changed the plugin: generation %u version %s",
          (unsigned)info.generation, text(info.version));
    s = tick();
    CHECK(s.build == 1 && s.step == 4 && s.value == 4,
          "after a failed reload v1 runs on: build %u step %" PRIu64 " value %" PRIu64,
          (unsigned)s.build, s.step, s.value);
    printf("tick%d=%u/%" PRIu64 "/%" PRIu64 "\n", ++ticks, (unsigned)s.build, s.step, s.value);

    /* ---- the hot reload: v2 continues from step 4, adding 2 per step ---- */
    CHECK_OK(hl_plugin_reload(counter, v2_path, DEADLINE_MS));
    info = plugin_info(counter);
    CHECK(same_text(info.name, "counter") && same_text(info.version, "2.0.0"),
          "after the reload: %s %s", text(info.name), text(info.version));
    CHECK(info.generation == 1, "generation %u after one reload", (unsigned)info.generation);
    CHECK(same_text(info.path, v2_path), "reloaded path %s", text(info.path));
    printf("reloaded_name=%s reloaded_version=%s reloaded_generation=%u"
           " reloaded_path_matches=%d\n",
           text(info.name), text(info.version), (unsigned)info.generation,
           same_text(info.path, v2_path));
    for (uint64_t k = 5; k <= 6; k++) {
        s = tick();
        const uint64_t value = 4 + 2 * (k - 4);
        CHECK(s.build == 2 && s.step == k && s.value == value,
              "tick %" PRIu64 " of v2: build %u step %" PRIu64 " value %" PRIu64, k,
              (unsigned)s.build, s.step, s.value);
        printf("tick%d=%u/%" PRIu64 "/%" PRIu64 "\n", ++ticks, (unsigned)s.build, s.step,
               s.value);
    }

    /* ---- unload: the C plugin first; its events stop while the counter still answers ---- */
    hl_unload_report_t c_report = unload(cplugin, "cplugin");
    CHECK(c_report.retired == 0, "the C plugin was retired, not unmapped");
    CHECK(c_report.dropped == 0 && c_report.stragglers == 0,
          "cplugin unload: dropped %" PRIu64 " stragglers %" PRIu64, c_report.dropped,
          c_report.stragglers);
    printf("cplugin_retired=%u cplugin_dropped=%" PRIu64 " cplugin_stragglers=%" PRIu64 "\n",
           (unsigned)c_report.retired, c_report.dropped, c_report.stragglers);
    const int totals_at_unload = sink.totals;
    post_custom("work", &count, sizeof count);
    s = tick(); /* delivered after "work": once it is answered, "work" has been dispatched */
    CHECK(s.build == 2 && s.step == 7 && s.value == 10,
          "tick 7: build %u step %" PRIu64 " value %" PRIu64, (unsigned)s.build, s.step,
          s.value);
    printf("tick%d=%u/%" PRIu64 "/%" PRIu64 "\n", ++ticks, (unsigned)s.build, s.step, s.value);
    const int totals_after_unload = sink.totals - totals_at_unload;
    CHECK(totals_after_unload == 0, "the unloaded C plugin answered %d times",
          totals_after_unload);
    printf("totals_after_unload=%d\n", totals_after_unload);
    hl_plugin_info_t stale;
    memset(&stale, 0, sizeof stale);
    stale.struct_size = sizeof stale;
    hl_status_t stale_info =
        CHECK_STATUS(hl_plugin_info(cplugin, &stale), HL_STATUS_INVALID_HANDLE);
    hl_status_t stale_unload =
        CHECK_STATUS(hl_plugin_unload(cplugin, 0, NULL), HL_STATUS_INVALID_HANDLE);
    printf("stale_info=%s stale_unload=%s\n", hl_status_name(stale_info),
           hl_status_name(stale_unload));

    hl_unload_report_t r_report = unload(counter, "counter");
    CHECK(r_report.retired == 1, "the Rust plugin's image was unmapped, not retired");
    CHECK(r_report.stragglers == 0, "counter unload: stragglers %" PRIu64,
          r_report.stragglers);
    printf("counter_retired=%u counter_dropped=%" PRIu64 " counter_stragglers=%" PRIu64 "\n",
           (unsigned)r_report.retired, r_report.dropped, r_report.stragglers);

    /* Drain what is left (the messages are all in; this empties the queue). */
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

    hl_plugin_stats_t stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    CHECK_OK(hl_runtime_plugin_stats(rt, &stats));
    CHECK(stats.loaded == 0 && stats.loads == 3 && stats.unloads == 2,
          "plugin stats: loaded %" PRIu64 " loads %" PRIu64 " unloads %" PRIu64, stats.loaded,
          stats.loads, stats.unloads);
    CHECK(stats.reloads == 1 && stats.failed_reloads == 1,
          "plugin stats: reloads %" PRIu64 " failed %" PRIu64, stats.reloads,
          stats.failed_reloads);
    CHECK(stats.images_retired == 2 && stats.images_closed == 1,
          "plugin stats: images retired %" PRIu64 " closed %" PRIu64, stats.images_retired,
          stats.images_closed);
    CHECK(stats.stragglers == 0, "plugin stats: stragglers %" PRIu64, stats.stragglers);
    /* Process-wide: at least the images this runtime retired (the two Rust builds here) stay
     * mapped; other runtimes of this process may have retired more. */
    CHECK(stats.images_retained >= 1, "plugin stats: images retained %" PRIu64,
          stats.images_retained);
    printf("images_retained=%" PRIu64 "\n", stats.images_retained);
    printf("loaded=%" PRIu64 " loads=%" PRIu64 " unloads=%" PRIu64 " reloads=%" PRIu64
           " failed_reloads=%" PRIu64 " images_retired=%" PRIu64 " images_closed=%" PRIu64
           " plugin_stragglers=%" PRIu64 "\n",
           stats.loaded, stats.loads, stats.unloads, stats.reloads, stats.failed_reloads,
           stats.images_retired, stats.images_closed, stats.stragglers);

    CHECK(sink.off_main == 0, "the sink ran %d times off the main thread", sink.off_main);
    CHECK(sink.bad == 0 && sink.other == 0, "the sink got %d malformed and %d unknown messages",
          sink.bad, sink.other);
    CHECK(wakes > 0, "the doorbell never woke the loop");

    CHECK_OK(hl_runtime_free(rt));
    const int sink_finalized = atomic_load(&sink.finalized);
    CHECK(sink_finalized == 1, "the sink was finalized %d times", sink_finalized);
    const int fds_leaked = open_fds() - fds_before;
    CHECK(fds_leaked == 0, "%d file descriptors still open after hl_runtime_free", fds_leaked);

    printf("sink_messages=%d steps=%d sink_bad=%d sink_other=%d sink_off_main=%d"
           " sink_finalized=%d\n",
           sink.messages, sink.steps, sink.bad, sink.other, sink.off_main, sink_finalized);
    printf("wakes=%" PRIu64 " frame_pumps=%" PRIu64 " pumps=%" PRIu64 " items=%" PRIu64
           " fds_leaked=%d\n",
           wakes, frame_pumps, pumps, items, fds_leaked);
    if (failures != 0) {
        printf("plugin_host: FAILED (%d checks)\n", failures);
        return 1;
    }
    printf("plugin_host: OK\n");
    return 0;
}
