/*
 * Random sequences of hl_* calls with random arguments, from the main thread and two others.
 *
 * Usage:
 *   random_calls --plugin P --plugin-other P2 --not-a-library F
 *                [--seed S] [--sequences N | --seconds T] [--length L] [--hang-seconds H]
 *                [--replay 'OPS'] [--shrink] [--inject-status FN=STATUS] [--quiet]
 *   random_calls --print-documented
 *
 * A sequence is a list of ops drawn from its seed: each op is one hl_* call (the function, the
 * thread that makes it — main, A or B — and its arguments: valid ones, NULL, stale, freed,
 * foreign and wrongly-kinded handles, wrong struct sizes, bad strings, lengths no copy can be
 * made of). Callbacks (sink, event subscriber, job done, run_until's condition) carry one more
 * op, which they make from inside the callback. Ops run in rounds: consecutive ops on distinct
 * threads run at the same time, a `solo` op (every free, every runtime creation, some pumps)
 * alone. Every runtime a sequence made is freed by its main thread at the end, every job handle
 * too, and then every finalizer of a registration that succeeded must have run exactly once
 * (and none of one that failed), and every file descriptor they opened must be closed.
 *
 * Each call must return OK or a status its header documents for it; where the arguments leave
 * only one possible answer (NULL -> NULL_ARG, a freed handle -> INVALID_HANDLE, a main-thread
 * call elsewhere -> WRONG_THREAD, after shutdown -> SHUT_DOWN, a pump inside its own callback ->
 * REENTRANT, one bad argument -> its status) it must be that one. Out-parameters must stay
 * untouched on failure, hl_last_error() be "" after success and a message after failure, and
 * main-thread callbacks run on their runtime's main thread.
 *
 * Sequence k of a run uses seed s_k (s_0 = S, s_{k+1} = splitmix64(s_k)), so `--seed s_k
 * --sequences 1` replays it alone. A failure prints that command and exits non-zero: 4 for a
 * wrong status, 3 for a hang (the watchdog: no call finished for H seconds), a crash's signal or
 * the sanitizer's exit code otherwise (5 for a leak LeakSanitizer finds after a sequence, which
 * frees everything it made). With --shrink (implied after an in-process failure) the
 * program re-runs the failing sequence in child processes with ops removed (delta debugging)
 * and prints the shortest list that still fails the same way, as a --replay argument.
 *
 * Figures on stdout, one `key=value` per token: seed, sequences, ops, calls, calls_in_callbacks,
 * calls_off_main, and `status_<NAME>=<count>` for every status seen.
 */
#define _GNU_SOURCE

#define HL_TEST_OWN_CHECKS
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#ifdef __SANITIZE_ADDRESS__
void __sanitizer_set_death_callback(void (*callback)(void));
int __lsan_do_recoverable_leak_check(void);
#endif

#define MAX_OPS 1024
#define NTHREADS 3
#define BIT(s) (1u << (s))
#define MAX_NESTED_CALLS 4

/* ---- the functions, and what their headers say they return ------------------------------ */

enum fn_id {
    F_RT_NEW, F_RT_FREE, F_RT_SHUTDOWN, F_WAKE_FD, F_SET_REQUEST_PUMP, F_PUMP, F_RUN_UNTIL,
    F_STATS, F_BACKLOG, F_SET_SINK, F_EMIT, F_EMIT_ARRAY, F_POST_EVENT, F_SUBSCRIBE,
    F_UNSUBSCRIBE, F_JOB_SPAWN, F_JOB_CANCEL, F_JOB_PROGRESS, F_JOB_STATUS, F_JOB_FREE,
    F_JOB_CTX, F_PLUGIN_LOAD, F_PLUGIN_UNLOAD, F_PLUGIN_INFO, F_PLUGIN_RELOAD, F_PLUGIN_PROCESS,
    F_BLOB_CREATE, F_BLOB_FILE, F_PLUGIN_STATS, F_MISC, F_COUNT
};

#define NA BIT(HL_STATUS_NULL_ARG)
#define IA BIT(HL_STATUS_INVALID_ARG)
#define WT BIT(HL_STATUS_WRONG_THREAD)
#define RE BIT(HL_STATUS_REENTRANT)
#define SD BIT(HL_STATUS_SHUT_DOWN)
#define IH BIT(HL_STATUS_INVALID_HANDLE)
#define TO BIT(HL_STATUS_TIMEOUT)
#define U8 BIT(HL_STATUS_INVALID_UTF8)
#define OOM BIT(HL_STATUS_OUT_OF_MEMORY)
#define BL BIT(HL_STATUS_BACKLOG)
#define LOAD_STATUSES                                                                          \
    (NA | IH | U8 | WT | SD | BIT(HL_STATUS_FILE_NOT_FOUND) | BIT(HL_STATUS_NOT_A_LIBRARY) |   \
     BIT(HL_STATUS_NO_ENTRY_SYMBOL) | BIT(HL_STATUS_VERSION_MISMATCH) |                        \
     BIT(HL_STATUS_BAD_DESCRIPTOR) | BIT(HL_STATUS_ALREADY_LOADED) | BIT(HL_STATUS_PANIC) |    \
     BIT(HL_STATUS_FAILED) | BIT(HL_STATUS_OS))

static const struct fn_info {
    const char *name;  /* as in the replay text */
    const char *call;  /* the C function, for messages */
    int main_only;     /* [main-thread] */
    uint32_t documented; /* every status but OK its header lists */
} FNS[F_COUNT] = {
    [F_RT_NEW] = {"new", "hl_runtime_new", 0,
                  NA | IA | U8 | BIT(HL_STATUS_VERSION_MISMATCH) | BIT(HL_STATUS_OS)},
    [F_RT_FREE] = {"free", "hl_runtime_free", 1, NA | IH | WT | TO},
    [F_RT_SHUTDOWN] = {"shutdown", "hl_runtime_shutdown", 1, NA | IH | WT | IA | TO},
    [F_WAKE_FD] = {"wake_fd", "hl_runtime_wake_fd", 1, NA | IH | WT | SD},
    [F_SET_REQUEST_PUMP] = {"request_pump", "hl_runtime_set_request_pump", 0, NA | IH | SD},
    [F_PUMP] = {"pump", "hl_runtime_pump", 1, NA | IH | WT | RE | SD | IA},
    [F_RUN_UNTIL] = {"run_until", "hl_runtime_run_until", 1, TO | NA | IH | WT | RE | SD | IA},
    [F_STATS] = {"stats", "hl_runtime_stats", 0, NA | IH | IA},
    [F_BACKLOG] = {"backlog", "hl_runtime_backlog", 0, NA | IH},
    [F_SET_SINK] = {"set_sink", "hl_runtime_set_sink", 1, NA | IH | WT | SD},
    [F_EMIT] = {"emit", "hl_runtime_emit", 0, NA | IH | U8 | SD | OOM | BL},
    [F_EMIT_ARRAY] = {"emit_array", "hl_runtime_emit_array", 0, NA | IH | U8 | IA | SD | OOM | BL},
    [F_POST_EVENT] = {"post_event", "hl_runtime_post_event", 0, NA | IH | IA | U8 | SD | OOM | BL},
    [F_SUBSCRIBE] = {"subscribe", "hl_runtime_subscribe", 0, NA | IH | IA | SD},
    [F_UNSUBSCRIBE] = {"unsubscribe", "hl_runtime_unsubscribe", 0, NA | IH | IA | SD},
    [F_JOB_SPAWN] = {"spawn", "hl_job_spawn", 0, NA | IH | IA | U8 | SD | BL},
    [F_JOB_CANCEL] = {"cancel", "hl_job_cancel", 0, NA | IH},
    [F_JOB_PROGRESS] = {"progress", "hl_job_progress", 0, NA | IH},
    [F_JOB_STATUS] = {"status", "hl_job_status", 0, NA | IH},
    [F_JOB_FREE] = {"job_free", "hl_job_free", 0, NA | IH},
    [F_JOB_CTX] = {"ctx", "hl_job_ctx_check/hl_job_ctx_progress(NULL)", 0,
                   NA | BIT(HL_STATUS_CANCELLED)},
    [F_PLUGIN_LOAD] = {"load", "hl_plugin_load", 1, LOAD_STATUSES},
    [F_PLUGIN_UNLOAD] = {"unload", "hl_plugin_unload", 1, NA | IH | WT | IA | TO | RE},
    [F_PLUGIN_INFO] = {"info", "hl_plugin_info", 1, NA | IH | IA | WT | RE},
    [F_PLUGIN_RELOAD] = {"reload", "hl_plugin_reload", 1,
                         LOAD_STATUSES | RE | TO | BIT(HL_STATUS_WORKER)},
    [F_PLUGIN_PROCESS] = {"process", "hl_plugin_process", 1, NA | IH | IA | WT | RE},
    [F_BLOB_CREATE] = {"blob", "hl_blob_create", 0,
                      NA | IH | U8 | IA | BIT(HL_STATUS_FAILED) | SD},
    [F_BLOB_FILE] = {"blob_file", "hl_blob_create_from_file", 0,
                    NA | IH | U8 | IA | BIT(HL_STATUS_FAILED) | SD},
    [F_PLUGIN_STATS] = {"plugin_stats", "hl_runtime_plugin_stats", 0, NA | IH | IA},
    [F_MISC] = {"misc", "hl_runtime_options_init(NULL)", 0, NA},
};

/* How often each function is drawn, out of the sum. */
static const int WEIGHT[F_COUNT] = {
    [F_RT_NEW] = 3, [F_RT_FREE] = 2, [F_RT_SHUTDOWN] = 2, [F_WAKE_FD] = 3,
    [F_SET_REQUEST_PUMP] = 3, [F_PUMP] = 10, [F_RUN_UNTIL] = 3, [F_STATS] = 3, [F_BACKLOG] = 2,
    [F_SET_SINK] = 4, [F_EMIT] = 8, [F_EMIT_ARRAY] = 4, [F_POST_EVENT] = 7, [F_SUBSCRIBE] = 4,
    [F_UNSUBSCRIBE] = 3, [F_JOB_SPAWN] = 8, [F_JOB_CANCEL] = 3, [F_JOB_PROGRESS] = 2,
    [F_JOB_STATUS] = 3, [F_JOB_FREE] = 3, [F_JOB_CTX] = 1, [F_PLUGIN_LOAD] = 3,
    [F_PLUGIN_UNLOAD] = 2, [F_PLUGIN_INFO] = 2, [F_PLUGIN_RELOAD] = 1, [F_PLUGIN_PROCESS] = 1,
    [F_BLOB_CREATE] = 2, [F_BLOB_FILE] = 1, [F_PLUGIN_STATS] = 1, [F_MISC] = 1,
};

/* How many ways each function's non-handle arguments can be wrong (`op.bad` is 1..this). */
static const int NBAD[F_COUNT] = {
    [F_RT_NEW] = 8, [F_RT_SHUTDOWN] = 1, [F_WAKE_FD] = 1, [F_PUMP] = 1, [F_RUN_UNTIL] = 1,
    [F_STATS] = 2, [F_EMIT] = 4, [F_EMIT_ARRAY] = 7, [F_POST_EVENT] = 7, [F_SUBSCRIBE] = 2,
    [F_JOB_SPAWN] = 6, [F_JOB_PROGRESS] = 1, [F_JOB_STATUS] = 1, [F_PLUGIN_LOAD] = 5,
    [F_PLUGIN_UNLOAD] = 1, [F_PLUGIN_INFO] = 2, [F_PLUGIN_PROCESS] = 2, [F_BLOB_CREATE] = 4,
    [F_BLOB_FILE] = 4,
    [F_PLUGIN_STATS] = 2,
};

/* ---- ops ---------------------------------------------------------------------------------- */

/* Handle references (`op.a`, and `op.b` for unsubscribe's subscription). */
enum { REF_NULL = 0, REF_FOREIGN = 1, REF_WRONG_KIND = 2, REF_SLOT = 3 /* + creator's id */ };

typedef struct op {
    uint16_t id;      /* stable across shrinking: handles made by this op live in slot `id` */
    uint8_t fn;
    uint8_t thread;   /* 0 main, 1 A, 2 B */
    uint8_t solo;
    uint8_t bad;      /* 0: every non-handle argument valid; else which one is wrong */
    uint8_t out;      /* creators: 1 = keep the handle (in slot `id`) */
    uint32_t a, b, c, d;
    struct op *nested; /* callbacks' op, made from inside the callback */
} op_t;

static op_t nested_pool[MAX_OPS];

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint32_t draw(uint64_t *rng, uint32_t n) { return (uint32_t)(splitmix64(rng) % n); }

/* Creators seen so far while drawing, by kind. */
enum { K_RT, K_JOB, K_PLUGIN, K_SUB, K_COUNT };
typedef struct creators {
    uint16_t ids[K_COUNT][MAX_OPS];
    int n[K_COUNT];
} creators_t;

static uint32_t draw_ref(uint64_t *rng, const creators_t *cr, int kind) {
    uint32_t r = draw(rng, 100);
    if (cr->n[kind] == 0) {
        /* Nothing of this kind made yet: NULL, or a pointer hostloop never returned. */
        return r < 50 ? REF_FOREIGN : REF_NULL;
    }
    if (r < 7) {
        return REF_NULL;
    }
    if (r < 13) {
        return REF_FOREIGN;
    }
    if (r < 17) {
        return REF_WRONG_KIND;
    }
    /* Mostly a recent one: the older ones are more often freed already. */
    int n = cr->n[kind];
    int back = (int)draw(rng, (uint32_t)(n < 3 ? n : 3));
    int pick = r < 70 ? n - 1 - back : (int)draw(rng, (uint32_t)n);
    return REF_SLOT + cr->ids[kind][pick];
}

static int fn_kind_of_handle(int fn) {
    switch (fn) {
    case F_JOB_CANCEL: case F_JOB_PROGRESS: case F_JOB_STATUS: case F_JOB_FREE:
        return K_JOB;
    case F_PLUGIN_UNLOAD: case F_PLUGIN_INFO: case F_PLUGIN_RELOAD: case F_PLUGIN_PROCESS:
        return K_PLUGIN;
    case F_RT_NEW: case F_JOB_CTX: case F_MISC:
        return -1;
    default:
        return K_RT;
    }
}

static int draw_fn(uint64_t *rng, int nested) {
    int total = 0;
    for (int f = 0; f < F_COUNT; f++) {
        total += WEIGHT[f];
    }
    for (;;) {
        int r = (int)draw(rng, (uint32_t)total);
        int f = 0;
        while (r >= WEIGHT[f]) {
            r -= WEIGHT[f++];
        }
        /* Callbacks make no handles (nothing would keep them), and only free runtimes in solo
         * rounds (see run_nested). */
        if (nested && (f == F_RT_NEW || f == F_PLUGIN_LOAD)) {
            continue;
        }
        return f;
    }
}

static void draw_args(uint64_t *rng, op_t *op, const creators_t *cr) {
    int kind = fn_kind_of_handle(op->fn);
    op->a = kind >= 0 ? draw_ref(rng, cr, kind) : 0;
    op->b = draw(rng, 1u << 16);
    op->c = draw(rng, 1u << 16);
    op->d = draw(rng, 1u << 16);
    op->bad = NBAD[op->fn] > 0 && draw(rng, 100) < 30 ? (uint8_t)(1 + draw(rng, NBAD[op->fn])) : 0;
    if (op->fn == F_UNSUBSCRIBE) {
        op->b = draw(rng, 100) < 20 ? REF_FOREIGN : draw_ref(rng, cr, K_SUB);
    }
}

/* Draws sequence `seed`: ops[0] makes a runtime on the main thread. */
static int draw_sequence(uint64_t seed, int length, op_t *ops) {
    static creators_t cr;
    memset(&cr, 0, sizeof cr);
    uint64_t rng = seed;
    int runtimes = 0;
    for (int i = 0; i < length; i++) {
        op_t *op = &ops[i];
        memset(op, 0, sizeof *op);
        op->id = (uint16_t)i;
        op->fn = (uint8_t)(i == 0 ? F_RT_NEW : draw_fn(&rng, 0));
        if (op->fn == F_RT_NEW && runtimes >= 3) {
            op->fn = F_PUMP;
        }
        uint32_t t = draw(&rng, 100);
        op->thread = (uint8_t)(i == 0 || t < 60 ? 0 : t < 80 ? 1 : 2);
        draw_args(&rng, op, &cr);
        op->solo = op->fn == F_RT_NEW || op->fn == F_RT_FREE ||
                   ((op->fn == F_PUMP || op->fn == F_RUN_UNTIL) && draw(&rng, 100) < 30) ||
                   draw(&rng, 100) < 8;
        if (i == 0) {
            op->bad = 0;
        }
        switch (op->fn) {
        case F_RT_NEW:
            runtimes++;
            op->out = 1;
            cr.ids[K_RT][cr.n[K_RT]++] = op->id;
            break;
        case F_JOB_SPAWN:
            op->out = draw(&rng, 100) < 70;
            if (op->out) {
                cr.ids[K_JOB][cr.n[K_JOB]++] = op->id;
            }
            break;
        case F_PLUGIN_LOAD:
            op->out = 1;
            cr.ids[K_PLUGIN][cr.n[K_PLUGIN]++] = op->id;
            break;
        case F_SUBSCRIBE:
            op->out = draw(&rng, 100) < 70;
            if (op->out) {
                cr.ids[K_SUB][cr.n[K_SUB]++] = op->id;
            }
            break;
        default:
            break;
        }
        if (op->fn == F_SET_SINK || op->fn == F_SUBSCRIBE || op->fn == F_JOB_SPAWN ||
            op->fn == F_RUN_UNTIL) {
            op_t *n = &nested_pool[i];
            memset(n, 0, sizeof *n);
            n->id = op->id;
            n->fn = (uint8_t)draw_fn(&rng, 1);
            draw_args(&rng, n, &cr);
            if (n->a >= REF_SLOT || draw(&rng, 100) < 60) {
                /* Mostly the runtime the callback belongs to. */
                if (fn_kind_of_handle(n->fn) == K_RT) {
                    n->a = op->a;
                }
            }
            op->nested = n;
        }
    }
    return length;
}

/* ---- the replay text: `id:fn@thread[s]:bad:out:a:b:c:d[{fn:bad:a:b:c:d}]` per op ---------- */

static int find_fn(const char *name) {
    for (int f = 0; f < F_COUNT; f++) {
        if (strcmp(FNS[f].name, name) == 0) {
            return f;
        }
    }
    return -1;
}

static size_t format_ops(char *out, size_t cap, const op_t *ops, int n) {
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n && len < cap; i++) {
        const op_t *o = &ops[i];
        len += (size_t)snprintf(out + len, cap - len, "%s%u:%s@%u%s:%u:%u:%" PRIu32 ":%" PRIu32
                                ":%" PRIu32 ":%" PRIu32, i ? " " : "", o->id, FNS[o->fn].name,
                                o->thread, o->solo ? "s" : "", o->bad, o->out, o->a, o->b, o->c,
                                o->d);
        if (o->nested && len < cap) {
            const op_t *x = o->nested;
            len += (size_t)snprintf(out + len, cap - len, "{%s:%u:%" PRIu32 ":%" PRIu32
                                    ":%" PRIu32 ":%" PRIu32 "}", FNS[x->fn].name, x->bad, x->a,
                                    x->b, x->c, x->d);
        }
    }
    return len;
}

static int parse_ops(const char *text, op_t *ops) {
    char *copy = strdup(text);
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(copy, " ", &save); tok && n < MAX_OPS;
         tok = strtok_r(NULL, " ", &save)) {
        op_t *o = &ops[n];
        memset(o, 0, sizeof *o);
        unsigned id, thread, bad, out;
        char name[32], solo[4] = "", nested[160] = "";
        uint32_t a, b, c, d;
        if (sscanf(tok, "%u:%31[a-z_]@%u%3[s]:%u:%u:%" SCNu32 ":%" SCNu32 ":%" SCNu32
                        ":%" SCNu32 "%159s", &id, name, &thread, solo, &bad, &out, &a, &b, &c,
                   &d, nested) < 10 &&
            sscanf(tok, "%u:%31[a-z_]@%u:%u:%u:%" SCNu32 ":%" SCNu32 ":%" SCNu32 ":%" SCNu32
                        "%159s", &id, name, &thread, &bad, &out, &a, &b, &c, &d, nested) < 9) {
            fprintf(stderr, "cannot parse op \"%s\"\n", tok);
            exit(2);
        }
        int f = find_fn(name);
        if (f < 0 || id >= MAX_OPS || thread >= NTHREADS) {
            fprintf(stderr, "bad op \"%s\"\n", tok);
            exit(2);
        }
        *o = (op_t){.id = (uint16_t)id, .fn = (uint8_t)f, .thread = (uint8_t)thread,
                    .solo = solo[0] == 's', .bad = (uint8_t)bad, .out = (uint8_t)out,
                    .a = a, .b = b, .c = c, .d = d};
        if (nested[0] == '{') {
            op_t *x = &nested_pool[id];
            memset(x, 0, sizeof *x);
            char xname[32];
            unsigned xbad;
            if (sscanf(nested, "{%31[a-z_]:%u:%" SCNu32 ":%" SCNu32 ":%" SCNu32 ":%" SCNu32 "}",
                       xname, &xbad, &x->a, &x->b, &x->c, &x->d) != 6 ||
                find_fn(xname) < 0) {
                fprintf(stderr, "bad nested op \"%s\"\n", nested);
                exit(2);
            }
            x->id = (uint16_t)id;
            x->fn = (uint8_t)find_fn(xname);
            x->bad = (uint8_t)xbad;
            o->nested = x;
        }
        n++;
    }
    free(copy);
    return n;
}

/* ---- the handle table --------------------------------------------------------------------- */

enum { S_EMPTY, S_LIVE, S_SHUT, S_FREED };

typedef struct slot {
    int kind;
    void *handle;     /* runtime, job or plugin handle */
    uint64_t sub_id;  /* subscriptions */
    int state;
    int transitions;  /* calls in flight that may change `state` (shutdown, free, unload) */
    int owner;        /* runtimes: the thread that made it (its main thread) */
    uint32_t rt_id;   /* plugins, subscriptions: the slot of their runtime */
} slot_t;

static slot_t slots[MAX_OPS];
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static int foreign_object; /* its address is a pointer hostloop never returned */

/* What a handle argument was when a call began. */
typedef struct seen {
    void *handle;
    int ref;        /* REF_NULL, REF_FOREIGN, REF_WRONG_KIND or REF_SLOT */
    int state;      /* for REF_SLOT: the slot's state (a plugin's follows its runtime's) */
    int stable;     /* no shutdown/free/unload of it (or its runtime) was in flight */
    int owner;      /* the main thread of the runtime it belongs to, -1 if unknown */
    uint32_t slot;
} seen_t;

static seen_t look(uint32_t ref, int kind) {
    seen_t s = {.handle = NULL, .ref = REF_NULL, .state = S_EMPTY, .stable = 1, .owner = -1};
    pthread_mutex_lock(&table_lock);
    if (ref == REF_FOREIGN) {
        s.ref = REF_FOREIGN;
        s.handle = &foreign_object;
    } else if (ref == REF_WRONG_KIND) {
        /* Any handle of another kind hostloop made, live or not: tokens are never shared. */
        s.ref = REF_FOREIGN;
        s.handle = &foreign_object;
        for (int i = 0; i < MAX_OPS; i++) {
            if (slots[i].state != S_EMPTY && slots[i].kind != kind && slots[i].handle) {
                s.handle = slots[i].handle;
                s.ref = REF_WRONG_KIND;
                break;
            }
        }
    } else if (ref >= REF_SLOT && ref - REF_SLOT < MAX_OPS &&
               slots[ref - REF_SLOT].state != S_EMPTY && slots[ref - REF_SLOT].kind == kind) {
        const slot_t *sl = &slots[ref - REF_SLOT];
        s.ref = REF_SLOT;
        s.slot = ref - REF_SLOT;
        s.handle = sl->handle;
        s.state = sl->state;
        s.stable = sl->transitions == 0;
        s.owner = sl->owner;
        if (kind == K_PLUGIN || kind == K_SUB) {
            const slot_t *rt = &slots[sl->rt_id];
            s.owner = rt->owner;
            s.stable = s.stable && rt->transitions == 0;
            if (rt->state != S_LIVE && s.state == S_LIVE) {
                /* A runtime's shutdown unloads its plugins: their handles become invalid. */
                s.state = kind == K_PLUGIN ? S_FREED : S_SHUT;
            }
        }
    }
    pthread_mutex_unlock(&table_lock);
    return s;
}

/* The handle is still what it was: same state, nothing in flight. */
static int unchanged(const seen_t *before, uint32_t ref, int kind) {
    seen_t after = look(ref, kind);
    return before->stable && after.stable && after.state == before->state &&
           after.handle == before->handle;
}

static void begin_transition(uint32_t ref, int kind) {
    seen_t s = look(ref, kind);
    if (s.ref == REF_SLOT) {
        pthread_mutex_lock(&table_lock);
        slots[s.slot].transitions++;
        pthread_mutex_unlock(&table_lock);
    }
}

static void end_transition(uint32_t ref, int kind, int new_state) {
    seen_t s = look(ref, kind);
    if (s.ref == REF_SLOT) {
        pthread_mutex_lock(&table_lock);
        slots[s.slot].transitions--;
        if (new_state != S_EMPTY && slots[s.slot].state != S_FREED) {
            slots[s.slot].state = new_state;
        }
        pthread_mutex_unlock(&table_lock);
    }
}

static void fill_slot(uint16_t id, int kind, void *handle, uint64_t sub_id, int owner,
                      uint32_t rt_id) {
    pthread_mutex_lock(&table_lock);
    slots[id] = (slot_t){.kind = kind, .handle = handle, .sub_id = sub_id, .state = S_LIVE,
                         .owner = owner, .rt_id = rt_id};
    pthread_mutex_unlock(&table_lock);
}

/* ---- registrations: user data with a finalizer, one per op that registers a callback ------ */

enum { REG_NONE, REG_SINK, REG_EVENT, REG_JOB, REG_REQUEST_PUMP, REG_UNTIL };

typedef struct reg {
    int kind;
    const op_t *nested;
    uint32_t rt_ref;         /* the runtime the callback belongs to */
    int owner;               /* its main thread */
    atomic_int registered;   /* the registering call returned OK */
    atomic_int finalized;
    atomic_int calls;
    uint32_t behaviour;      /* jobs: 0 return 0, 1 return 7, 2 run until cancelled */
    uint32_t until_after;    /* run_until: stop after this many asks */
} reg_t;

static reg_t regs[MAX_OPS];

/* ---- threads, rounds, failure reports ----------------------------------------------------- */

static pthread_t threads[NTHREADS];
static _Thread_local int self_thread;          /* 0 main, 1 A, 2 B */
static _Thread_local int callback_depth;        /* > 0 inside a hostloop callback */
static _Thread_local uint32_t callback_rt_ref;  /* the runtime whose callback is running */
static int round_is_solo;                       /* set by the main thread between rounds */

static atomic_ulong progress; /* calls finished: the watchdog's sign of life */
static atomic_int sequence_failed;
static atomic_int sequence_failure_kind; /* 4 wrong status, 3 hang */
static double hang_seconds = 60.0;
static int quiet;

static atomic_ulong status_counts[32];
static atomic_ulong calls, calls_in_callbacks, calls_off_main, nested_skipped;
static atomic_ulong frees_in_callbacks; /* runtimes freed from inside their own callbacks */

/* For a reproducer when the process dies: the current sequence, as text. */
static char banner[256];
static char *current_ops_text;

/* Testing the harness itself: report this status for every call of this function. */
static int inject_fn = -1;
static hl_status_t inject_status;

static const char *plugin_path, *plugin_other_path, *not_a_library_path;

static void write_all(int fd, const char *s) {
    size_t len = strlen(s);
    while (len > 0) {
        ssize_t w = write(fd, s, len);
        if (w <= 0) {
            return;
        }
        s += w;
        len -= (size_t)w;
    }
}

static void print_reproducer(void) {
    write_all(1, banner);
    if (current_ops_text) {
        write_all(1, "ops: ");
        write_all(1, current_ops_text);
        write_all(1, "\n");
    }
}

static void on_death(void) { print_reproducer(); }

static void on_fatal_signal(int sig) {
    char msg[64];
    snprintf(msg, sizeof msg, "CRASH signal %d\n", sig);
    write_all(1, msg);
    print_reproducer();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void fail(const op_t *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(const op_t *op, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int expected = 0;
    atomic_compare_exchange_strong(&sequence_failure_kind, &expected, 4);
    atomic_store(&sequence_failed, 1);
    if (op) {
        printf("FAIL op %u (%s on thread %d%s): %s\n", op->id, FNS[op->fn].call, self_thread,
               callback_depth ? ", inside a callback" : "", msg);
    } else {
        printf("FAIL %s\n", msg);
    }
    fflush(stdout);
}

static char *status_list(uint32_t mask, char *buf, size_t cap) {
    size_t len = 0;
    buf[0] = '\0';
    for (uint32_t s = 0; s < 32 && len < cap; s++) {
        if (mask & BIT(s)) {
            len += (size_t)snprintf(buf + len, cap - len, "%s%s", len ? " " : "",
                                    hl_status_name(s) + strlen("HL_STATUS_"));
        }
    }
    return buf;
}

/*
 * Checks one call's status: OK or documented, and within `strict` when that is not 0 (the
 * statuses the arguments leave possible); hl_last_error() must match.
 */
static void check(const op_t *op, int fn, hl_status_t st, uint32_t strict) {
    char err[256];
    snprintf(err, sizeof err, "%s", hl_last_error());
    if (inject_fn == fn) {
        st = inject_status;
    }
    atomic_fetch_add(&calls, 1);
    atomic_fetch_add(&progress, 1);
    atomic_fetch_add(&status_counts[st < 32 ? st : 31], 1);
    if (callback_depth) {
        atomic_fetch_add(&calls_in_callbacks, 1);
    }
    if (self_thread != 0) {
        atomic_fetch_add(&calls_off_main, 1);
    }
    char a[256], b[256];
    if (st != HL_STATUS_OK && (st >= 32 || !(FNS[fn].documented & BIT(st)))) {
        fail(op, "%s returned %s, which its header does not document (documented: OK %s); "
             "last error \"%s\"", FNS[fn].call, hl_status_name(st),
             status_list(FNS[fn].documented, a, sizeof a), err);
    } else if (strict && !(strict & BIT(st))) {
        fail(op, "%s returned %s where the arguments leave only %s; last error \"%s\"",
             FNS[fn].call, hl_status_name(st), status_list(strict, b, sizeof b), err);
    } else if (st != HL_STATUS_OK && err[0] == '\0') {
        fail(op, "%s returned %s with an empty hl_last_error()", FNS[fn].call,
             hl_status_name(st));
    } else if (st == HL_STATUS_OK && err[0] != '\0') {
        fail(op, "%s succeeded but hl_last_error() is \"%s\"", FNS[fn].call, err);
    }
}

/* ---- callbacks ---------------------------------------------------------------------------- */

static void run_op(const op_t *op);

static void finalize(void *user_data) {
    reg_t *r = user_data;
    if (atomic_fetch_add(&r->finalized, 1) != 0) {
        fail(NULL, "a finalizer (registration of op %d) ran twice", (int)(r - regs));
    }
    if (r->kind == REG_SINK && self_thread != r->owner) {
        fail(NULL, "the sink's finalizer (op %d) ran on thread %d, not its main thread %d",
             (int)(r - regs), self_thread, r->owner);
    }
}

/* Runs a callback's op from inside it, at most MAX_NESTED_CALLS times per registration and
 * never from a callback inside a callback. A runtime is freed only in a solo round: its other
 * users must have stopped (hostloop/runtime.h); otherwise the op shuts it down instead. */
static void run_nested(reg_t *r) {
    if (r->nested == NULL || callback_depth > 0) {
        return;
    }
    if (atomic_fetch_add(&r->calls, 1) >= MAX_NESTED_CALLS) {
        atomic_fetch_add(&nested_skipped, 1);
        return;
    }
    op_t op = *r->nested;
    op.thread = (uint8_t)self_thread;
    op.nested = NULL;
    if (op.fn == F_RT_FREE && !round_is_solo) {
        op.fn = F_RT_SHUTDOWN;
        op.bad = 0;
    }
    callback_depth++;
    callback_rt_ref = r->rt_ref;
    run_op(&op);
    callback_depth--;
}

static void on_main_thread_callback(reg_t *r, const char *what) {
    if (self_thread != r->owner) {
        fail(NULL, "a %s callback (op %d) ran on thread %d, not its runtime's main thread %d",
             what, (int)(r - regs), self_thread, r->owner);
    }
}

static void sink_cb(void *user_data, const hl_message_t *m) {
    reg_t *r = user_data;
    if (r == NULL) {
        return; /* set from a callback */
    }
    on_main_thread_callback(r, "sink");
    if (m == NULL || m->topic == NULL) {
        fail(NULL, "the sink received a NULL message or topic");
    }
    run_nested(r);
}

static void event_cb(void *user_data, const hl_event_t *e) {
    reg_t *r = user_data;
    if (r == NULL) {
        return; /* subscribed from a callback */
    }
    on_main_thread_callback(r, "event");
    if (e == NULL) {
        fail(NULL, "a subscriber received a NULL event");
    }
    run_nested(r);
}

static void done_cb(void *user_data, hl_status_t status, int32_t code) {
    reg_t *r = user_data;
    on_main_thread_callback(r, "job done");
    if (status != HL_STATUS_OK && status != HL_STATUS_FAILED && status != HL_STATUS_CANCELLED) {
        fail(NULL, "a job's done callback got %s", hl_status_name(status));
    }
    if ((status == HL_STATUS_FAILED) != (code != 0)) {
        fail(NULL, "a job's done callback got %s with code %d", hl_status_name(status), code);
    }
    run_nested(r);
}

static int32_t until_cb(void *user_data) {
    reg_t *r = user_data;
    on_main_thread_callback(r, "until");
    int asked = atomic_load(&r->calls);
    run_nested(r);
    return asked >= (int)r->until_after;
}

static void request_pump_cb(void *user_data) { (void)user_data; }

static int32_t job_run(void *user_data, hl_job_ctx_t *ctx) {
    reg_t *r = user_data;
    uint32_t behaviour = r ? r->behaviour : 0;
    if (hl_job_ctx_check(ctx) == HL_STATUS_CANCELLED) {
        return 0;
    }
    hl_job_ctx_progress(ctx, 0.5f);
    if (behaviour == 2) {
        /* Until cancelled, within a bound: never a straggler that outlives its runtime. */
        double end = now_s() + 0.1;
        while (hl_job_ctx_check(ctx) == HL_STATUS_OK && now_s() < end) {
        }
    }
    return behaviour == 1 ? 7 : 0;
}

/* ---- one call ----------------------------------------------------------------------------- */

/*
 * The statuses the arguments leave possible, or 0 when several checks could come first: for
 * the handle `h`, given which argument is wrong (`bad_status`, 0 if none) and whether the call
 * is [main-thread].
 */
static uint32_t expect(const op_t *op, const seen_t *h, int stable, uint32_t bad_status) {
    int main_only = FNS[op->fn].main_only;
    if (h->ref == REF_NULL) {
        return bad_status == 0 || bad_status == NA ? NA : 0;
    }
    if (h->ref == REF_FOREIGN || h->ref == REF_WRONG_KIND) {
        return bad_status == 0 ? IH : 0;
    }
    if (!stable) {
        return 0;
    }
    if (h->state == S_FREED) {
        return bad_status == 0 ? IH : 0;
    }
    int elsewhere = main_only && self_thread != h->owner;
    if (elsewhere) {
        return bad_status == 0 && h->state == S_LIVE ? WT : 0;
    }
    if (callback_depth) {
        if ((op->fn == F_PUMP || op->fn == F_RUN_UNTIL) && h->state == S_LIVE &&
            bad_status == 0 && op->a == callback_rt_ref) {
            return RE;
        }
        return 0;
    }
    if (h->state == S_SHUT) {
        /* "Every later call on rt returns SHUT_DOWN, except hl_runtime_stats, hl_runtime_free
         * and this function" (and the two that say they work after shutdown). */
        switch (op->fn) {
        case F_RT_FREE: case F_RT_SHUTDOWN: case F_STATS: case F_BACKLOG: case F_PLUGIN_STATS:
            return bad_status;
        default:
            return bad_status == 0 ? SD : 0;
        }
    }
    return bad_status;
}

static const char BAD_UTF8[] = "t\xc3\x28";

static void run_op(const op_t *op) {
    const int fn = op->fn;
    const int kind = fn_kind_of_handle(fn);
    seen_t h = kind >= 0 ? look(op->a, kind) : (seen_t){0};
    void *hp = h.handle;
    hl_runtime_t *rt = hp;
    hl_status_t st = HL_STATUS_OK;
    uint32_t bad = 0; /* the status the wrong argument calls for */
    int new_state = S_EMPTY;
    /* Callbacks' ops share their op's id: they register nothing of their own. */
    reg_t *reg = callback_depth ? NULL : &regs[op->id];

    switch (fn) {
    case F_RT_NEW: {
        struct {
            hl_runtime_options_t o;
            uint64_t extra;
        } big;
        memset(&big, 0, sizeof big);
        hl_runtime_options_init(&big.o);
        big.o.workers = op->b % 3;
        big.o.io_threads = 1;
        big.o.default_budget_us = 500;
        big.o.free_deadline_ms = 2000;
        big.o.thread_name = (op->c & 1) ? NULL : "rc";
        if (op->c & 2) {
            big.o.struct_size = sizeof big; /* larger, extra bytes 0: accepted */
        }
        hl_runtime_t *sentinel = (hl_runtime_t *)&foreign_object, *out = sentinel;
        const hl_runtime_options_t *opts = &big.o;
        hl_runtime_t **outp = &out;
        switch (op->bad) {
        case 1: opts = NULL; bad = NA; break;
        case 2: outp = NULL; bad = NA; break;
        case 3: big.o.struct_size = 8; bad = IA; break;
        case 4: big.o.abi_version = HL_ABI_VERSION + 1; bad = BIT(HL_STATUS_VERSION_MISMATCH); break;
        case 5: big.o.workers = 5000; bad = IA; break;
        case 6: big.o.thread_name = BAD_UTF8; bad = U8; break;
        case 7: big.o.io_threads = 2000; bad = IA; break;
        case 8:
            big.o.struct_size = sizeof big;
            big.extra = 1;
            bad = BIT(HL_STATUS_VERSION_MISMATCH);
            break;
        }
        st = hl_runtime_new(opts, outp);
        check(op, fn, st, bad);
        if (st != HL_STATUS_OK && out != sentinel) {
            fail(op, "hl_runtime_new wrote its out-parameter on failure");
        }
        if (st == HL_STATUS_OK) {
            if (out == NULL || out == sentinel) {
                fail(op, "hl_runtime_new succeeded without a runtime");
            } else if (op->out && callback_depth == 0) {
                fill_slot(op->id, K_RT, out, 0, self_thread, op->id);
            } else {
                hl_runtime_free(out);
            }
        }
        return;
    }
    case F_RT_FREE:
    case F_RT_SHUTDOWN: {
        hl_shutdown_report_t report;
        memset(&report, 0, sizeof report);
        report.struct_size = sizeof report;
        hl_shutdown_report_t *rp = (op->c & 1) ? NULL : &report;
        if (fn == F_RT_SHUTDOWN && op->bad == 1) {
            report.struct_size = 4;
            rp = &report;
            bad = IA;
        }
        if (fn == F_RT_FREE && callback_depth && h.ref == REF_SLOT && h.state != S_FREED) {
            atomic_fetch_add(&frees_in_callbacks, 1);
        }
        begin_transition(op->a, K_RT);
        int stable = h.stable;
        st = fn == F_RT_FREE ? hl_runtime_free(rt) : hl_runtime_shutdown(rt, op->b % 50, rp);
        if (st == HL_STATUS_OK || st == HL_STATUS_TIMEOUT) {
            new_state = fn == F_RT_FREE ? S_FREED : S_SHUT;
        }
        end_transition(op->a, K_RT, new_state);
        uint32_t want = expect(op, &h, stable, bad);
        if (want == 0 && bad == 0 && h.ref == REF_SLOT && h.state != S_FREED && stable &&
            self_thread == h.owner && !callback_depth) {
            want = BIT(HL_STATUS_OK) | TO; /* on its main thread, it is done */
        }
        check(op, fn, st, want);
        return;
    }
    case F_WAKE_FD: {
        int fd = -7;
        int *fdp = op->bad == 1 ? NULL : &fd;
        bad = op->bad == 1 ? NA : 0;
        st = hl_runtime_wake_fd(rt, fdp);
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), bad));
        if (st != HL_STATUS_OK && fd != -7) {
            fail(op, "hl_runtime_wake_fd wrote its out-parameter on failure");
        }
        if (st == HL_STATUS_OK && fd < 0) {
            fail(op, "hl_runtime_wake_fd succeeded with fd %d", fd);
        }
        return;
    }
    case F_SET_REQUEST_PUMP: {
        int remove = op->b & 1;
        if (reg && !remove) {
            *reg = (reg_t){.kind = REG_REQUEST_PUMP, .rt_ref = op->a, .owner = h.owner};
        } else {
            reg = NULL; /* removing, or from a callback: no user data */
        }
        st = hl_runtime_set_request_pump(rt, remove ? NULL : request_pump_cb, reg,
                                         reg ? finalize : NULL);
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), 0));
        if (reg) {
            atomic_store(&reg->registered, st == HL_STATUS_OK);
        }
        return;
    }
    case F_PUMP: {
        hl_pump_report_t report;
        memset(&report, 0, sizeof report);
        report.struct_size = op->bad == 1 ? 4 : sizeof report;
        bad = op->bad == 1 ? IA : 0;
        uint64_t budget = op->b % 3 == 0 ? 0 : op->b % 3 == 1 ? 1 : 500;
        st = hl_runtime_pump(rt, budget, (op->c & 1) && !op->bad ? NULL : &report);
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), bad));
        return;
    }
    case F_RUN_UNTIL: {
        hl_run_report_t report;
        memset(&report, 0, sizeof report);
        report.struct_size = op->bad == 1 ? 4 : sizeof report;
        bad = op->bad == 1 ? IA : 0;
        if (reg) {
            *reg = (reg_t){.kind = REG_UNTIL, .nested = op->nested, .rt_ref = op->a,
                           .owner = h.owner, .until_after = op->d % 4};
        }
        int no_until = (op->b & 1) || !reg;
        st = hl_runtime_run_until(rt, no_until ? NULL : until_cb, no_until ? NULL : reg, 0,
                                  op->c % 20, (op->c & 32) && !op->bad ? NULL : &report);
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), bad));
        return;
    }
    case F_STATS: {
        hl_stats_t stats;
        memset(&stats, 0, sizeof stats);
        stats.struct_size = op->bad == 2 ? 4 : sizeof stats;
        bad = op->bad ? (op->bad == 1 ? NA : IA) : 0;
        st = hl_runtime_stats(rt, op->bad == 1 ? NULL : &stats);
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), bad));
        return;
    }
    case F_BACKLOG: {
        uint64_t q = 77, l = 77, r = 77;
        st = hl_runtime_backlog(rt, (op->b & 1) ? NULL : &q, (op->b & 2) ? NULL : &l,
                                (op->b & 4) ? NULL : &r);
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), 0));
        if (st != HL_STATUS_OK && (q != 77 || l != 77 || r != 77)) {
            fail(op, "hl_runtime_backlog wrote an out-parameter on failure");
        }
        return;
    }
    case F_SET_SINK: {
        int remove = op->b % 4 == 0;
        if (reg && !remove) {
            *reg = (reg_t){.kind = REG_SINK, .nested = op->nested, .rt_ref = op->a,
                           .owner = h.owner};
        } else {
            reg = NULL; /* removing, or from a callback: a sink without user data */
        }
        st = hl_runtime_set_sink(rt, remove ? NULL : sink_cb, reg, reg ? finalize : NULL);
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), 0));
        if (reg) {
            atomic_store(&reg->registered, st == HL_STATUS_OK);
        }
        return;
    }
    case F_EMIT: {
        static const char payload[16] = "0123456789abcdef";
        const char *topic = "rc/emit";
        const void *bytes = payload;
        size_t len = op->b % 17;
        if (len == 16) {
            bytes = NULL;
            len = 0;
        }
        switch (op->bad) {
        case 1: topic = NULL; bad = NA; break;
        case 2: topic = BAD_UTF8; bad = U8; break;
        case 3: bytes = NULL; len = 5; bad = NA; break;
        case 4: bytes = payload; len = SIZE_MAX; bad = OOM; break;
        }
        st = hl_runtime_emit(rt, topic, bytes, len);
        uint32_t want = expect(op, &h, unchanged(&h, op->a, K_RT), bad);
        check(op, fn, st, want && h.state == S_LIVE ? want | BL : want);
        return;
    }
    case F_EMIT_ARRAY: {
        static const float xyz[4][4] = {{0}};
        hl_array_view_t v = {HL_ELEM_F32, 3, op->b % 4, (op->c & 1) ? 16 : 12, xyz,
                             sizeof xyz};
        if (v.count == 0 && (op->c & 2)) {
            v.data = NULL;
            v.byte_len = 0;
        }
        const char *topic = "rc/array";
        const hl_array_view_t *vp = &v;
        if (op->bad >= 3) {
            v.data = xyz;
            v.byte_len = sizeof xyz;
        }
        switch (op->bad) {
        case 1: topic = NULL; bad = NA; break;
        case 2: vp = NULL; bad = NA; break;
        case 3: v.elem_type = 99; bad = IA; break;
        case 4: v.components = 0; bad = IA; break;
        case 5: v.count = 2; v.stride = 4; bad = IA; break;
        case 6: v.count = 3; v.byte_len = 8; bad = IA; break;
        case 7: v.count = 2; v.data = NULL; bad = NA | IA; break;
        }
        st = hl_runtime_emit_array(rt, topic, vp);
        uint32_t want = expect(op, &h, unchanged(&h, op->a, K_RT), bad);
        check(op, fn, st, want && h.state == S_LIVE ? want | BL : want);
        return;
    }
    case F_POST_EVENT: {
        uint32_t n = 1 + op->d % 3;
        hl_event_t e;
        memset(&e, 0, sizeof e);
        e.struct_size = sizeof e;
        e.kind = 1 + op->b % 8;
        e.frame = op->c;
        e.path = "scene.ma";
        e.topic = (op->c & 1) ? "work" : "rc/event"; /* "work": the C plugin spawns n tasks */
        e.bytes = (op->c & 1) ? (const void *)&n : NULL;
        e.bytes_len = (op->c & 1) ? sizeof n : 0;
        e.coalesce = (op->c >> 1) & 1;
        const hl_event_t *ep = &e;
        switch (op->bad) {
        case 1: ep = NULL; bad = NA; break;
        case 2: e.kind = (op->d & 1) ? 0 : 99; bad = IA; break;
        case 3: e.struct_size = 4; bad = IA; break;
        case 4: e.kind = HL_EVENT_CUSTOM; e.topic = NULL; bad = NA; break;
        case 5: e.kind = HL_EVENT_CUSTOM; e.topic = BAD_UTF8; bad = U8; break;
        case 6: e.kind = HL_EVENT_CUSTOM; e.bytes = &n; e.bytes_len = SIZE_MAX; bad = OOM; break;
        case 7: e.kind = HL_EVENT_SCENE_OPENED; e.path = NULL; bad = NA; break;
        }
        st = hl_runtime_post_event(rt, ep);
        uint32_t want = expect(op, &h, unchanged(&h, op->a, K_RT), bad);
        check(op, fn, st, want && h.state == S_LIVE ? want | BL : want);
        return;
    }
    case F_SUBSCRIBE: {
        uint32_t ekind = op->b % 9;
        hl_event_fn cb = event_cb;
        switch (op->bad) {
        case 1: cb = NULL; bad = NA; break;
        case 2: ekind = 99; bad = IA; break;
        }
        if (reg) {
            *reg = (reg_t){.kind = REG_EVENT, .nested = op->nested, .rt_ref = op->a,
                           .owner = h.owner};
        }
        uint64_t id = 0xfeedull;
        int keep = op->out && reg != NULL;
        st = hl_runtime_subscribe(rt, ekind, cb, reg, reg ? finalize : NULL,
                                  keep ? &id : NULL);
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), bad));
        if (reg) {
            atomic_store(&reg->registered, st == HL_STATUS_OK);
        }
        if (st != HL_STATUS_OK && id != 0xfeedull) {
            fail(op, "hl_runtime_subscribe wrote its out-parameter on failure");
        }
        if (st == HL_STATUS_OK && keep) {
            fill_slot(op->id, K_SUB, NULL, id, h.owner, h.slot);
        }
        return;
    }
    case F_UNSUBSCRIBE: {
        seen_t sub = look(op->b, K_SUB);
        uint64_t id = op->b == REF_FOREIGN ? 0xfffffff0deadbeefull
                      : sub.ref == REF_SLOT ? slots[sub.slot].sub_id : 0;
        st = hl_runtime_unsubscribe(rt, id);
        /* A made-up id is no subscription; a real one may belong to another runtime, or be
         * unsubscribed already, so it leaves OK and INVALID_ARG open. */
        uint32_t no_such = op->b == REF_FOREIGN ? IA : 0;
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), no_such));
        return;
    }
    case F_JOB_SPAWN: {
        hl_job_desc_t d;
        memset(&d, 0, sizeof d);
        d.struct_size = sizeof d;
        d.priority = op->b % 4;
        d.lane = op->c % 2;
        d.name = (op->b & 4) ? NULL : "rc-job";
        d.run = job_run;
        if (reg) {
            *reg = (reg_t){.kind = REG_JOB, .nested = op->nested, .rt_ref = op->a,
                           .owner = h.owner, .behaviour = op->d % 3};
            d.done = (op->d & 4) ? NULL : done_cb;
            d.user_data = reg;
            d.finalize = finalize;
        } /* else from a callback: fire and forget, no user data */
        const hl_job_desc_t *dp = &d;
        switch (op->bad) {
        case 1: dp = NULL; bad = NA; break;
        case 2: d.run = NULL; bad = NA; break;
        case 3: d.struct_size = 4; bad = IA; break;
        case 4: d.priority = 9; d.lane = HL_LANE_CPU; bad = IA; break; /* "CPU lane only" */
        case 5: d.lane = 7; bad = IA; break;
        case 6: d.name = BAD_UTF8; bad = U8; break;
        }
        hl_job_t *sentinel = (hl_job_t *)&foreign_object, *job = sentinel;
        int keep = op->out && reg != NULL;
        st = hl_job_spawn(rt, dp, keep ? &job : NULL);
        uint32_t want = expect(op, &h, unchanged(&h, op->a, K_RT), bad);
        check(op, fn, st, want && h.state == S_LIVE ? want | BL : want);
        if (reg) {
            atomic_store(&reg->registered, st == HL_STATUS_OK);
        }
        if (st != HL_STATUS_OK && job != sentinel) {
            fail(op, "hl_job_spawn wrote its out-parameter on failure");
        }
        if (st == HL_STATUS_OK && keep) {
            fill_slot(op->id, K_JOB, job, 0, -1, 0);
        }
        return;
    }
    case F_JOB_CANCEL:
    case F_JOB_PROGRESS:
    case F_JOB_STATUS:
    case F_JOB_FREE: {
        hl_job_t *job = hp;
        float f = -1.0f;
        hl_status_t js = 999;
        bad = op->bad == 1 ? NA : 0;
        int stable = h.stable;
        if (fn == F_JOB_FREE) {
            begin_transition(op->a, K_JOB);
        }
        switch (fn) {
        case F_JOB_CANCEL: st = hl_job_cancel(job); break;
        case F_JOB_PROGRESS: st = hl_job_progress(job, op->bad ? NULL : &f); break;
        case F_JOB_STATUS: st = hl_job_status(job, op->bad ? NULL : &js); break;
        default: st = hl_job_free(job); break;
        }
        if (fn == F_JOB_FREE) {
            end_transition(op->a, K_JOB, st == HL_STATUS_OK ? S_FREED : S_EMPTY);
        } else {
            stable = unchanged(&h, op->a, K_JOB);
        }
        check(op, fn, st, expect(op, &h, stable, bad));
        if (st != HL_STATUS_OK && (f != -1.0f || js != 999)) {
            fail(op, "%s wrote its out-parameter on failure", FNS[fn].call);
        }
        if (st == HL_STATUS_OK && fn == F_JOB_PROGRESS && !(f >= 0.0f && f <= 1.0f)) {
            fail(op, "hl_job_progress gave %f", (double)f);
        }
        if (st == HL_STATUS_OK && fn == F_JOB_STATUS &&
            js != HL_STATUS_PENDING && js != HL_STATUS_OK && js != HL_STATUS_FAILED &&
            js != HL_STATUS_CANCELLED) {
            fail(op, "hl_job_status gave %s", hl_status_name(js));
        }
        return;
    }
    case F_JOB_CTX:
        check(op, fn, hl_job_ctx_check(NULL), NA);
        check(op, fn, hl_job_ctx_progress(NULL, 0.5f), NA);
        return;
    case F_PLUGIN_LOAD: {
        const char *path = (op->b & 1) ? plugin_other_path : plugin_path;
        hl_plugin_t *sentinel = (hl_plugin_t *)&foreign_object, *plugin = sentinel;
        hl_plugin_t **outp = &plugin;
        switch (op->bad) {
        case 1: path = NULL; bad = NA; break;
        case 2: outp = NULL; bad = NA; break;
        case 3: path = "does-not-exist/libnothing.so"; bad = BIT(HL_STATUS_FILE_NOT_FOUND); break;
        case 4: path = not_a_library_path; bad = BIT(HL_STATUS_NOT_A_LIBRARY); break;
        case 5: path = BAD_UTF8; bad = U8; break;
        }
        st = hl_plugin_load(rt, path, outp);
        uint32_t want = expect(op, &h, unchanged(&h, op->a, K_RT), bad);
        check(op, fn, st, want);
        if (st != HL_STATUS_OK && plugin != sentinel) {
            fail(op, "hl_plugin_load wrote its out-parameter on failure");
        }
        if (st == HL_STATUS_OK) {
            fill_slot(op->id, K_PLUGIN, plugin, 0, h.owner, h.slot);
        }
        return;
    }
    case F_PLUGIN_UNLOAD: {
        hl_unload_report_t report;
        memset(&report, 0, sizeof report);
        report.struct_size = op->bad == 1 ? 4 : sizeof report;
        bad = op->bad == 1 ? IA : 0;
        begin_transition(op->a, K_PLUGIN);
        int stable = h.stable;
        st = hl_plugin_unload(hp, op->b % 50, (op->c & 1) && !op->bad ? NULL : &report);
        end_transition(op->a, K_PLUGIN,
                       st == HL_STATUS_OK || st == HL_STATUS_TIMEOUT ? S_FREED : S_EMPTY);
        check(op, fn, st, expect(op, &h, stable, bad));
        return;
    }
    case F_PLUGIN_INFO:
    case F_PLUGIN_PROCESS: {
        hl_plugin_info_t info;
        hl_plugin_process_t proc;
        memset(&info, 0, sizeof info);
        memset(&proc, 0, sizeof proc);
        info.struct_size = op->bad == 2 ? 4 : sizeof info;
        proc.struct_size = op->bad == 2 ? 4 : sizeof proc;
        bad = op->bad ? (op->bad == 1 ? NA : IA) : 0;
        if (fn == F_PLUGIN_INFO) {
            st = hl_plugin_info(hp, op->bad == 1 ? NULL : &info);
        } else {
            st = hl_plugin_process(hp, op->bad == 1 ? NULL : &proc);
        }
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_PLUGIN), bad));
        if (st == HL_STATUS_OK && fn == F_PLUGIN_INFO && info.name == NULL) {
            fail(op, "hl_plugin_info succeeded without a name");
        }
        return;
    }
    case F_PLUGIN_RELOAD: {
        const char *path = op->b % 3 == 0   ? plugin_other_path
                           : op->b % 3 == 1 ? plugin_path
                                            : "does-not-exist/libnothing.so";
        st = hl_plugin_reload(hp, path, op->c % 50);
        uint32_t want = expect(op, &h, unchanged(&h, op->a, K_PLUGIN), 0);
        check(op, fn, st, want & (NA | IH | WT | SD) ? want : 0);
        return;
    }
    case F_BLOB_CREATE: {
        char name[32];
        snprintf(name, sizeof name, (op->c & 1) ? "rc-blob" : "rc-blob-%u", op->id);
        static const char data[4] = "blob";
        const char *np = name;
        const void *dp = data;
        size_t len = op->b % 5;
        switch (op->bad) {
        case 1: np = NULL; bad = NA; break;
        case 2: np = ""; bad = IA; break;
        case 3: dp = NULL; len = 4; bad = NA; break;
        case 4: np = BAD_UTF8; bad = U8; break;
        }
        st = hl_blob_create(rt, np, dp, len);
        uint32_t want = expect(op, &h, unchanged(&h, op->a, K_RT), bad);
        /* "rc-blob" may exist already: INVALID_ARG too. */
        check(op, fn, st, want == 0 ? 0 : (op->c & 1) && want == SD ? want | IA : want);
        return;
    }
    case F_BLOB_FILE: {
        char name[32];
        snprintf(name, sizeof name, (op->c & 1) ? "rc-blob" : "rc-file-blob-%u", op->id);
        const char *np = name;
        /* A readable file, or none (FAILED). */
        const char *path = (op->b & 1) ? not_a_library_path : "does-not-exist/blob.bin";
        switch (op->bad) {
        case 1: np = NULL; bad = NA; break;
        case 2: path = NULL; bad = NA; break;
        case 3: np = ""; bad = IA; break;
        case 4: path = BAD_UTF8; bad = U8; break;
        }
        st = hl_blob_create_from_file(rt, np, path);
        uint32_t want = expect(op, &h, unchanged(&h, op->a, K_RT), bad);
        check(op, fn, st, want == 0 ? 0 : (op->c & 1) && want == SD ? want | IA : want);
        return;
    }
    case F_PLUGIN_STATS: {
        hl_plugin_stats_t ps;
        memset(&ps, 0, sizeof ps);
        ps.struct_size = op->bad == 2 ? 4 : sizeof ps;
        bad = op->bad ? (op->bad == 1 ? NA : IA) : 0;
        st = hl_runtime_plugin_stats(rt, op->bad == 1 ? NULL : &ps);
        check(op, fn, st, expect(op, &h, unchanged(&h, op->a, K_RT), bad));
        return;
    }
    case F_MISC:
        check(op, fn, hl_runtime_options_init(NULL), NA);
        if (hl_status_name(op->b % 40) == NULL || hl_version() != HL_VERSION ||
            hl_abi_version() != HL_ABI_VERSION) {
            fail(op, "hl_status_name, hl_version or hl_abi_version is wrong");
        }
        return;
    default:
        fail(op, "unknown op");
    }
}

/* ---- rounds ------------------------------------------------------------------------------- */

static pthread_barrier_t round_start, round_end;
static const op_t *round_ops[NTHREADS];
static const op_t *running[NTHREADS]; /* for the watchdog's report */
static atomic_int quit_threads;

static void run_round_op(int t) {
    const op_t *op = round_ops[t];
    if (op) {
        running[t] = op;
        run_op(op);
        running[t] = NULL;
    }
}

static void *other_thread(void *arg) {
    self_thread = (int)(intptr_t)arg;
    for (;;) {
        pthread_barrier_wait(&round_start);
        if (atomic_load(&quit_threads)) {
            return NULL;
        }
        run_round_op(self_thread);
        pthread_barrier_wait(&round_end);
    }
}

static void run_round(void) {
    pthread_barrier_wait(&round_start);
    run_round_op(0);
    pthread_barrier_wait(&round_end);
    memset(round_ops, 0, sizeof round_ops);
}

static void *watchdog(void *arg) {
    (void)arg;
    unsigned long last = atomic_load(&progress);
    double since = now_s();
    for (;;) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        unsigned long p = atomic_load(&progress);
        if (p != last) {
            last = p;
            since = now_s();
        } else if (now_s() - since > hang_seconds) {
            char msg[256];
            snprintf(msg, sizeof msg, "HANG: no call finished for %.0f s\n", hang_seconds);
            write_all(1, msg);
            for (int t = 0; t < NTHREADS; t++) {
                const op_t *op = running[t];
                if (op) {
                    snprintf(msg, sizeof msg, "  thread %d is in op %u (%s)\n", t, op->id,
                             FNS[op->fn].call);
                    write_all(1, msg);
                }
            }
            print_reproducer();
            _exit(3);
        }
    }
    return NULL;
}

/* Frees what the sequence left, on the right threads, then checks every finalizer ran once. */
static void clean_up(void) {
    static op_t frees[MAX_OPS];
    int n = 0;
    for (int i = 0; i < MAX_OPS; i++) {
        if (slots[i].kind == K_RT && (slots[i].state == S_LIVE || slots[i].state == S_SHUT)) {
            frees[n] = (op_t){.id = (uint16_t)i, .fn = F_RT_FREE,
                              .thread = (uint8_t)slots[i].owner, .a = REF_SLOT + (uint32_t)i};
            round_ops[frees[n].thread] = &frees[n];
            round_is_solo = 1;
            run_round();
            n++;
        }
    }
    for (int i = 0; i < MAX_OPS; i++) {
        if (slots[i].kind == K_JOB && slots[i].state == S_LIVE) {
            frees[n] = (op_t){.id = (uint16_t)i, .fn = F_JOB_FREE, .a = REF_SLOT + (uint32_t)i};
            run_op(&frees[n]);
            n++;
        }
    }
    for (int i = 0; i < MAX_OPS; i++) {
        if (slots[i].kind == K_RT && slots[i].state != S_FREED && slots[i].state != S_EMPTY) {
            fail(NULL, "the runtime of op %d could not be freed", i);
        }
    }
    /* A job's finalizer runs when its run returns, which a TIMEOUT of free left to its thread. */
    double deadline = now_s() + hang_seconds / 2; /* before the watchdog fires */
    for (int i = 0; i < MAX_OPS; i++) {
        reg_t *r = &regs[i];
        if (r->kind == REG_NONE || r->kind == REG_UNTIL) {
            continue;
        }
        int want = atomic_load(&r->registered) ? 1 : 0;
        while (atomic_load(&r->finalized) < want && now_s() < deadline) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL); /* waiting on a detached thread: nothing to wait on */
        }
        if (atomic_load(&r->finalized) != want) {
            fail(NULL, "the user data of op %d (%s) was finalized %d times, expected %d", i,
                 r->kind == REG_SINK ? "sink" : r->kind == REG_EVENT ? "subscriber"
                 : r->kind == REG_JOB ? "job" : "request-pump", atomic_load(&r->finalized),
                 want);
        }
    }
}

static int run_sequence(op_t *ops, int n) {
    const int fds_before = open_fds();
    memset(slots, 0, sizeof slots);
    memset(regs, 0, sizeof regs);
    atomic_store(&sequence_failed, 0);
    atomic_store(&sequence_failure_kind, 0);
    int i = 0;
    while (i < n) {
        int used[NTHREADS] = {0}, count = 0;
        if (ops[i].solo) {
            round_ops[ops[i].thread] = &ops[i];
            i++;
            count = 1;
        } else {
            while (i < n && !ops[i].solo && !used[ops[i].thread]) {
                used[ops[i].thread] = 1;
                round_ops[ops[i].thread] = &ops[i];
                i++;
                count++;
            }
        }
        round_is_solo = count == 1;
        run_round();
    }
    clean_up();
    /* Every runtime is freed: their doorbells and blobs are closed (at once, or when a
     * straggler's thread lets go of its runtime). */
    double deadline = now_s() + hang_seconds / 2; /* before the watchdog fires */
    while (open_fds() != fds_before && now_s() < deadline) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL); /* a detached thread has nothing to wait on */
    }
    if (open_fds() != fds_before) {
        fail(NULL, "%d file descriptors were open before the sequence and %d after it freed "
             "everything it made", fds_before, open_fds());
    }
#ifdef __SANITIZE_ADDRESS__
    /* Everything the sequence made is freed, its threads joined: whatever is left leaked. */
    if (!atomic_load(&sequence_failed) && __lsan_do_recoverable_leak_check() != 0) {
        fail(NULL, "LeakSanitizer found memory the sequence leaked (report on stderr)");
        atomic_store(&sequence_failure_kind, 5);
    }
#endif
    return atomic_load(&sequence_failed);
}

/* ---- shrinking ---------------------------------------------------------------------------- */

static char **child_base_argv; /* argv[0] and the --plugin... options */
static int child_base_argc;

/* Runs `ops` in a child process: 0 if it passed, else its exit code (or 128 + signal). */
static int run_child(const op_t *ops, int n) {
    static char text[1 << 20];
    format_ops(text, sizeof text, ops, n);
    char hang[32];
    snprintf(hang, sizeof hang, "%g", hang_seconds);
    char *argv[64];
    int argc = 0;
    argv[argc++] = "/proc/self/exe";
    for (int i = 1; i < child_base_argc && argc < 56; i++) {
        argv[argc++] = child_base_argv[i];
    }
    argv[argc++] = "--quiet";
    argv[argc++] = "--hang-seconds";
    argv[argc++] = hang;
    argv[argc++] = "--replay";
    argv[argc++] = text;
    argv[argc] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0) {
        fprintf(stderr, "cannot start a child: %s\n", strerror(errno));
        exit(2);
    }
    posix_spawn_file_actions_destroy(&fa);
    int status = 0;
    double deadline = now_s() + 3 * hang_seconds + 30;
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            break;
        }
        if (now_s() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return 3;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL); /* a child process has no fd to poll for */
    }
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}

/* Delta debugging: removes chunks of ops while the child still fails the same way. */
static void shrink(op_t *ops, int n) {
    printf("shrinking %d ops...\n", n);
    fflush(stdout);
    int how = 0;
    for (int attempt = 0; attempt < 3 && how == 0; attempt++) {
        how = run_child(ops, n);
    }
    if (how == 0) {
        printf("SHRINK: the sequence passed 3 times alone in a fresh process: the failure "
               "needs what ran before it, or is rare\n");
        return;
    }
    static op_t cand[MAX_OPS];
    int runs = 0;
    double give_up = now_s() + 600;
    for (int chunk = n / 2; chunk >= 1 && runs < 400 && now_s() < give_up;) {
        int removed = 0;
        for (int start = 0; start < n && n > 1 && runs < 400 && now_s() < give_up;) {
            int len = start + chunk > n ? n - start : chunk;
            int m = 0;
            for (int i = 0; i < n; i++) {
                if (i < start || i >= start + len) {
                    cand[m++] = ops[i];
                }
            }
            runs++;
            if (m > 0 && run_child(cand, m) == how) {
                memcpy(ops, cand, sizeof(op_t) * (size_t)m);
                n = m;
                removed = 1;
            } else {
                start += len;
            }
        }
        if (!removed) {
            chunk /= 2;
        }
    }
    static char text[1 << 20];
    format_ops(text, sizeof text, ops, n);
    printf("SHORTEST %d ops (exit %d, %d runs): --replay '%s'\n", n, how, runs, text);
    for (int i = 0; i < n; i++) {
        printf("  op %u: %s on thread %u%s, bad=%u a=%" PRIu32 "%s%s\n", ops[i].id,
               FNS[ops[i].fn].call, ops[i].thread, ops[i].solo ? " (alone)" : "", ops[i].bad,
               ops[i].a, ops[i].nested ? ", its callback calls " : "",
               ops[i].nested ? FNS[ops[i].nested->fn].call : "");
    }
    fflush(stdout);
}

/* ---- main --------------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(stderr, "usage: random_calls --plugin P --plugin-other P --not-a-library F "
                    "[--seed S] [--sequences N | --seconds T] [--length L] [--hang-seconds H] "
                    "[--replay OPS] [--shrink] [--inject-status FN=STATUS] [--quiet]\n");
    exit(2);
}

int main(int argc, char **argv) {
    main_thread = pthread_self();
    threads[0] = main_thread;
    uint64_t seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    long sequences = -1;
    double seconds = -1;
    int length = 40;
    const char *replay = NULL;
    int shrink_only = 0;
    child_base_argv = argv;
    child_base_argc = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (strcmp(a, "--plugin") == 0 && v) {
            plugin_path = v;
        } else if (strcmp(a, "--plugin-other") == 0 && v) {
            plugin_other_path = v;
        } else if (strcmp(a, "--not-a-library") == 0 && v) {
            not_a_library_path = v;
        } else if (strcmp(a, "--inject-status") == 0 && v) {
            char fname[32];
            unsigned s;
            if (sscanf(v, "%31[a-z_]=%u", fname, &s) != 2 || find_fn(fname) < 0) {
                usage();
            }
            inject_fn = find_fn(fname);
            inject_status = s;
        } else if (strcmp(a, "--seed") == 0 && v) {
            seed = strtoull(v, NULL, 0);
            takes = 0;
        } else if (strcmp(a, "--sequences") == 0 && v) {
            sequences = atol(v);
            takes = 0;
        } else if (strcmp(a, "--seconds") == 0 && v) {
            seconds = atof(v);
            takes = 0;
        } else if (strcmp(a, "--length") == 0 && v) {
            length = atoi(v);
            takes = 0;
            if (length < 1 || length > MAX_OPS) {
                usage();
            }
        } else if (strcmp(a, "--hang-seconds") == 0 && v) {
            hang_seconds = atof(v);
            takes = 0;
        } else if (strcmp(a, "--replay") == 0 && v) {
            replay = v;
            takes = 0;
        } else if (strcmp(a, "--shrink") == 0) {
            shrink_only = 1;
            i--;
            takes = 0;
        } else if (strcmp(a, "--print-documented") == 0) {
            /* The table above, for the test that compares it with the headers. */
            for (int f = 0; f < F_COUNT; f++) {
                char list[512];
                if (f != F_JOB_CTX && f != F_MISC) {
                    printf("documented %s %s\n", FNS[f].call,
                           status_list(FNS[f].documented, list, sizeof list));
                }
            }
            return 0;
        } else if (strcmp(a, "--quiet") == 0) {
            quiet = 1;
            i--;
            takes = 0;
        } else {
            usage();
        }
        if (takes) {
            /* Options every child needs come first in argv; keep them for run_child. */
            argv[child_base_argc++] = argv[i];
            argv[child_base_argc++] = argv[i + 1];
        }
        i++;
    }
    if (!plugin_path || !plugin_other_path || !not_a_library_path) {
        usage();
    }
    if (sequences < 0 && seconds < 0) {
        sequences = 100;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
#ifdef __SANITIZE_ADDRESS__
    __sanitizer_set_death_callback(on_death);
    (void)on_fatal_signal;
#else
    (void)on_death;
    signal(SIGSEGV, on_fatal_signal);
    signal(SIGBUS, on_fatal_signal);
    signal(SIGABRT, on_fatal_signal);
    signal(SIGFPE, on_fatal_signal);
    signal(SIGILL, on_fatal_signal);
#endif

    static op_t ops[MAX_OPS];
    static char text[1 << 20];
    if (shrink_only) {
        int n = replay ? parse_ops(replay, ops) : draw_sequence(seed, length, ops);
        shrink(ops, n);
        return 0;
    }

    pthread_barrier_init(&round_start, NULL, NTHREADS);
    pthread_barrier_init(&round_end, NULL, NTHREADS);
    for (int t = 1; t < NTHREADS; t++) {
        if (pthread_create(&threads[t], NULL, other_thread, (void *)(intptr_t)t) != 0) {
            fprintf(stderr, "cannot start thread %d\n", t);
            return 2;
        }
    }
    pthread_t dog;
    pthread_create(&dog, NULL, watchdog, NULL);
    pthread_detach(dog);

    printf("seed=0x%016" PRIx64 " length=%d\n", seed, length);
    double start = now_s();
    uint64_t s = seed;
    long done = 0, total_ops = 0;
    int failed = 0;
    failures = 0;
    while (replay ? done < 1
                  : sequences >= 0 ? done < sequences : now_s() - start < seconds) {
        int n = replay ? parse_ops(replay, ops) : draw_sequence(s, length, ops);
        format_ops(text, sizeof text, ops, n);
        current_ops_text = text;
        snprintf(banner, sizeof banner,
                 "FAILED sequence=%ld seed=0x%016" PRIx64 " length=%d\n"
                 "replay: random_calls --seed 0x%016" PRIx64 " --sequences 1 --length %d\n",
                 done, s, length, s, length);
        if (run_sequence(ops, n)) {
            failures++;
            print_reproducer();
            failed = atomic_load(&sequence_failure_kind);
            break;
        }
        total_ops += n;
        done++;
        s = splitmix64(&s);
    }
    current_ops_text = NULL;
    snprintf(banner, sizeof banner,
             "FAILED after the last sequence (a report at exit covers the whole run)\n"
             "replay: random_calls --seed 0x%016" PRIx64 " --sequences %ld --length %d\n",
             seed, done, length);
    atomic_store(&quit_threads, 1);
    pthread_barrier_wait(&round_start);
    for (int t = 1; t < NTHREADS; t++) {
        pthread_join(threads[t], NULL);
    }
    printf("sequences=%ld ops=%ld calls=%lu calls_in_callbacks=%lu calls_off_main=%lu "
           "nested_skipped=%lu frees_in_callbacks=%lu seconds=%.1f\n",
           done, total_ops, atomic_load(&calls), atomic_load(&calls_in_callbacks),
           atomic_load(&calls_off_main), atomic_load(&nested_skipped),
           atomic_load(&frees_in_callbacks), now_s() - start);
    printf("statuses:");
    for (int st = 0; st < 32; st++) {
        unsigned long c = atomic_load(&status_counts[st]);
        if (c) {
            printf(" status_%s=%lu", hl_status_name((hl_status_t)st) + strlen("HL_STATUS_"), c);
        }
    }
    printf("\n");
    if (failed) {
        if (!replay || !quiet) {
            int n = replay ? parse_ops(replay, ops) : draw_sequence(s, length, ops);
            if (!quiet) {
                shrink(ops, n);
            }
        }
        return failed;
    }
    printf("random_calls: OK\n");
    return 0;
}
