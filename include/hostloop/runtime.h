/**
 * \file hostloop/runtime.h
 * \brief `hl_runtime_t`: the worker pool, the main-thread queue, the doorbell and shutdown.
 *
 * A host makes one runtime per process on its main thread, adds `hl_runtime_wake_fd` to its
 * event loop (or registers `hl_runtime_set_request_pump`), calls `hl_runtime_pump` with a time
 * budget when the fd is readable or from its idle callback, and ends with
 * `hl_runtime_shutdown` + `hl_runtime_free`.
 */
#ifndef HOSTLOOP_RUNTIME_H
#define HOSTLOOP_RUNTIME_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** \brief The runtime. Opaque; made by `hl_runtime_new`, freed by `hl_runtime_free`. */
typedef struct hl_runtime_t hl_runtime_t;

/**
 * \brief Options for `hl_runtime_new`. Always fill with `hl_runtime_options_init` first, then
 * change fields; the struct may grow at its end in later versions.
 */
typedef struct hl_runtime_options_t {
    /** `sizeof(hl_runtime_options_t)`, set by `hl_runtime_options_init`. */
    uint32_t struct_size;
    /** `HL_ABI_VERSION`, set by `hl_runtime_options_init`. */
    uint32_t abi_version;
    /** CPU worker threads; 0 = available cores - 1 (at least 1); at most 1024 on every
     *  machine (above that `hl_runtime_new` returns INVALID_ARG: such a count is a host setting
     *  gone wrong, e.g. a negative "all but N threads" cast to unsigned). Pass the host's thread
     *  setting here (Maya `threadCount`, `HOUDINI_MAX_THREADS`). */
    uint32_t workers;
    /** Threads of the IO lane for blocking work; 0 = 2; at most 1024, as `workers`. */
    uint32_t io_threads;
    /** Budget used by `hl_runtime_pump` when it is passed 0, in microseconds (default 2000). */
    uint32_t default_budget_us;
    /** How long a background `call_on_main` waits for a pump before HOST_BUSY, in ms
     *  (default 2000). */
    uint32_t call_timeout_ms;
    /** The shutdown deadline `hl_runtime_free` uses if `hl_runtime_shutdown` was not called, in
     *  ms (default 2000). */
    uint32_t free_deadline_ms;
    /** The most main-thread items that may wait for a pump; 0 = 1,048,576. While the host does
     *  not pump, `hl_runtime_post_event`, `hl_runtime_emit`, `hl_runtime_emit_array` and
     *  `hl_job_spawn` return HL_STATUS_BACKLOG at the
     *  limit instead of growing memory without bound; what the API already promised (the
     *  callbacks of jobs already spawned, progress, simulation frames) is never refused.
     *  Emitted payloads waiting are also held to 256 MiB. See
     *  `hl_runtime_backlog`. (This field was `reserved`, always 0: old callers get the
     *  default.) */
    uint32_t main_backlog_limit;
    /** Stack size of runtime threads in bytes; 0 = the platform's default. */
    uint64_t stack_size;
    /** Prefix of thread names (`<prefix>-worker-<i>`), copied; NULL = "hostloop". UTF-8. */
    const char *thread_name;
} hl_runtime_options_t;

/**
 * \brief Fills `options` with the defaults (and its `struct_size` and `abi_version`).
 *
 * \return NULL_ARG if `options` is NULL.
 *
 * [any-thread]
 */
hl_status_t hl_runtime_options_init(hl_runtime_options_t *options);

/**
 * \brief Creates a runtime and starts its threads. The calling thread becomes the runtime's
 * main thread: the only thread where `[main-thread]` functions may be called.
 *
 * \param options  filled by `hl_runtime_options_init`; not NULL; read only during the call.
 * \param out      receives the runtime on success (written only on success); not NULL. Free it
 *                 with `hl_runtime_free`.
 * \return NULL_ARG; INVALID_ARG if `options->struct_size` is smaller than version 1's struct,
 * `reserved` is not 0, or `workers` or `io_threads` is above 1024 (nothing is started; the
 * message in `hl_last_error()` names the field and the cap); INVALID_UTF8 if `thread_name` is not UTF-8; VERSION_MISMATCH if `options->abi_version` differs from the
 * library's or the struct is larger than this library knows with non-zero extra bytes; OS if
 * threads or the doorbell cannot be created.
 *
 * [main-thread] (it defines the main thread)
 */
hl_status_t hl_runtime_new(const hl_runtime_options_t *options, hl_runtime_t **out);

/**
 * \brief Shuts down (if not done yet, with the options' `free_deadline_ms`) and frees the
 * runtime. `rt` is invalid afterwards.
 *
 * Freeing twice is detected and returns INVALID_HANDLE: handles are never reused, so a stale
 * pointer can not alias a newer runtime. (A pointer hostloop never returned is detected as well;
 * one freed by `free()` or corrupted memory is not.)
 *
 * If the runtime's main thread has exited (it was made on a thread that has since ended), any
 * thread may free it: no thread could pass the main-thread check any more. The finalizers of
 * its callbacks then run on the freeing thread.
 *
 * \return NULL_ARG; INVALID_HANDLE; WRONG_THREAD (nothing is freed: the runtime stays alive);
 * TIMEOUT if this call did the shutdown and jobs were still running at `free_deadline_ms` (the
 * runtime is freed all the same and `rt` is invalid; their threads are detached and exit when
 * their jobs return; the jobs' names and ages are in `hl_last_error()`). After an
 * `hl_runtime_shutdown`, which reported any stragglers itself, it returns OK.
 *
 * [main-thread] (other threads must have stopped using `rt`), or any thread once the main
 * thread has exited
 */
hl_status_t hl_runtime_free(hl_runtime_t *rt);

/** \brief What `hl_runtime_shutdown` did. Set `struct_size` before the call. */
typedef struct hl_shutdown_report_t {
    /** `sizeof(hl_shutdown_report_t)`, set by the caller; hostloop writes no further. */
    uint32_t struct_size;
    /** Runtime threads that exited and were joined. */
    uint32_t threads_joined;
    /** Queued jobs cancelled without running. */
    uint64_t cancelled_queued;
    /** Jobs that were running when shutdown began (asked to cancel). */
    uint64_t cancelled_running;
    /** Jobs still running at the deadline (their threads are detached, not joined). */
    uint64_t stragglers;
    /** Main-thread items dropped without running. */
    uint64_t main_items_dropped;
    /** How long shutdown took, in microseconds. */
    uint64_t elapsed_us;
} hl_shutdown_report_t;

/**
 * \brief Shuts the runtime down within `deadline_ms`: unloads every plugin loaded into it (their
 * handles become invalid; each unload gets the same deadline), stops intake, cancels every job,
 * drops queued main-thread items, joins the threads. A job that ignores cancellation cannot hold
 * it past the deadline; its name and age are in `hl_last_error()` when the return is TIMEOUT.
 *
 * Every later call on `rt` returns SHUT_DOWN, except `hl_runtime_stats`, `hl_runtime_free` and
 * this function, which returns the first call's report again.
 *
 * \param report  may be NULL; otherwise `report->struct_size` must be set.
 * \return NULL_ARG; INVALID_HANDLE; WRONG_THREAD; INVALID_ARG (report too small: checked before
 * anything is done); TIMEOUT if jobs were still running at the deadline (the report is written
 * anyway).
 *
 * [main-thread]
 */
hl_status_t hl_runtime_shutdown(hl_runtime_t *rt, uint32_t deadline_ms,
                                hl_shutdown_report_t *report);

/**
 * \brief The doorbell: a file descriptor that becomes readable when main-thread work arrives
 * and is cleared by the `hl_runtime_pump` that finds the queue empty. Watch it for readability
 * with `QSocketNotifier`, `g_unix_fd_add`, `select` or `poll`; never read, write or close it.
 * Valid until `hl_runtime_free`.
 *
 * It is rung by the first post after a pump found the queue empty (a burst of results wakes the
 * host once; posts that arrive while a pump drains ring nothing), and again by a pump that
 * leaves work behind, so it stays readable while work is queued.
 *
 * \param fd  receives the descriptor on success; not NULL.
 * \return NULL_ARG; INVALID_HANDLE; WRONG_THREAD; SHUT_DOWN.
 *
 * [main-thread]
 */
hl_status_t hl_runtime_wake_fd(const hl_runtime_t *rt, int *fd);

/**
 * \brief Asks the host to schedule a pump soon. Called from any thread, at the moments the
 * doorbell fd is rung (coalesced the same way). It must only schedule (post an event, set a
 * flag), never pump itself, and must not throw.
 *
 * [any-thread]
 */
typedef void (*hl_request_pump_fn)(void *user_data);

/**
 * \brief Registers the request-pump callback, for host loops without fd watching (Windows
 * message loops, Blender timers). Replaces (and finalizes) any previous one; `fn` NULL removes it.
 *
 * \param finalize  called once with `user_data` when the callback is replaced, removed or the
 *                  runtime is freed; may be NULL.
 * \return NULL_ARG (rt); INVALID_HANDLE; SHUT_DOWN.
 *
 * [any-thread]
 */
hl_status_t hl_runtime_set_request_pump(hl_runtime_t *rt, hl_request_pump_fn fn, void *user_data,
                                        hl_finalizer_fn finalize);

/** \brief What one `hl_runtime_pump` did. Set `struct_size` before the call. */
typedef struct hl_pump_report_t {
    /** `sizeof(hl_pump_report_t)`, set by the caller. */
    uint32_t struct_size;
    uint32_t reserved;
    /** Main-thread items run (each delivered host event counts as one). */
    uint64_t ran;
    /** Items still queued, each undelivered host event counted as one (the doorbell stays
     * readable while this is > 0). */
    uint64_t remaining;
    /** Time the pump took, in microseconds. */
    uint64_t elapsed_us;
    /** How far past the budget it ran, in microseconds (0 within budget). */
    uint64_t overrun_us;
} hl_pump_report_t;

/**
 * \brief Runs queued main-thread work (job completions, sink messages, event subscribers) in
 * FIFO order until the queue is empty or `budget_us` is spent, and clears the doorbell. At
 * least one item runs per call.
 *
 * \param budget_us  time budget in microseconds; 0 = the options' `default_budget_us`. (Unlike
 *                   Rust's `Handle::pump(Duration::ZERO)`, which runs exactly one item: C has
 *                   no other way to say "the default". Pass 1 to run one item.)
 * \param report     may be NULL; otherwise `report->struct_size` must be set.
 * \return NULL_ARG (rt); INVALID_HANDLE; WRONG_THREAD; REENTRANT when called from inside a
 * callback this pump runs or from the `until` condition of `hl_runtime_run_until` (never a
 * deadlock; nothing runs); SHUT_DOWN; INVALID_ARG (report too small: checked before anything
 * runs).
 *
 * [main-thread] [not re-entrant]
 */
hl_status_t hl_runtime_pump(hl_runtime_t *rt, uint64_t budget_us, hl_pump_report_t *report);

/**
 * \brief Asked by `hl_runtime_run_until` after each pump: return non-zero to stop.
 * [main-thread]: runs on the thread that called `hl_runtime_run_until`, outside any pump. It
 * may call `[main-thread]` functions, except `hl_runtime_pump` and `hl_runtime_run_until`,
 * which return REENTRANT there (the run's own pumps do the pumping and count in its report).
 */
typedef int32_t (*hl_until_fn)(void *user_data);

/** \brief What one `hl_runtime_run_until` did. Set `struct_size` before the call. */
typedef struct hl_run_report_t {
    /** `sizeof(hl_run_report_t)`, set by the caller. */
    uint32_t struct_size;
    uint32_t reserved;
    /** Pumps run. */
    uint64_t pumps;
    /** Main-thread items those pumps ran. */
    uint64_t ran;
    /** Wall-clock time of the whole run, in microseconds. */
    uint64_t elapsed_us;
} hl_run_report_t;

/**
 * \brief Batch mode: for hosts with no running event loop (`blender -b`, `hython`, `mayapy`, a
 * render-farm job), the runtime drives its own pump on the calling (main) thread. It pumps
 * with `pump_budget_us`, sleeps on its doorbell until more main-thread work arrives, and
 * repeats until `until` returns non-zero or `timeout_ms` passes. `until` is asked before the
 * first pump and after each one, and at least every 50 ms while nothing arrives.
 *
 * \param until           NULL (run until the timeout) or the stop condition.
 * \param user_data       passed to `until`; not owned.
 * \param pump_budget_us  the budget of each pump; 0 = the options' `default_budget_us` (as in
 *                        `hl_runtime_pump`; Rust's `Duration::ZERO` means one item instead).
 * \param report          may be NULL; otherwise `report->struct_size` must be set. Written on
 *                        OK and on TIMEOUT.
 * \return OK (`until` returned non-zero); TIMEOUT (`timeout_ms` passed first); NULL_ARG (rt);
 * INVALID_HANDLE; WRONG_THREAD; REENTRANT (from inside a callback a pump runs, or from inside
 * an `until` condition); SHUT_DOWN; INVALID_ARG (report too small).
 *
 * [main-thread] [not re-entrant]
 */
hl_status_t hl_runtime_run_until(hl_runtime_t *rt, hl_until_fn until, void *user_data,
                                 uint64_t pump_budget_us, uint32_t timeout_ms,
                                 hl_run_report_t *report);

/** \brief The runtime's counters. Set `struct_size` before calling `hl_runtime_stats`. */
typedef struct hl_stats_t {
    /** `sizeof(hl_stats_t)`, set by the caller. */
    uint32_t struct_size;
    /** CPU workers. */
    uint32_t workers;
    uint64_t jobs_spawned;
    /** Jobs that finished successfully. */
    uint64_t jobs_finished;
    uint64_t jobs_failed;
    uint64_t jobs_cancelled;
    uint64_t jobs_panicked;
    /** Jobs queued on the CPU lanes (all priorities) and on the IO lane. */
    uint64_t queued_cpu;
    uint64_t queued_io;
    /** Main-thread items waiting for a pump, each undelivered host event counted as one. */
    uint64_t queued_main;
    uint64_t pumps;
    uint64_t pump_p50_us;
    uint64_t pump_p99_us;
    uint64_t budget_overruns;
    uint64_t main_items_run;
    uint64_t main_items_panicked;
    uint64_t doorbell_rings;
    uint64_t sink_messages;
    uint64_t sink_dropped;
    uint64_t events_dropped;
    /** Sum over CPU workers of the time they were awake (not parked), in microseconds. */
    uint64_t workers_busy_us;
    /** CPU workers parked right now. */
    uint64_t sleeping_workers;
} hl_stats_t;

/**
 * \brief Copies the runtime's counters into `stats` (up to `stats->struct_size` bytes). Works
 * after shutdown too.
 *
 * \return NULL_ARG; INVALID_HANDLE; INVALID_ARG (struct_size too small).
 *
 * [any-thread]
 */
hl_status_t hl_runtime_stats(const hl_runtime_t *rt, hl_stats_t *stats);

/**
 * \brief The main-thread backlog: items waiting for a pump (`queued`, as
 * `hl_stats_t::queued_main` counts them), the limit (`limit`, see
 * `hl_runtime_options_t::main_backlog_limit`), and how many calls were refused with
 * HL_STATUS_BACKLOG since the runtime started (`refused`). A host shows "N results waiting"
 * from `queued`. Each output may be NULL. Works after shutdown too.
 *
 * \return NULL_ARG (rt); INVALID_HANDLE.
 *
 * [any-thread]
 */
hl_status_t hl_runtime_backlog(const hl_runtime_t *rt, uint64_t *queued, uint64_t *limit,
                               uint64_t *refused);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_RUNTIME_H */
