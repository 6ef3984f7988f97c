/**
 * \file hostloop_plugin.h
 * \brief The plugin ABI: what a tool plugin exports, and the runtime services it may call.
 *
 * A plugin is a shared library (a Rust cdylib built with `hostloop::export_plugin!`, or C/C++
 * written against this header alone) that the host loads with `hl_plugin_load`
 * (`hostloop/plugin.h`). It exports one symbol, `hostloop_plugin_entry`, returning a static
 * `hl_plugin_descriptor_t`. At load the runtime hands the plugin an `hl_plugin_services_t`: a
 * table of function pointers into the host's runtime. All plugins in a process share that one
 * runtime — a plugin never starts a pool of its own.
 *
 * \section plugin_threads Threads
 *
 * As everywhere in hostloop, every function pointer carries one tag: `[main-thread]` (called
 * only on the host's main thread, during `hl_plugin_load`/`_unload`/`_reload` or a pump) or
 * `[any-thread]`. A plugin never calls host APIs from a worker; it posts work to the main thread
 * with `post_main`.
 *
 * \section plugin_closures Closures
 *
 * Work crosses the boundary as a (data, call, drop) triple: `data` is the plugin's pointer,
 * `call` runs the work, `drop` releases `data` unrun. For every triple the runtime accepts —
 * and for every one it refuses — exactly one of the following happens, exactly once: `call`
 * consumes `data`, or `drop` releases it. (A main-thread `call` that returns `HL_STEP_CONTINUE`
 * keeps `data` and is called again at a later pump.) No Rust type and no C++ exception crosses
 * the boundary; a `call` or `drop` must not unwind.
 *
 * \section plugin_unload Unload and reload
 *
 * `hl_plugin_unload` calls `unload`, then calls `drop` on every triple of the plugin that has
 * not started (worker lanes and main thread alike) and waits, up to a deadline, for the calls
 * already running. Only then is the library released: no call into its code can start once
 * unload returns. A library whose descriptor sets `HL_PLUGIN_FLAG_RETAIN_IMAGE` (every Rust
 * plugin: its standard library registers thread-local destructors on the host's threads) is kept
 * mapped instead of `dlclose`d ("retired", counted in `hl_plugin_stats_t`).
 *
 * `hl_plugin_reload` asks the running instance to `save_state`, lets its work finish or cancels
 * it (`is_closing` turns true), loads the new build from a copy under a fresh file name, and
 * calls the new instance's `load` then `restore_state` with the bytes. If any of that fails, the
 * old instance gets its own bytes back through `restore_state` and keeps running.
 */
#ifndef HOSTLOOP_PLUGIN_H
#define HOSTLOOP_PLUGIN_H

#include "hostloop/common.h"
#include "hostloop/event.h"
#include "hostloop/sink.h"

#ifdef __cplusplus
extern "C" {
#endif

/** \brief The plugin ABI version this header describes (`hl_plugin_descriptor_t::abi_version`).
 * The runtime loads plugins built for exactly this version. */
#define HL_PLUGIN_ABI_VERSION 1u

/** \brief The name of the one symbol a plugin exports (a `hl_plugin_entry_fn`). */
#define HL_PLUGIN_ENTRY_SYMBOL "hostloop_plugin_entry"

/** \brief Lanes for `hl_plugin_services_t::spawn`: CPU priorities, and the IO lane for blocking
 * work. Fixed numbers. */
enum {
    HL_PLUGIN_LANE_HIGH = 0,
    HL_PLUGIN_LANE_NORMAL = 1,
    HL_PLUGIN_LANE_LOW = 2,
    HL_PLUGIN_LANE_BACKGROUND = 3,
    HL_PLUGIN_LANE_IO = 4
};

/** \brief What a main-thread call returns. */
enum {
    /** Finished: `data` is consumed. */
    HL_STEP_DONE = 0,
    /** More to do: call again at a later pump (FIFO order holds), `data` is kept. */
    HL_STEP_CONTINUE = 1
};

/** \brief `hl_plugin_descriptor_t::flags`. */
enum {
    /** Never unmap this library: unloading retires it (it stays mapped, unused). Set by every
     * Rust plugin. */
    HL_PLUGIN_FLAG_RETAIN_IMAGE = 1u
};

/** \brief Runs work on a worker; consumes `data`. Must not unwind. [any-thread] */
typedef void (*hl_task_fn)(void *data);

/**
 * \brief Runs work on the main thread during a pump. `budget_left_ns` is what remains of the
 * pump's budget (0 when spent: do a small slice and return `HL_STEP_CONTINUE`). Returns
 * `HL_STEP_DONE` (data consumed) or `HL_STEP_CONTINUE`. Must not unwind.
 * [main-thread]
 */
typedef uint32_t (*hl_main_task_fn)(void *data, uint64_t budget_left_ns);

/** \brief Releases a triple's `data` that will never be called. May run on any thread,
 * including while the plugin is being unloaded. Must not unwind. [any-thread] */
typedef void (*hl_drop_fn)(void *data);

/** \brief Receives saved state: `write` may be called any number of times; the bytes are
 * concatenated. [main-thread] */
typedef void (*hl_write_fn)(void *out, const uint8_t *bytes, size_t len);

/**
 * \brief The runtime services a plugin may call, valid from `load` until `unload` returns (and
 * for any `call`/`drop` the runtime makes after that). Pass `host` as the first argument of
 * every function. The table only grows at the end; read `struct_size` before using a member
 * added after version 1.
 */
typedef struct hl_plugin_services_t {
    /** `sizeof(hl_plugin_services_t)` of the runtime. */
    uint32_t struct_size;
    /** `HL_PLUGIN_ABI_VERSION` of the runtime. */
    uint32_t abi_version;
    /** Opaque; the first argument of every function below. */
    void *host;

    /**
     * \brief Queues `call(data)` on a worker of `lane` (`HL_PLUGIN_LANE_*`). Exactly one of `call` and
     * `drop` runs, once — `drop` if the plugin is unloaded before it starts, or at once (before
     * this returns) when the runtime refuses it.
     * \return OK; INVALID_ARG (unknown lane, NULL call or drop); SHUT_DOWN (the runtime or the
     * plugin is closing).
     * [any-thread]
     */
    hl_status_t (*spawn)(void *host, uint32_t lane, void *data, hl_task_fn call, hl_drop_fn drop);

    /**
     * \brief Queues `call(data, budget)` for the main thread, to run at a pump in FIFO order
     * with the plugin's other main-thread work, and rings the host's doorbell. Same
     * exactly-once rule as `spawn`.
     * \return OK; INVALID_ARG (NULL call or drop); SHUT_DOWN.
     * [any-thread]
     */
    hl_status_t (*post_main)(void *host, void *data, hl_main_task_fn call, hl_drop_fn drop);

    /**
     * \brief Hands a message to the host sink now (zero copy: `message` is borrowed for the
     * call). Sets `*delivered` (may be NULL) to 1 when a sink took it.
     * \return OK; NULL_ARG; INVALID_ARG (bad view or struct_size); INVALID_UTF8; REENTRANT (from
     * inside the sink); WRONG_THREAD; SHUT_DOWN.
     * [main-thread]
     */
    hl_status_t (*emit)(void *host, const hl_message_t *message, uint32_t *delivered);

    /**
     * \brief Posts a host event (copied), as `hl_runtime_post_event` does; every subscriber,
     * this plugin's `event` callback included, receives it at a pump.
     * \return as `hl_runtime_post_event`.
     * [any-thread]
     */
    hl_status_t (*post_event)(void *host, const hl_event_t *event);

    /** \brief Non-zero on the host's main thread. [any-thread] */
    uint32_t (*is_main_thread)(void *host);

    /** \brief Non-zero on one of the runtime's CPU workers. [any-thread] */
    uint32_t (*is_worker_thread)(void *host);

    /** \brief Number of CPU workers of the runtime. [any-thread] */
    uint32_t (*workers)(void *host);

    /**
     * \brief Non-zero once the plugin is being unloaded or quiesced for a reload: long work
     * should stop at its next check (a cancellation flag for the whole plugin). New `spawn` and
     * `post_main` calls are refused meanwhile.
     * [any-thread]
     */
    uint32_t (*is_closing)(void *host);

    /**
     * \brief A shared read-only blob of the host's runtime (created with `hl_blob_create` or
     * `Handle::create_blob`), by name: `*fd` receives a new file descriptor of it — a sealed
     * memfd, which the plugin maps read-only (`mmap(NULL, *len, PROT_READ, MAP_SHARED, *fd, 0)`)
     * and closes when done. Every process mapping it shares the same pages: a model of millions
     * of triangles is in memory once, however many plugins and workers read it. Present when
     * `struct_size` covers it (tables of the first layout end at `is_closing`).
     * \return OK; NULL_ARG; INVALID_UTF8; INVALID_ARG (no blob of that name); OS (no fd left).
     * [any-thread]
     */
    hl_status_t (*blob)(void *host, const char *name, int *fd, uint64_t *len);
} hl_plugin_services_t;

/** \brief What a running task may ask of its pool (`hl_plugin_descriptor_t::run_task`). */
typedef struct hl_task_ctx_t {
    /** `sizeof(hl_task_ctx_t)`. */
    uint32_t struct_size;
    uint32_t reserved;
    /** The first argument of both functions. */
    void *ctx;
    /** Non-zero once the task is cancelled: stop and return CANCELLED. [any-thread] */
    uint32_t (*cancelled)(void *ctx);
    /** Reports progress in [0, 1]. [any-thread] */
    void (*progress)(void *ctx, float fraction);
} hl_task_ctx_t;

/**
 * \brief What a plugin exports. Static: the runtime reads it, never frees it. It may grow at
 * the end; the runtime reads no further than `struct_size`.
 */
typedef struct hl_plugin_descriptor_t {
    /** `sizeof(hl_plugin_descriptor_t)`; at least the size of ABI version 1's first layout
     * (up to and including `restore_state`). */
    uint32_t struct_size;
    /** `HL_PLUGIN_ABI_VERSION`; a mismatch (older or newer) is refused at load. */
    uint32_t abi_version;
    /** `HL_PLUGIN_FLAG_*`. */
    uint32_t flags;
    uint32_t reserved;
    /** Unique name (at most one instance per name per runtime), NUL-terminated UTF-8; not NULL. */
    const char *name;
    /** The plugin's own version, NUL-terminated UTF-8; not NULL. */
    const char *version;

    /**
     * \brief Creates the instance. `services` stays valid until `unload` returns; keep the
     * pointer. On failure write a NUL-terminated reason into `error` (`error_len` bytes,
     * truncated) and return non-OK (the plugin is not loaded, `unload` is not called, and every
     * triple it queued is dropped).
     * \return OK with `*instance` set (may be NULL if the plugin keeps no state).
     * [main-thread]
     */
    hl_status_t (*load)(const hl_plugin_services_t *services, void **instance, char *error,
                        size_t error_len);

    /**
     * \brief Destroys the instance: stop the plugin's own threads, release its state. The
     * runtime then drops the plugin's unstarted triples and waits for running ones; no other
     * callback of this descriptor is called after `unload`. Not NULL.
     * [main-thread]
     */
    void (*unload)(void *instance);

    /** \brief A host event, borrowed for the call. May be NULL (no events). [main-thread] */
    void (*event)(void *instance, const hl_event_t *event);

    /**
     * \brief Saves the plugin's state for a reload and *suspends* it: afterwards the plugin
     * starts no new work (its sims pause) until `restore_state` or `unload`. Write the bytes
     * through `write(out, ...)`. May be NULL (reload then starts the new build fresh).
     * \return OK, or an error (the reload is abandoned and the plugin keeps running as before).
     * [main-thread]
     */
    hl_status_t (*save_state)(void *instance, void *out, hl_write_fn write);

    /**
     * \brief Replaces the plugin's state with `bytes` (from `save_state` of this or an earlier
     * build) and resumes. Called on a new instance right after its `load` on reload, or on the
     * old instance with its own bytes when a reload fails. On failure write a reason into
     * `error` and return non-OK. May be NULL only if `save_state` is NULL.
     * [main-thread]
     */
    hl_status_t (*restore_state)(void *instance, const uint8_t *bytes, size_t len, char *error,
                                 size_t error_len);

    /**
     * \brief Saves the plugin's state *without* suspending it: a checkpoint, in the format
     * `restore_state` reads. Taken every `save_interval` from a plugin isolated in a worker
     * process, and restored into a restarted worker after a crash. Optional, and read only when
     * `struct_size` covers it (descriptors of the first layout end at `restore_state`): when
     * absent or NULL, `save_state` is used instead, so a plugin whose `save_state` suspends it
     * should provide this.
     * [main-thread]
     */
    hl_status_t (*checkpoint_state)(void *instance, void *out, hl_write_fn write);

    /**
     * \brief Runs the plugin's task `name` on `input_len` bytes at `input` and writes its result
     * through `write(out, ...)`: a pure function of its input (and of the host's blobs), run by a
     * process pool of workers (`hl_task_pool_new`), several at once on threads other than the
     * main one. Poll `ctx->cancelled(ctx->ctx)` at intervals and return CANCELLED when it is
     * non-zero; report `ctx->progress(ctx->ctx, fraction)`. On failure write a reason into
     * `error` and return non-OK (INVALID_ARG for a task this plugin does not have). Optional, and
     * read only when `struct_size` covers it.
     * [any-thread]
     */
    hl_status_t (*run_task)(void *instance, const char *name, const uint8_t *input,
                            size_t input_len, const hl_task_ctx_t *ctx, void *out,
                            hl_write_fn write, char *error, size_t error_len);
} hl_plugin_descriptor_t;



/** \brief The type of the exported `hostloop_plugin_entry`: returns the plugin's static
 * descriptor (never NULL). [main-thread] */
typedef const hl_plugin_descriptor_t *(*hl_plugin_entry_fn)(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_PLUGIN_H */
