/*
 * A C11 host whose sink tries to unload a plugin from the sink call of that plugin's own
 * message, the way a host reacting to "I am done" might:
 *
 *     plugin_self_unload C_PLUGIN
 *
 * C_PLUGIN is tests/fixtures/c/plugin.c built as a shared library ("cplugin"). The host asks it
 * for WORK_ITEMS answers; the sink, at the first one, calls hl_plugin_unload on the plugin. That
 * is refused with REENTRANT and changes nothing: the handle stays valid, every answer arrives,
 * and the host unloads the plugin after the pump — cleanly, its `unload` freeing its state (which
 * LeakSanitizer checks when built with sanitizers).
 *
 * Prints `key=value` lines that tests/tests/plugin_host.rs asserts on and a last line
 * `plugin_self_unload: OK`; exits non-zero if any check failed.
 */
#define _POSIX_C_SOURCE 200809L

#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#define WORKERS 2
#define WORK_ITEMS 20
#define DEADLINE_MS 5000u

static hl_runtime_t *rt;
static hl_plugin_t *plugin;
static int answers;
static int tried;
static hl_status_t in_sink_status = HL_STATUS_OK;
static int handle_valid_after;

static void on_message(void *user_data, const hl_message_t *m) {
    (void)user_data;
    if (m->topic == NULL || strcmp(m->topic, "cplugin/total") != 0) {
        return;
    }
    answers++;
    if (!tried) {
        tried = 1;
        hl_unload_report_t report;
        memset(&report, 0, sizeof report);
        report.struct_size = sizeof report;
        in_sink_status = hl_plugin_unload(plugin, DEADLINE_MS, &report);
        hl_plugin_info_t info;
        memset(&info, 0, sizeof info);
        info.struct_size = sizeof info;
        handle_valid_after = hl_plugin_info(plugin, &info) == HL_STATUS_OK;
    }
}

/* The plugin's work queued or running; -1 if its handle is no longer valid. */
static int pending(void) {
    hl_plugin_info_t info;
    memset(&info, 0, sizeof info);
    info.struct_size = sizeof info;
    if (hl_plugin_info(plugin, &info) != HL_STATUS_OK) {
        return -1;
    }
    return (int)info.pending;
}

int main(int argc, char **argv) {
    main_thread = pthread_self();
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fprintf(stderr, "usage: %s C_PLUGIN\n", argv[0]);
        return 2;
    }
    hl_runtime_options_t options;
    CHECK_OK(hl_runtime_options_init(&options));
    options.workers = WORKERS;
    CHECK_OK(hl_runtime_new(&options, &rt));
    if (rt == NULL) {
        fprintf(stderr, "no runtime: %s\n", hl_last_error());
        return 1;
    }
    int wake_fd = -1;
    CHECK_OK(hl_runtime_wake_fd(rt, &wake_fd));
    CHECK_OK(hl_runtime_set_sink(rt, on_message, NULL, NULL));
    CHECK_OK(hl_plugin_load(rt, argv[1], &plugin));
    if (plugin == NULL) {
        printf("plugin_self_unload: FAILED (the plugin did not load)\n");
        hl_runtime_free(rt);
        return 1;
    }

    uint32_t count = WORK_ITEMS;
    hl_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.struct_size = sizeof ev;
    ev.kind = HL_EVENT_CUSTOM;
    ev.topic = "work";
    ev.bytes = &count;
    ev.bytes_len = sizeof count;
    CHECK_OK(hl_runtime_post_event(rt, &ev));

    const double deadline = now_s() + HANG_LIMIT_S;
    int left;
    while ((left = pending()) != 0 || answers < WORK_ITEMS) {
        if (left < 0) {
            CHECK(0, "the plugin's handle went away: %s", hl_last_error());
            break;
        }
        if (now_s() > deadline) {
            CHECK(0, "%d of %d answers within %.0f s", answers, WORK_ITEMS, HANG_LIMIT_S);
            break;
        }
        struct pollfd p = {wake_fd, POLLIN, 0};
        if (poll(&p, 1, 16) < 0 && errno != EINTR) {
            CHECK(0, "poll: %s", strerror(errno));
            break;
        }
        hl_pump_report_t report;
        memset(&report, 0, sizeof report);
        report.struct_size = sizeof report;
        CHECK_OK(hl_runtime_pump(rt, 2000, &report));
    }
    CHECK(tried, "the sink never ran");
    CHECK(in_sink_status == HL_STATUS_REENTRANT, "unload in the sink: %s",
          hl_status_name(in_sink_status));
    CHECK(handle_valid_after, "the handle was freed by the refused unload");
    printf("in_sink_unload=%s handle_valid_after=%d answers=%d\n",
           hl_status_name(in_sink_status), handle_valid_after, answers);

    hl_unload_report_t report;
    memset(&report, 0, sizeof report);
    report.struct_size = sizeof report;
    hl_status_t after = hl_plugin_unload(plugin, DEADLINE_MS, &report);
    CHECK(after == HL_STATUS_OK, "unload after the pump: %s: %s", hl_status_name(after),
          hl_last_error());
    printf("after_unload=%s stragglers=%" PRIu64 " retired=%u\n", hl_status_name(after),
           report.stragglers, (unsigned)report.retired);

    hl_plugin_stats_t stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    CHECK_OK(hl_runtime_plugin_stats(rt, &stats));
    printf("loaded=%" PRIu64 " unloads=%" PRIu64 " plugin_stragglers=%" PRIu64 "\n",
           stats.loaded, stats.unloads, stats.stragglers);
    CHECK_OK(hl_runtime_free(rt));
    if (failures != 0) {
        printf("plugin_self_unload: FAILED (%d checks)\n", failures);
        return 1;
    }
    printf("plugin_self_unload: OK\n");
    return 0;
}
