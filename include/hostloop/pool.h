/**
 * \file hostloop/pool.h
 * \brief Process pools of plugin tasks: N worker processes that each load one plugin and run its
 * named tasks (`hl_plugin_descriptor_t::run_task`: bytes in, bytes out, with progress and
 * cancel), each answered exactly once on the host's main thread, at a pump.
 *
 * A task that crashes its worker (a segfault, an abort, a `kill`) is retried once on a fresh
 * worker; if that one crashes too, the task is answered with `HL_STATUS_WORKER` ("poisoned") and
 * the crash's cause. A lost worker is restarted: the pool refills itself. `hl_task_cancel`
 * reaches a running task at once (its `ctx->cancelled` turns non-zero); a queued one never runs.
 * The worker processes follow the isolation rules of `hostloop/plugin.h`.
 */
#ifndef HOSTLOOP_POOL_H
#define HOSTLOOP_POOL_H

#include "common.h"
#include "plugin.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/** \brief A pool of worker processes running one plugin's tasks. */
typedef struct hl_task_pool_t hl_task_pool_t;
/** \brief A submitted task, for cancelling it or reading its progress (optional). */
typedef struct hl_task_t hl_task_t;

/**
 * \brief A task's answer, called once on the main thread at a pump. `status`: OK with the
 * result's `len` bytes; FAILED with the task's reason (UTF-8 text); CANCELLED; WORKER: the task
 * crashed its worker twice (poisoned), with the crash's cause as text; SHUT_DOWN: the pool was
 * freed or its runtime shut down first. The bytes live for the call only. [main-thread]
 */
typedef void (*hl_task_done_fn)(void *user_data, hl_status_t status, const uint8_t *bytes,
                                size_t len);

/**
 * \brief Starts a pool of `size` worker processes (0: cores - 1, at least 1) that each load the
 * plugin at `path`; returns once all of them did.
 * \param options  NULL (defaults) or from `hl_plugin_load_options_init`; its isolation is
 *                 ignored (every worker is its own process), its restart limit too (a pool
 *                 refills itself).
 * \return as `hl_plugin_load_ex` (WORKER when a worker cannot start or is lost while loading).
 * [main-thread]
 */
hl_status_t hl_task_pool_new(hl_runtime_t *rt, const char *path, uint32_t size,
                             const hl_plugin_load_options_t *options, hl_task_pool_t **pool);

/**
 * \brief Stops the pool's workers within `deadline_ms` (quit, terminate, kill) and frees the
 * handle; unanswered tasks are answered SHUT_DOWN at the next pump.
 * \return OK; INVALID_HANDLE; WRONG_THREAD. [main-thread]
 */
hl_status_t hl_task_pool_free(hl_task_pool_t *pool, uint32_t deadline_ms);

/**
 * \brief Queues task `name` with a copy of `len` bytes at `input` for the next free worker.
 * `done` (may be NULL) is called once with the answer; then `finalize(user_data)` (may be NULL)
 * — both on the main thread. If this call fails, neither is called and `user_data` stays the
 * caller's.
 * \param task  NULL, or receives a handle (free it with `hl_task_free`; freeing does not
 *              cancel).
 * \return OK; NULL_ARG; INVALID_HANDLE; INVALID_UTF8; OUT_OF_MEMORY (the input cannot be
 * copied); SHUT_DOWN (the pool is being freed). [any-thread]
 */
hl_status_t hl_task_submit(hl_task_pool_t *pool, const char *name, const void *input, size_t len,
                           hl_task_done_fn done, void *user_data, hl_finalizer_fn finalize,
                           hl_task_t **task);

/** \brief Cancels a task. \return OK; INVALID_HANDLE. [any-thread] */
hl_status_t hl_task_cancel(const hl_task_t *task);

/** \brief The last progress the task reported, in [0, 1]. \return OK; NULL_ARG;
 * INVALID_HANDLE. [any-thread] */
hl_status_t hl_task_progress(const hl_task_t *task, float *progress);

/** \brief Frees a task handle (the task goes on). \return OK; INVALID_HANDLE. [any-thread] */
hl_status_t hl_task_free(hl_task_t *task);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_POOL_H */
