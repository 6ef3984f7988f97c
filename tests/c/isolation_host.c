/*
 * A C11 host that runs a plugin isolated in a worker process through hostloop.h alone, with
 * SIGPIPE at its default, fatal disposition (as in most C and C++ hosts):
 *
 *     isolation_host WORKER CRASHY READER
 *
 * WORKER is the hostloop-worker program, CRASHY the crash-on-command fixture plugin
 * (tests/fixtures/crashy), READER a blob reader fixture (tests/fixtures/reader): the host makes
 * a blob with hl_blob_create and the reader, in its own worker, maps and sums it. The host loads it with HL_ISOLATION_OWN_PROCESS, counts with it,
 * kills its worker with SIGKILL and at once sends it a flood of events (written to a dead
 * socket; under valgrind, without pidfd_open, the exit is found by polling), waits for the crash report and the restart on its sink, counts on from the restored
 * checkpoint, checks hl_plugin_process, the bad options hl_plugin_load_ex refuses, unloads,
 * frees the runtime and checks that the worker is gone and no fd is left open.
 *
 * Every wait is bounded (HANG_LIMIT_S). Prints `key=value` lines that tests/tests/isolation_c.rs
 * asserts on and a last line `isolation_host: OK`; exits non-zero if any check failed.
 */
#define _POSIX_C_SOURCE 200809L

#include "common.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define FRAME_MS 16

/* What the sink saw. Main thread only (the sink runs there), so no atomics. */
static uint64_t last_count;
static uint64_t blob_len, blob_sum;
static uint32_t blob_pid;
static int blob_answers;
static uint32_t last_count_pid;
static int crashed, restarted, down, sink_off_main;
static char crash_text[8192];

static void sink(void *user_data, const hl_message_t *m) {
    (void)user_data;
    if (!on_main_thread()) {
        sink_off_main++;
    }
    if (m->payload_kind != HL_PAYLOAD_BYTES) {
        return;
    }
    if (strcmp(m->topic, "crashy/count") == 0 && m->bytes_len == 12) {
        memcpy(&last_count, m->bytes, 8);
        memcpy(&last_count_pid, m->bytes + 8, 4);
    } else if (strcmp(m->topic, "reader-b/read") == 0 && m->bytes_len == 20) {
        memcpy(&blob_len, m->bytes, 8);
        memcpy(&blob_sum, m->bytes + 8, 8);
        memcpy(&blob_pid, m->bytes + 16, 4);
        blob_answers++;
    } else if (strcmp(m->topic, "hostloop/plugin/crashed") == 0) {
        crashed++;
        size_t n = m->bytes_len < sizeof crash_text - 1 ? m->bytes_len : sizeof crash_text - 1;
        memcpy(crash_text, m->bytes, n);
        crash_text[n] = 0;
    } else if (strcmp(m->topic, "hostloop/plugin/restarted") == 0) {
        restarted++;
    } else if (strcmp(m->topic, "hostloop/plugin/down") == 0) {
        down++;
    }
}

static void send_event(hl_runtime_t *rt, const char *topic, const char *bytes) {
    hl_event_t e;
    memset(&e, 0, sizeof e);
    e.struct_size = sizeof e;
    e.kind = HL_EVENT_CUSTOM;
    e.topic = topic;
    e.bytes = bytes;
    e.bytes_len = strlen(bytes);
    CHECK_OK(hl_runtime_post_event(rt, &e));
}

static int wake_fd;

/* Runs the host loop (poll on the doorbell fd beside a frame timer, then a pump) until `done`
 * holds; returns whether it did before the hang limit. */
static int loop_until(hl_runtime_t *rt, int (*done)(void *), void *arg) {
    double start = now_s();
    while (!done(arg)) {
        if (now_s() - start > HANG_LIMIT_S) {
            return 0;
        }
        struct pollfd p = {.fd = wake_fd, .events = POLLIN};
        (void)poll(&p, 1, FRAME_MS);
        CHECK_OK(hl_runtime_pump(rt, 2000, NULL));
    }
    return 1;
}

static int count_is(void *n) { return last_count == *(uint64_t *)n; }
static int crash_seen(void *unused) { (void)unused; return crashed > 0; }
static int blob_read(void *unused) { (void)unused; return blob_answers > 0; }

/* Pool task answers, by what the test asked. */
struct answer {
    int done;
    hl_status_t status;
    uint64_t sum;
    char text[512];
};
static int finalized;

static void task_done(void *user_data, hl_status_t status, const uint8_t *bytes, size_t len) {
    struct answer *a = user_data;
    if (!on_main_thread()) {
        sink_off_main++;
    }
    a->done++;
    a->status = status;
    if (status == HL_STATUS_OK && len >= 8) {
        memcpy(&a->sum, bytes, 8);
    } else {
        size_t n = len < sizeof a->text - 1 ? len : sizeof a->text - 1;
        memcpy(a->text, bytes, n);
        a->text[n] = 0;
    }
}
static void task_finalize(void *user_data) { (void)user_data; finalized++; }
static int answered(void *a) { return ((struct answer *)a)->done > 0; }
static int progressed(void *t) {
    float f = 0;
    return hl_task_progress((const hl_task_t *)t, &f) == HL_STATUS_OK && f >= 0.5f;
}
static int restart_seen(void *unused) { (void)unused; return restarted > 0; }

struct checkpoints {
    const hl_plugin_t *plugin;
    uint64_t at_least;
};

static int checkpointed(void *arg) {
    struct checkpoints *c = arg;
    hl_plugin_process_t p;
    p.struct_size = sizeof p;
    return hl_plugin_process(c->plugin, &p) == HL_STATUS_OK && p.checkpoints >= c->at_least;
}

static hl_status_t load_with(hl_runtime_t *rt, const char *path,
                             const hl_plugin_load_options_t *o) {
    hl_plugin_t *p = NULL;
    hl_status_t st = hl_plugin_load_ex(rt, path, o, &p);
    if (st == HL_STATUS_OK) {
        CHECK_OK(hl_plugin_unload(p, 2000, NULL));
    }
    return st;
}

int main(int argc, char **argv) {
    main_thread = pthread_self();
    if (argc != 4) {
        fprintf(stderr, "usage: isolation_host WORKER CRASHY READER\n");
        return 2;
    }
    const char *worker = argv[1], *crashy = argv[2], *reader = argv[3];
    /* A C host's default, said explicitly: a write to a dead pipe or socket would kill it. */
    signal(SIGPIPE, SIG_DFL);
    int fds_before = open_fds();

    hl_runtime_options_t ro;
    CHECK_OK(hl_runtime_options_init(&ro));
    ro.workers = 2;
    hl_runtime_t *rt = NULL;
    CHECK_OK(hl_runtime_new(&ro, &rt));
    CHECK_OK(hl_runtime_wake_fd(rt, &wake_fd));
    CHECK_OK(hl_runtime_set_sink(rt, sink, NULL, NULL));

    hl_plugin_load_options_t o;
    CHECK_OK(hl_plugin_load_options_init(&o));
    printf("default_isolation=%u\n", (unsigned)o.isolation);
    printf("default_heartbeat_ms=%u\n", (unsigned)o.heartbeat_ms);
    printf("default_checkpoint_interval_ms=%u\n", (unsigned)o.checkpoint_interval_ms);
    printf("default_restart_limit=%u\n", (unsigned)o.restart_limit);
    o.isolation = HL_ISOLATION_OWN_PROCESS;
    o.worker_program = worker;
    o.checkpoint_interval_ms = 20;
    o.restart_backoff_ms = 10;
    o.echo_stderr = 0;

    hl_plugin_t *plugin = NULL;
    CHECK_OK(hl_plugin_load_ex(rt, crashy, &o, &plugin));
    hl_plugin_process_t p;
    p.struct_size = sizeof p;
    CHECK_OK(hl_plugin_process(plugin, &p));
    pid_t first = (pid_t)p.pid;
    printf("isolation=%u\n", (unsigned)p.isolation);
    printf("in_another_process=%d\n", p.pid != 0 && first != getpid());
    printf("crashes_before=%u\n", (unsigned)p.crashes);

    /* Count to 3 in the worker, then wait for a checkpoint taken after that. */
    for (int i = 0; i < 3; i++) {
        send_event(rt, "crashy/tick", "");
    }
    uint64_t three = 3;
    CHECK(loop_until(rt, count_is, &three), "no count of 3");
    printf("counted_in_worker=%d\n", last_count_pid == (uint32_t)first);
    struct checkpoints c = {plugin, p.checkpoints};
    CHECK_OK(hl_plugin_process(plugin, &p));
    c.at_least = p.checkpoints + 2;
    CHECK(loop_until(rt, checkpointed, &c), "no checkpoint after the count");

    /* kill -9 the worker, and at once flood it with events (a topic it ignores, so the count
     * stays where the checkpoint has it): the host writes to a dead socket. */
    CHECK(kill(first, SIGKILL) == 0, "kill: %s", strerror(errno));
    for (int i = 0; i < 500; i++) {
        send_event(rt, "crashy/noise", "");
    }
    CHECK(loop_until(rt, crash_seen, NULL), "no crash report");
    printf("crash_signal_9=%d\n", strstr(crash_text, "killed by signal 9 (SIGKILL)") != NULL);
    printf("crash_names_plugin=%d\n", strstr(crash_text, "plugin: crashy") != NULL);
    CHECK(loop_until(rt, restart_seen, NULL), "no restart");
    printf("host_alive_after_writes_to_a_dead_worker=1\n");

    CHECK_OK(hl_plugin_process(plugin, &p));
    printf("restarts=%u\n", (unsigned)p.restarts);
    printf("crashes=%u\n", (unsigned)p.crashes);
    printf("new_pid=%d\n", p.pid != 0 && (pid_t)p.pid != first);
    printf("last_crash_sigkill=%d\n",
           p.last_crash != NULL && strstr(p.last_crash, "SIGKILL") != NULL);
    printf("down=%u\n", (unsigned)p.down);
    pid_t second = (pid_t)p.pid;
    /* The first worker was reaped: it is no zombie of ours. */
    printf("first_reaped=%d\n", kill(first, 0) == -1 && errno == ESRCH);

    /* The checkpoint came back: one more tick counts 4, in the new worker. */
    send_event(rt, "crashy/tick", "");
    uint64_t four = 4;
    CHECK(loop_until(rt, count_is, &four), "no count of 4 after the restart (got %" PRIu64 ")",
          last_count);
    printf("resumed_count=%" PRIu64 "\n", last_count);
    printf("resumed_in_new_worker=%d\n", last_count_pid == (uint32_t)second);

    /* Options hl_plugin_load_ex refuses, each with its status. */
    printf("null_options=%s\n", hl_status_name(load_with(rt, crashy, NULL)));
    hl_plugin_load_options_t bad = o;
    bad.isolation = 7;
    printf("unknown_isolation=%s\n", hl_status_name(load_with(rt, crashy, &bad)));
    bad = o;
    bad.isolation = HL_ISOLATION_SHARED_PROCESS;
    bad.group = NULL;
    printf("group_missing=%s\n", hl_status_name(load_with(rt, crashy, &bad)));
    bad = o;
    bad.struct_size = 8;
    printf("options_too_small=%s\n", hl_status_name(load_with(rt, crashy, &bad)));
    bad = o;
    bad.reserved = 1;
    printf("reserved_set=%s\n", hl_status_name(load_with(rt, crashy, &bad)));
    bad = o;
    bad.worker_program = "/nonexistent/hostloop-worker";
    printf("missing_worker=%s\n", hl_status_name(load_with(rt, crashy, &bad)));
    printf("missing_worker_named=%d\n",
           strstr(hl_last_error(), "/nonexistent/hostloop-worker") != NULL);
    /* In-process through the same call works too (and is then a second "crashy": refused). */
    bad = o;
    bad.isolation = HL_ISOLATION_IN_PROCESS;
    printf("in_process_twice=%s\n", hl_status_name(load_with(rt, crashy, &bad)));

    /* A blob made once by the host, read in place by a plugin in another worker process. */
    enum { BLOB_LEN = 3 << 20 };
    unsigned char *bytes = malloc(BLOB_LEN);
    CHECK(bytes != NULL, "malloc");
    uint64_t sum = 0;
    for (size_t i = 0; bytes != NULL && i < BLOB_LEN; i++) {
        bytes[i] = (unsigned char)((i * 2654435761u) >> 13);
        sum = sum * 31 + bytes[i];
    }
    CHECK_OK(hl_blob_create(rt, "scene/mesh", bytes, BLOB_LEN));
    free(bytes);
    printf("blob_twice=%s\n", hl_status_name(hl_blob_create(rt, "scene/mesh", "x", 1)));
    printf("blob_null=%s\n", hl_status_name(hl_blob_create(rt, "b", NULL, 1)));
    printf("blob_missing_file=%s\n",
           hl_status_name(hl_blob_create_from_file(rt, "f", "/nonexistent/blob.bin")));
    hl_plugin_t *rd = NULL;
    CHECK_OK(hl_plugin_load_ex(rt, reader, &o, &rd));
    send_event(rt, "reader/read", "scene/mesh");
    CHECK(loop_until(rt, blob_read, NULL), "no answer from the blob reader");
    hl_plugin_process_t rp;
    rp.struct_size = sizeof rp;
    CHECK_OK(hl_plugin_process(rd, &rp));
    printf("blob_len_ok=%d\n", blob_len == BLOB_LEN);
    printf("blob_sum_ok=%d\n", blob_sum == sum);
    printf("blob_read_in_worker=%d\n", blob_pid == rp.pid && (pid_t)blob_pid != getpid());
    CHECK_OK(hl_plugin_unload(rd, 5000, NULL));

    /* A process pool of the crashy plugin's tasks. */
    hl_task_pool_t *pool = NULL;
    CHECK_OK(hl_task_pool_new(rt, crashy, 1, &o, &pool));
    static struct answer sum_a, segv_a, spin_a;
    static const unsigned char abc[] = {'a', 'b', 'c'};
    CHECK_OK(hl_task_submit(pool, "sum", abc, 3, task_done, &sum_a, task_finalize, NULL));
    CHECK(loop_until(rt, answered, &sum_a), "no answer to the sum task");
    printf("task_sum=%s\n", hl_status_name(sum_a.status));
    printf("task_sum_ok=%d\n", sum_a.sum == (uint64_t)(('a' * 31u + 'b') * 31u + 'c'));
    CHECK_OK(hl_task_submit(pool, "segv", NULL, 0, task_done, &segv_a, task_finalize, NULL));
    CHECK(loop_until(rt, answered, &segv_a), "no answer to the segv task");
    printf("task_segv=%s\n", hl_status_name(segv_a.status));
    printf("task_segv_cause=%d\n", strstr(segv_a.text, "SIGSEGV") != NULL);
    hl_task_t *spin = NULL;
    CHECK_OK(hl_task_submit(pool, "spin", NULL, 0, task_done, &spin_a, task_finalize, &spin));
    CHECK(loop_until(rt, progressed, spin), "the spin task never reported progress");
    CHECK_OK(hl_task_cancel(spin));
    CHECK(loop_until(rt, answered, &spin_a), "no answer to the cancelled task");
    printf("task_spin=%s\n", hl_status_name(spin_a.status));
    CHECK_OK(hl_task_free(spin));
    printf("task_stale=%s\n", hl_status_name(hl_task_cancel(spin)));
    CHECK_OK(hl_task_pool_free(pool, 2000));
    printf("task_finalized=%d\n", finalized);
    printf("task_answers_once=%d\n", sum_a.done == 1 && segv_a.done == 1 && spin_a.done == 1);

    hl_unload_report_t r;
    r.struct_size = sizeof r;
    CHECK_OK(hl_plugin_unload(plugin, 5000, &r));
    printf("unload_stragglers=%" PRIu64 "\n", r.stragglers);
    printf("second_reaped=%d\n", kill(second, 0) == -1 && errno == ESRCH);
    printf("sink_off_main=%d\n", sink_off_main);
    printf("down_reports=%d\n", down);
    CHECK_OK(hl_runtime_free(rt));
    printf("fds_leaked=%d\n", open_fds() - fds_before);
    if (failures == 0) {
        printf("isolation_host: OK\n");
    }
    return failures == 0 ? 0 : 1;
}
