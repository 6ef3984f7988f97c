/**
 * \file hostloop/job.h
 * \brief `hl_job_t`: background jobs written in C or C++, on hostloop's pool.
 *
 * A job is a `run` callback executed on a worker (or on the IO lane for blocking work), with a
 * context for cancellation and progress, and an optional `done` callback that receives the
 * outcome on the main thread at a pump. The handle lets the host cancel the job and read its
 * progress and status; free it with `hl_job_free` (which does not cancel the job).
 */
#ifndef HOSTLOOP_JOB_H
#define HOSTLOOP_JOB_H

#include "common.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/** \brief A job handle. Opaque; made by `hl_job_spawn`, freed by `hl_job_free`. */
typedef struct hl_job_t hl_job_t;

/** \brief What a running job sees. Borrowed: valid only during its `run` callback. */
typedef struct hl_job_ctx_t hl_job_ctx_t;

/** \brief Priorities (`hl_job_desc_t::priority`): workers take higher lanes first. */
enum {
    HL_PRIORITY_HIGH = 0,
    HL_PRIORITY_NORMAL = 1,
    HL_PRIORITY_LOW = 2,
    HL_PRIORITY_BACKGROUND = 3
};

/** \brief Lanes (`hl_job_desc_t::lane`). */
enum {
    /** The CPU pool. */
    HL_LANE_CPU = 0,
    /** The IO lane: blocking work (file reads, downloads) that must not take a CPU worker. */
    HL_LANE_IO = 1
};

/**
 * \brief The job's work. Return 0 for success, anything else for failure (passed to `done` as
 * `code`). Check `hl_job_ctx_check` regularly: a job that never returns is abandoned at
 * shutdown's deadline, not waited for. It must not throw.
 *
 * [any-thread] (a worker)
 */
typedef int32_t (*hl_job_run_fn)(void *user_data, hl_job_ctx_t *ctx);

/**
 * \brief The job's outcome, on the main thread at a pump: `status` is OK, FAILED (with the
 * run callback's non-zero `code`), CANCELLED (the job was cancelled before or while it ran, or
 * after it finished but before this call) or PANIC. `code` is the run callback's return value
 * with FAILED, and 0 with every other status (OK, CANCELLED — also for a job that never ran —
 * and PANIC). Not called if the runtime shuts down first. It must not throw.
 *
 * [main-thread]
 */
typedef void (*hl_job_done_fn)(void *user_data, hl_status_t status, int32_t code);

/**
 * \brief The job's progress, on the main thread at a pump: the latest `fraction` (0 to 1) the
 * job reported with `hl_job_ctx_progress`, coalesced — however often the job reports between
 * two pumps, this runs at most once per pump, with the newest value, so a progress bar costs
 * the main thread one call per frame. The job's last report arrives before `done` (which
 * waits a pump for it if need be); never called after `done`. It must not throw.
 *
 * [main-thread]
 */
typedef void (*hl_job_progress_fn)(void *user_data, float fraction);

/** \brief Describes a job for `hl_job_spawn`. Zero-initialise, then set `struct_size`. */
typedef struct hl_job_desc_t {
    /** `sizeof(hl_job_desc_t)`. */
    uint32_t struct_size;
    /** `HL_PRIORITY_*` (CPU lane only); 0 is HIGH, so set it explicitly. */
    uint32_t priority;
    /** `HL_LANE_*`. */
    uint32_t lane;
    uint32_t reserved;
    /** Shown in shutdown reports; copied; may be NULL. UTF-8. */
    const char *name;
    /** Not NULL. */
    hl_job_run_fn run;
    /** May be NULL. */
    hl_job_done_fn done;
    /** Passed to `run` and `done`. */
    void *user_data;
    /** Called once with `user_data` after `done` (or after `run` if the job never reaches
     *  `done`, e.g. at shutdown; with a `progress` callback, once the job has ended and no
     *  progress call can follow), on any thread; may be NULL. */
    hl_finalizer_fn finalize;
    /** The main-thread progress callback (see `hl_job_progress_fn`); may be NULL. Added after
     *  `finalize`: a caller whose `struct_size` ends at `finalize` (built against an older
     *  header) is accepted and gets none. */
    hl_job_progress_fn progress;
} hl_job_desc_t;

/**
 * \brief Queues a job.
 *
 * \param desc  not NULL; read during the call.
 * \param out   receives a handle on success; may be NULL (fire and forget).
 * \return NULL_ARG (rt, desc, desc->run); INVALID_HANDLE; INVALID_ARG (a struct_size that does
 * not reach `finalize`, priority, lane); INVALID_UTF8 (name); SHUT_DOWN; BACKLOG (the host has
 * not pumped and the main-thread backlog is at its limit: the job was not queued; the
 * callbacks of jobs already spawned still arrive). On error `finalize` is not called: `user_data` stays the caller's.
 *
 * [any-thread]
 */
hl_status_t hl_job_spawn(hl_runtime_t *rt, const hl_job_desc_t *desc, hl_job_t **out);

/**
 * \brief Asks the job to stop: it never starts if still queued; a running job sees
 * `hl_job_ctx_check` return CANCELLED.
 *
 * \return NULL_ARG; INVALID_HANDLE.
 *
 * [any-thread]
 */
hl_status_t hl_job_cancel(const hl_job_t *job);

/**
 * \brief The job's latest progress, from 0 to 1.
 *
 * \return NULL_ARG; INVALID_HANDLE.
 *
 * [any-thread]
 */
hl_status_t hl_job_progress(const hl_job_t *job, float *fraction);

/**
 * \brief The job's state: writes PENDING while it is queued or running, then its outcome (OK,
 * FAILED, CANCELLED, PANIC).
 *
 * \return NULL_ARG; INVALID_HANDLE.
 *
 * [any-thread]
 */
hl_status_t hl_job_status(const hl_job_t *job, hl_status_t *status);

/**
 * \brief Frees the handle. The job itself goes on (cancel it first to stop it). Freeing twice
 * returns INVALID_HANDLE.
 *
 * \return NULL_ARG; INVALID_HANDLE.
 *
 * [any-thread]
 */
hl_status_t hl_job_free(hl_job_t *job);

/**
 * \brief OK while the job should go on, CANCELLED once it was cancelled (directly or by
 * shutdown): return from `run` soon after.
 *
 * \return NULL_ARG; CANCELLED.
 *
 * [any-thread] (the job's worker, during `run`)
 */
hl_status_t hl_job_ctx_check(const hl_job_ctx_t *ctx);

/**
 * \brief Reports progress (clamped to 0..1). Cheap: reports overwrite each other.
 *
 * \return NULL_ARG.
 *
 * [any-thread] (the job's worker, during `run`)
 */
hl_status_t hl_job_ctx_progress(hl_job_ctx_t *ctx, float fraction);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_JOB_H */
