/*
 * A plain C11 host application driving the particles plugin through libhostloop.
 *
 *     host [--seconds S] [--min-sim-frames N] [--max-seconds M] [--agents N] [--rate R]
 *          [--kernel rust|cpp] [--workers W] [--isolated WORKER] [PLUGIN]
 *
 * PLUGIN is the particles plugin library (libhostloop_particles.so); without it the path is
 * read from $HOSTLOOP_PARTICLES_PLUGIN.
 *
 * This is the shape of a real host's main loop (a DCC viewport, a game-engine editor):
 *
 * - one runtime, made on the main thread; its wake fd sits in the loop's poll() set;
 * - the loop runs at 60 Hz: poll() sleeps until the doorbell rings or the next frame is due;
 * - when the doorbell rings it pumps (bounded: 2 ms of main-thread work at most) — that is how
 *   simulation frames reach the sink as soon as they are ready;
 * - on every frame it pumps once more (the fallback a host keeps in case it was busy) and
 *   "draws" the latest particle positions the sink received.
 *
 * It runs for --seconds, and on past them until --min-sim-frames particle frames have reached the
 * sink (default 0), but never past --max-seconds (default 120): a test then waits for what it
 * checks, not for a fixed window that a loaded machine may not fill.
 *
 * The sink runs inside hl_runtime_pump, so on the main thread: the host checks that, along with
 * how many pumps the doorbell drove and how regular its frames were. At the end it unloads the
 * plugin, shuts the runtime down and prints `key=value` lines (examples/hosts/c/test reads
 * them). Exit status 0 when everything went as designed.
 */
#define _POSIX_C_SOURCE 200809L

#include <hostloop.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

/* The plugin this host drives, and the topics it sends to the sink. (-DPLUGIN='"orbits"' drives
 * examples/plugin-template instead, which ignores "configure".) */
#ifndef PLUGIN
#define PLUGIN "particles"
#endif
#define TOPIC_STEP PLUGIN "/step"
#define TOPIC_POSITIONS PLUGIN "/positions"
#define TOPIC_ERROR PLUGIN "/error"
#define TOPIC_CONFIGURE PLUGIN "/configure"

#define FRAME_HZ 60.0
/* Main-thread work allowed per pump, in microseconds. */
#define PUMP_BUDGET_US 2000
/* A frame is late when it starts this much after the previous one (half a frame too late). */
#define LATE_FACTOR 1.5
/* How long the plugin unload and the runtime shutdown may take, in ms. */
#define DEADLINE_MS 2000u

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/*
 * How long the calling thread has waited for a CPU so far (runnable but not running), in ms:
 * time the machine, not the host, took from its frames. Linux only; 0 elsewhere.
 */
static double cpu_wait_ms(void) {
#ifdef __linux__
    unsigned long long run_ns = 0, wait_ns = 0;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    if (f != NULL) {
        int n = fscanf(f, "%llu %llu", &run_ns, &wait_ns);
        fclose(f);
        if (n == 2) {
            return (double)wait_ns / 1e6;
        }
    }
#endif
    return 0.0;
}

static void fail(const char *what, hl_status_t status) {
    fprintf(stderr, "host: %s: %s: %s\n", what, hl_status_name(status), hl_last_error());
}

/* ---- what the sink receives ------------------------------------------------------------- */

typedef struct bounds {
    float lo[3], hi[3];
} bounds;

/* Which pump is running, so the sink can tell what delivered each frame. */
enum pump_source { PUMP_FD, PUMP_TIMER };

typedef struct scene {
    pthread_t main_thread;
    enum pump_source pumping;
    uint64_t messages;
    uint64_t off_main; /* sink calls on another thread than main(): must stay 0 */
    uint64_t frames; /* position frames received */
    uint64_t frames_via_fd, frames_via_timer;
    uint64_t bad_frames; /* not an f32 xyz array */
    uint64_t errors; /* particles/error messages */
    uint64_t step; /* the simulation step of the latest frame */
    /* The latest positions (xyz f32), copied out of the borrowed message the way a host would
     * upload them to its viewport's vertex buffer. */
    float *xyz;
    uint64_t count, capacity;
    int dirty; /* a new frame arrived since the last draw */
    bounds drawn; /* what the last draw showed */
} scene;

static uint64_t read_le64(const uint8_t *b) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = v << 8 | b[i];
    }
    return v;
}

/* The sink: runs on the main thread during hl_runtime_pump. The message is borrowed. */
static void on_message(void *user_data, const hl_message_t *m) {
    scene *s = user_data;
    s->messages++;
    if (!pthread_equal(pthread_self(), s->main_thread)) {
        s->off_main++;
    }
    if (strcmp(m->topic, TOPIC_STEP) == 0 && m->payload_kind == HL_PAYLOAD_BYTES &&
        m->bytes_len >= 8) { /* the step, then the configuration's number */
        s->step = read_le64(m->bytes);
    } else if (strcmp(m->topic, TOPIC_POSITIONS) == 0) {
        const hl_array_view_t *a = &m->array;
        if (m->payload_kind != HL_PAYLOAD_ARRAY || a->elem_type != HL_ELEM_F32 ||
            a->components != 3 || a->stride < 3 * sizeof(float)) {
            s->bad_frames++;
            return;
        }
        if (a->count > s->capacity) {
            float *grown = realloc(s->xyz, (size_t)a->count * 3 * sizeof(float));
            if (grown == NULL) {
                s->bad_frames++;
                return;
            }
            s->xyz = grown;
            s->capacity = a->count;
        }
        if (a->stride == 3 * sizeof(float)) {
            memcpy(s->xyz, a->data, (size_t)a->count * 3 * sizeof(float));
        } else { /* padded records */
            for (uint64_t i = 0; i < a->count; i++) {
                memcpy(s->xyz + i * 3, (const char *)a->data + i * a->stride, 3 * sizeof(float));
            }
        }
        s->count = a->count;
        s->dirty = 1;
        s->frames++;
        if (s->pumping == PUMP_FD) {
            s->frames_via_fd++;
        } else {
            s->frames_via_timer++;
        }
    } else if (strcmp(m->topic, TOPIC_ERROR) == 0) {
        s->errors++;
        fprintf(stderr, "host: %s: %.*s\n", PLUGIN, (int)m->bytes_len, (const char *)m->bytes);
    }
}

/* "Drawing": what a viewport would do with the frame; here, its bounding box. */
static bounds frame_bounds(const scene *s) {
    bounds b = {{0, 0, 0}, {0, 0, 0}};
    for (uint64_t i = 0; i < s->count; i++) {
        for (int k = 0; k < 3; k++) {
            float v = s->xyz[i * 3 + k];
            if (i == 0 || v < b.lo[k]) {
                b.lo[k] = v;
            }
            if (i == 0 || v > b.hi[k]) {
                b.hi[k] = v;
            }
        }
    }
    return b;
}

/* ---- the host loop ---------------------------------------------------------------------- */

typedef struct loop_stats {
    uint64_t fd_pumps, timer_pumps;
    uint64_t pump_max_us, pump_overruns;
    uint64_t frames, late_frames, draws;
    double *frame_ms; /* the interval before each frame */
    double *frame_own_ms; /* the same, less the time the main thread waited for a CPU */
    uint64_t frame_ms_cap;
    double cpu_wait_ms; /* in the loop, in all */
} loop_stats;

static int pump(hl_runtime_t *rt, scene *s, loop_stats *st, enum pump_source source) {
    hl_pump_report_t report;
    memset(&report, 0, sizeof report);
    report.struct_size = sizeof report;
    s->pumping = source;
    hl_status_t status = hl_runtime_pump(rt, PUMP_BUDGET_US, &report);
    if (status != HL_STATUS_OK) {
        fail("hl_runtime_pump", status);
        return 0;
    }
    if (source == PUMP_FD) {
        st->fd_pumps++;
    } else {
        st->timer_pumps++;
    }
    if (report.elapsed_us > st->pump_max_us) {
        st->pump_max_us = report.elapsed_us;
    }
    st->pump_overruns += report.overrun_us > 0;
    return 1;
}

static void post_configure(hl_runtime_t *rt, const char *settings) {
    hl_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.struct_size = sizeof ev;
    ev.kind = HL_EVENT_CUSTOM;
    ev.topic = TOPIC_CONFIGURE;
    ev.bytes = settings;
    ev.bytes_len = strlen(settings);
    hl_status_t status = hl_runtime_post_event(rt, &ev);
    if (status != HL_STATUS_OK) {
        fail("hl_runtime_post_event", status);
    }
}

/* Runs the 60 Hz loop for `seconds`, then on until `min_sim_frames` particle frames arrived,
 * but not past `max_seconds`. Returns 0 if a pump failed. */
static int run_loop(hl_runtime_t *rt, int wake_fd, scene *s, loop_stats *st, double seconds,
                    uint64_t min_sim_frames, double max_seconds) {
    const double period = 1000.0 / FRAME_HZ;
    const double start = now_ms();
    const double end = start + seconds * 1000.0;
    const double hard_end = start + max_seconds * 1000.0;
    double next_frame = start + period;
    double last_frame = start;
    const double wait_start = cpu_wait_ms();
    double last_wait = wait_start;
    for (;;) {
        double now = now_ms();
        if ((now >= end && s->frames >= min_sim_frames) || now >= hard_end) {
            st->cpu_wait_ms = cpu_wait_ms() - wait_start;
            return 1;
        }
        if (now >= next_frame) {
            /* A frame: pump whatever is still queued, then draw the latest positions. */
            double interval = now - last_frame;
            double wait = cpu_wait_ms();
            last_frame = now;
            if (st->frames < st->frame_ms_cap) {
                st->frame_ms[st->frames] = interval;
                st->frame_own_ms[st->frames] = interval - (wait - last_wait);
            }
            last_wait = wait;
            st->frames++;
            st->late_frames += interval > LATE_FACTOR * period;
            if (!pump(rt, s, st, PUMP_TIMER)) {
                return 0;
            }
            if (s->dirty) {
                s->drawn = frame_bounds(s);
                s->dirty = 0;
                st->draws++;
            }
            next_frame += period;
            if (next_frame < now) {
                next_frame = now + period; /* fell behind: skip, don't burst */
            }
            continue;
        }
        /* Sleep until the doorbell rings or the frame is due (rounded up to whole ms). */
        struct pollfd p = {wake_fd, POLLIN, 0};
        int r = poll(&p, 1, (int)ceil(next_frame - now));
        if (r < 0 && errno != EINTR) {
            perror("host: poll");
            return 0;
        }
        if (r > 0 && (p.revents & POLLIN)) {
            if (!pump(rt, s, st, PUMP_FD)) {
                return 0;
            }
        }
    }
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile of the first n values (sorts them). */
static double quantile(double *v, uint64_t n, double q) {
    if (n == 0) {
        return 0.0;
    }
    qsort(v, (size_t)n, sizeof *v, compare_double);
    uint64_t i = (uint64_t)ceil(q * (double)n);
    return v[i == 0 ? 0 : i - 1];
}

static void usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s [--seconds S] [--min-sim-frames N] [--max-seconds M] [--agents N]"
            " [--rate R] [--kernel rust|cpp] [--workers W] [--isolated WORKER] [PLUGIN]\n"
            "Runs S seconds (3), then on until N particle frames arrived (0), never past M\n"
            "seconds (120).\n"
            "PLUGIN defaults to $HOSTLOOP_PARTICLES_PLUGIN. With --isolated the plugin runs in a\n"
            "WORKER process (hostloop-worker): a crash there ends the worker, not this host.\n",
            argv0);
}

int main(int argc, char **argv) {
    double seconds = 3.0;
    long min_sim_frames = 0;
    double max_seconds = 120.0;
    long agents = 100000;
    double rate = 0.0; /* simulation steps per second; 0 = as fast as it goes */
    const char *kernel = "rust";
    long workers = 0;
    const char *worker = NULL; /* --isolated: the hostloop-worker program */
    const char *plugin_path = getenv("HOSTLOOP_PARTICLES_PLUGIN");
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(arg, "--seconds") == 0 && value != NULL) {
            seconds = atof(value);
            i++;
        } else if (strcmp(arg, "--min-sim-frames") == 0 && value != NULL) {
            min_sim_frames = atol(value);
            i++;
        } else if (strcmp(arg, "--max-seconds") == 0 && value != NULL) {
            max_seconds = atof(value);
            i++;
        } else if (strcmp(arg, "--agents") == 0 && value != NULL) {
            agents = atol(value);
            i++;
        } else if (strcmp(arg, "--rate") == 0 && value != NULL) {
            rate = atof(value);
            i++;
        } else if (strcmp(arg, "--kernel") == 0 && value != NULL) {
            kernel = value;
            i++;
        } else if (strcmp(arg, "--workers") == 0 && value != NULL) {
            workers = atol(value);
            i++;
        } else if (strcmp(arg, "--isolated") == 0 && value != NULL) {
            worker = value;
            i++;
        } else if (arg[0] != '-') {
            plugin_path = arg;
        } else {
            usage(argv[0]);
            return 2;
        }
    }
    if (plugin_path == NULL || seconds <= 0 || agents <= 0 || rate < 0 || workers < 0 ||
        min_sim_frames < 0 || max_seconds < seconds) {
        usage(argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* The runtime, on the main thread. */
    scene s;
    memset(&s, 0, sizeof s);
    s.main_thread = pthread_self();
    hl_runtime_options_t options;
    hl_runtime_options_init(&options);
    options.workers = (uint32_t)workers; /* 0: cores - 1 */
    options.thread_name = "c-host";
    hl_runtime_t *rt = NULL;
    hl_status_t status = hl_runtime_new(&options, &rt);
    if (status != HL_STATUS_OK) {
        fail("hl_runtime_new", status);
        return 1;
    }
    int wake_fd = -1;
    hl_runtime_wake_fd(rt, &wake_fd);
    hl_runtime_set_sink(rt, on_message, &s, NULL);

    /* The plugin: it starts playing at load; tell it what to simulate. */
    hl_plugin_t *plugin = NULL;
    if (worker != NULL) {
        /* The isolation switch: the same plugin, in a worker process of its own. The host loop,
         * the wake fd and the sink do not change. */
        hl_plugin_load_options_t lo;
        hl_plugin_load_options_init(&lo);
        lo.isolation = HL_ISOLATION_OWN_PROCESS;
        lo.worker_program = worker;
        status = hl_plugin_load_ex(rt, plugin_path, &lo, &plugin);
    } else {
        status = hl_plugin_load(rt, plugin_path, &plugin);
    }
    if (status == HL_STATUS_OK && worker != NULL) {
        hl_plugin_process_t p;
        p.struct_size = sizeof p;
        hl_plugin_process(plugin, &p);
        printf("isolated=1 worker_pid=%u host_pid=%ld\n", (unsigned)p.pid, (long)getpid());
    }
    if (status != HL_STATUS_OK) {
        fail(worker != NULL ? "hl_plugin_load_ex" : "hl_plugin_load", status);
        hl_runtime_free(rt);
        return 1;
    }
    char settings[128];
    snprintf(settings, sizeof settings, "agents=%ld kernel=%s delivery=latest rate=%g playing=1",
             agents, kernel, rate);
    post_configure(rt, settings);

    loop_stats st;
    memset(&st, 0, sizeof st);
    st.frame_ms_cap = (uint64_t)(max_seconds * FRAME_HZ * 2) + 16;
    st.frame_ms = calloc((size_t)st.frame_ms_cap, sizeof(double));
    st.frame_own_ms = calloc((size_t)st.frame_ms_cap, sizeof(double));
    if (st.frame_ms == NULL || st.frame_own_ms == NULL) {
        fprintf(stderr, "host: out of memory\n");
        return 1;
    }
    const double started = now_ms();
    int loop_ok = run_loop(rt, wake_fd, &s, &st, seconds, (uint64_t)min_sim_frames, max_seconds);
    const double elapsed_s = (now_ms() - started) / 1e3;

    /* The end: unload the plugin (its simulation stops), then shut the runtime down. */
    hl_unload_report_t unload;
    memset(&unload, 0, sizeof unload);
    unload.struct_size = sizeof unload;
    hl_status_t unload_status = hl_plugin_unload(plugin, DEADLINE_MS, &unload);
    if (unload_status != HL_STATUS_OK) {
        fail("hl_plugin_unload", unload_status);
    }
    hl_stats_t stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    hl_runtime_stats(rt, &stats);
    hl_shutdown_report_t down;
    memset(&down, 0, sizeof down);
    down.struct_size = sizeof down;
    hl_status_t shutdown_status = hl_runtime_shutdown(rt, DEADLINE_MS, &down);
    if (shutdown_status != HL_STATUS_OK) {
        fail("hl_runtime_shutdown", shutdown_status);
    }
    hl_status_t free_status = hl_runtime_free(rt);
    if (free_status != HL_STATUS_OK) {
        fail("hl_runtime_free", free_status);
    }

    /* The report. */
    const uint64_t n = st.frames < st.frame_ms_cap ? st.frames : st.frame_ms_cap;
    const int sink_on_main = s.messages > 0 && s.off_main == 0;
    const int clean = loop_ok && unload_status == HL_STATUS_OK && shutdown_status == HL_STATUS_OK &&
                      free_status == HL_STATUS_OK && down.stragglers == 0;
    printf("host=c plugin=%s seconds=%.2f workers=%u agents=%ld rate=%g kernel=%s\n", PLUGIN,
           elapsed_s, (unsigned)stats.workers, agents, rate, kernel);
    /* The frames a 60 Hz loop has in the time it ran, and in the part of it the host had a CPU:
     * time spent waiting for one (a loaded machine) skips frames no host loop could draw. */
    const double expected = elapsed_s * FRAME_HZ;
    const double expected_own = (elapsed_s - st.cpu_wait_ms / 1e3) * FRAME_HZ;
    printf("frames=%" PRIu64 " expected_frames=%.0f expected_own_frames=%.0f late_frames=%" PRIu64
           " draws=%" PRIu64 "\n",
           st.frames, expected, expected_own > 0 ? expected_own : 0.0, st.late_frames, st.draws);
    printf("frame_p50_ms=%.2f frame_p99_ms=%.2f frame_max_ms=%.2f\n", quantile(st.frame_ms, n, 0.5),
           quantile(st.frame_ms, n, 0.99), quantile(st.frame_ms, n, 1.0));
    printf("frame_own_p99_ms=%.2f frame_own_max_ms=%.2f cpu_wait_ms=%.1f\n",
           quantile(st.frame_own_ms, n, 0.99), quantile(st.frame_own_ms, n, 1.0), st.cpu_wait_ms);
    printf("fd_pumps=%" PRIu64 " timer_pumps=%" PRIu64 " pump_max_us=%" PRIu64
           " pump_overruns=%" PRIu64 " doorbell_rings=%" PRIu64 "\n",
           st.fd_pumps, st.timer_pumps, st.pump_max_us, st.pump_overruns, stats.doorbell_rings);
    printf("sink_messages=%" PRIu64 " sink_on_main=%d sink_off_main=%" PRIu64 "\n", s.messages,
           sink_on_main, s.off_main);
    printf("sim_frames=%" PRIu64 " sim_frames_via_fd=%" PRIu64 " sim_frames_via_timer=%" PRIu64
           " bad_frames=%" PRIu64 " plugin_errors=%" PRIu64 "\n",
           s.frames, s.frames_via_fd, s.frames_via_timer, s.bad_frames, s.errors);
    printf("last_step=%" PRIu64 " last_frame_agents=%" PRIu64
           " drawn_bounds=%.2f,%.2f,%.2f..%.2f,%.2f,%.2f\n",
           s.step, s.count, s.drawn.lo[0], s.drawn.lo[1], s.drawn.lo[2], s.drawn.hi[0],
           s.drawn.hi[1], s.drawn.hi[2]);
    printf("unload=%s unload_ms=%.1f shutdown_ms=%.1f threads_joined=%u stragglers=%" PRIu64 "\n",
           hl_status_name(unload_status), (double)unload.elapsed_us / 1e3,
           (double)down.elapsed_us / 1e3, (unsigned)down.threads_joined, down.stragglers);
    printf("shutdown=%s\n", clean ? "OK" : "FAILED");
    free(st.frame_ms);
    free(st.frame_own_ms);
    free(s.xyz);
    return clean && sink_on_main && s.bad_frames == 0 && s.errors == 0 ? 0 : 1;
}
