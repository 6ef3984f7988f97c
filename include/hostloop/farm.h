/**
 * \file hostloop/farm.h
 * \brief `hl_farm_run_t`: a simulation run on a farm (a Slurm cluster), submitted by the host
 * as a job of its runtime, its progress and outcome delivered on the main thread at pumps.
 *
 * A farm run is a chain of `hostloop-worker run` jobs (segments), each restoring the state the
 * previous one saved, submitted to the farm with a dependency on the one before (Slurm:
 * `sbatch --dependency=afterok`); a segment that is pre-empted or requeued resumes from its last
 * snapshot. `hl_farm_run` queues a job on the runtime's IO lane that submits the chain, asks
 * the farm where it is every 250 ms and reports that as progress. Both callbacks run on the main
 * thread inside `hl_runtime_pump`, so a host that watches `hl_runtime_wake_fd` is woken when
 * there is something to show and never polls the farm itself. Cancelling the run cancels the
 * farm's jobs (`scancel`) before `done` reports CANCELLED.
 *
 * Everything the run writes goes into `hl_farm_spec_t::dir`, which every node of the farm must
 * see: `segment-<i>.state` (the state segment `i` saves; the last one is the final state),
 * `segment-<i>.log` (its output, `step S/T ...` progress lines) and, with `cache` set,
 * `frames.hlcache`, the frame cache every segment appends to (read it with `hl_cache_open`).
 *
 * The Slurm commands (`sbatch`, `scontrol`, `scancel`) are run as the host's user with its
 * environment: they find the cluster as they would from a shell (`SLURM_CONF`, or the
 * system's configuration).
 */
#ifndef HOSTLOOP_FARM_H
#define HOSTLOOP_FARM_H

#include "common.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/** \brief A farm run's handle. Opaque; made by `hl_farm_run`, freed by `hl_farm_run_free`. */
typedef struct hl_farm_run_t hl_farm_run_t;

/** \brief Farm backends (`hl_farm_spec_t::backend`). */
enum {
    /** A Slurm cluster, driven through its own commands (`sbatch --parsable`, `scontrol`,
     *  `scancel`); see `slurm_bin_dir` and `slurm_partition`. */
    HL_FARM_SLURM = 0
};

/**
 * \brief What to run and where. Fill with `hl_farm_spec_init` first, then set fields; the
 * struct may grow at its end in later versions. Strings are UTF-8 and only read during
 * `hl_farm_run`. Relative paths are made absolute against the calling process's current
 * directory at that call (the farm's jobs run in `dir`).
 */
typedef struct hl_farm_spec_t {
    /** `sizeof(hl_farm_spec_t)`, set by `hl_farm_spec_init`. */
    uint32_t struct_size;
    /** `HL_FARM_*`; `hl_farm_spec_init` sets `HL_FARM_SLURM`. */
    uint32_t backend;
    /** The `hostloop-worker` program the farm's nodes run. Not NULL. */
    const char *worker;
    /** The simulation plugin (a shared library) the worker loads. Not NULL. */
    const char *plugin;
    /** The run's directory (made if missing), on a filesystem every node sees. Not NULL. */
    const char *dir;
    /** The configuration of a fresh start (`hostloop-worker run --configure`, e.g.
     *  "agents=1000"); NULL = the plugin's default. Not together with `restore`. */
    const char *configure;
    /** Start from this saved state instead of a fresh one; NULL = a fresh start. */
    const char *restore;
    /** With `restore`: the step that state is at (segment targets count from it). */
    uint64_t restore_step;
    /** Steps in all, from the start state; at least 1 (default 1000). */
    uint64_t steps;
    /** Into how many chained jobs the steps are split; 1 to `steps` (default 1). */
    uint32_t segments;
    /** CPUs per job; 0 counts as 1 (default 1). */
    uint32_t cpus;
    /** Each job also saves every `save_every` steps, so a requeued job loses at most that
     *  many; 0 = only at each segment's end (default). */
    uint64_t save_every;
    /** Non-zero: the segments append their frames to `dir/frames.hlcache` (default 1). */
    uint32_t cache;
    /** 0. */
    uint32_t reserved;
    /** `HL_FARM_SLURM`: the directory of the Slurm commands; NULL = found on the `PATH`. */
    const char *slurm_bin_dir;
    /** `HL_FARM_SLURM`: the partition to submit to; NULL = the cluster's default. */
    const char *slurm_partition;
} hl_farm_spec_t;

/**
 * \brief A farm run's progress, on the main thread at a pump: `fraction` (0 to 1) of the steps
 * done and a `message` such as "segment 2/4, step 1800 of 4000" (UTF-8, never NULL, borrowed
 * for the call). Coalesced like a job's progress: at most once per pump, with the newest value;
 * never after `done`. It must not throw.
 *
 * [main-thread]
 */
typedef void (*hl_farm_progress_fn)(void *user_data, float fraction, const char *message);

/**
 * \brief A farm run's outcome, called once on the main thread at a pump. `status` and `text`
 * (UTF-8, never NULL, borrowed for the call):
 *
 * - OK: every segment completed; `text` is the absolute path of the final state
 *   (`dir/segment-<segments-1>.state`);
 * - FAILED: the farm refused the chain, could not be asked, or a segment failed; `text` says
 *   which and why (e.g. "cannot run sbatch ...", "segment 1: job 42 failed: ...");
 * - CANCELLED: the run was cancelled (`hl_farm_run_cancel`, or its runtime shutting down) and
 *   its farm jobs were cancelled;
 * - PANIC: a bug inside hostloop; `text` is its message.
 *
 * Not called if the runtime shuts down before it can be delivered (the finalizer still runs).
 * It must not throw.
 *
 * [main-thread]
 */
typedef void (*hl_farm_done_fn)(void *user_data, hl_status_t status, const char *text);

/**
 * \brief Fills `spec` with the defaults (and its `struct_size`): Slurm, 1,000 steps in one
 * segment, frames cached, 1 CPU, every string NULL.
 *
 * \return NULL_ARG if `spec` is NULL.
 *
 * [any-thread]
 */
hl_status_t hl_farm_spec_init(hl_farm_spec_t *spec);

/**
 * \brief Submits `spec` to its farm as a job of `rt` (on the IO lane) and returns at once;
 * the submission itself happens in the job, so a farm that refuses or cannot be reached is
 * reported through `done` (FAILED), not by this call.
 *
 * \param spec      not NULL; filled by `hl_farm_spec_init`; read during the call.
 * \param progress  may be NULL; see `hl_farm_progress_fn`.
 * \param done      may be NULL; see `hl_farm_done_fn`: called exactly once, unless the
 *                  runtime shuts down first.
 * \param user_data passed to `progress` and `done`.
 * \param finalize  may be NULL; called once with `user_data` after `done` (or, at shutdown,
 *                  once the run can no longer call back), on any thread.
 * \param out       receives the run's handle on success; may be NULL (the run can then only
 *                  be cancelled by shutdown). Free it with `hl_farm_run_free`.
 * \return NULL_ARG (rt, spec, spec->worker, spec->plugin, spec->dir); INVALID_HANDLE;
 * INVALID_ARG (a `struct_size` smaller than this header's, an unknown backend, `reserved` not
 * 0, an empty path, `steps` 0, `segments` 0 or more than `steps`, both `configure` and
 * `restore`); VERSION_MISMATCH (a larger `struct_size` with non-zero bytes this library does
 * not know); INVALID_UTF8 (a string field); OS (the current directory, for a relative path);
 * WRONG_THREAD; SHUT_DOWN; BACKLOG (the main-thread backlog is at its limit: nothing was
 * queued). On error nothing is submitted, neither callback nor `finalize` is called and
 * `user_data` stays the caller's.
 *
 * [main-thread]
 */
hl_status_t hl_farm_run(hl_runtime_t *rt, const hl_farm_spec_t *spec, hl_farm_progress_fn progress,
                        hl_farm_done_fn done, void *user_data, hl_finalizer_fn finalize,
                        hl_farm_run_t **out);

/**
 * \brief Cancels the run: its job cancels every segment on the farm that has not finished
 * (Slurm: `scancel`), then `done` reports CANCELLED. As with `hl_job_cancel`, a run that has
 * finished but whose `done` has not run yet is reported CANCELLED too (its farm jobs are over);
 * after `done`, or a second time, it does nothing.
 *
 * \return NULL_ARG; INVALID_HANDLE.
 *
 * [any-thread]
 */
hl_status_t hl_farm_run_cancel(const hl_farm_run_t *run);

/**
 * \brief The run's latest progress, from 0 to 1 (the fraction `progress` last received, or a
 * newer one).
 *
 * \return NULL_ARG; INVALID_HANDLE.
 *
 * [any-thread]
 */
hl_status_t hl_farm_run_progress(const hl_farm_run_t *run, float *fraction);

/**
 * \brief The run's state: writes PENDING while it is submitting or waiting on the farm, then
 * its outcome (OK, FAILED, CANCELLED, PANIC) — the status `done` receives (or will).
 *
 * \return NULL_ARG; INVALID_HANDLE.
 *
 * [any-thread]
 */
hl_status_t hl_farm_run_status(const hl_farm_run_t *run, hl_status_t *status);

/**
 * \brief Frees the handle. The run itself goes on and its callbacks still come (cancel it
 * first to stop it). Freeing twice returns INVALID_HANDLE.
 *
 * \return NULL_ARG; INVALID_HANDLE.
 *
 * [any-thread]
 */
hl_status_t hl_farm_run_free(hl_farm_run_t *run);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_FARM_H */
