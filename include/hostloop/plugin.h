/**
 * \file hostloop/plugin.h
 * \brief Loading tool plugins into a runtime, unloading them safely, and hot-reloading them
 * while the host keeps running. What a plugin exports is described in `hostloop_plugin.h`.
 *
 * All plugins share the runtime they are loaded into: their jobs run on its workers, their
 * main-thread work at its pumps, their messages reach its sink. At most one plugin of a given
 * name is loaded per runtime (`HL_STATUS_ALREADY_LOADED` otherwise): the dynamic loader would
 * hand a second load the same image, whose globals two instances would then share. To replace a
 * plugin's code, reload it.
 *
 * Loading a library runs its code: load only plugins you trust, as with any native plugin.
 *
 * \section plugin_platform Platform-specific behaviour
 *
 * A Rust plugin cannot be `dlclose`d safely on glibc (its standard library registers
 * thread-local destructors on the host's threads), so its descriptor sets
 * `HL_PLUGIN_FLAG_RETAIN_IMAGE` and unloading *retires* the image: it stays mapped, unused, and is
 * counted in `hl_plugin_stats_t::images_retired` (`images_retained` says how many stay mapped).
 * Loading the same build again — by content, so a file rebuilt to the same bytes counts — reuses
 * it, so a load/unload cycle costs only the retired instance's bookkeeping (under 10 KiB: 100
 * cycles of a Rust and a C plugin grew resident memory by about 0.8 MiB in the tests); a changed
 * file at that path, and a reload, is loaded from a fresh copy in the temporary directory
 * (removed once mapped), because the loader caches libraries by path.
 *
 * What a reload of a Rust plugin costs: a reload to a build not mapped before maps that build's
 * copy for good, about 0.5 MiB resident for a small plugin built in release mode (1–1.2 MiB for
 * the particles example). A reload to a build whose file is unchanged since a copy of it was
 * retired (alternating between two builds, going back to the previous one) reuses that copy
 * and costs nothing more: 50 reloads between two builds grew resident memory by under 0.5 MiB
 * in the tests. So the mapped cost is bounded by the number of distinct builds, not reloads. A
 * copy retired with stragglers is never reused.
 *
 * \section plugin_messages Talking to a simulation plugin
 *
 * A Rust plugin built on `hostloop::plugin::SimPlugin` — the example plugins `particles` and
 * `crowd` are — is driven with host events (`hl_runtime_post_event`) and answers through the
 * host sink (`hl_runtime_set_sink`). Below, `NAME` is its plugin name.
 *
 * Host events it reads:
 * - custom topic `NAME/configure`; its bytes are the settings text (UTF-8, not NUL-terminated):
 *   \code
 *   settings = ws* ( pair ( ws+ pair )* )? ws*
 *   pair     = key "=" value
 *   key      = one or more non-white-space characters other than "="
 *   value    = one or more non-white-space characters (the text after the first "=")
 *   \endcode
 *   where `ws` is white space (space, tab, newline). Keys not given keep their value; the
 *   pairs apply left to right, a key given twice takes its last value. Text that is not UTF-8,
 *   a word that is not `key=value`, an unknown key or a value out of range changes nothing and
 *   is reported on `NAME/error` as `NAME/configure refused: <reason>`. Keys of every such
 *   plugin: `delivery=latest|every` (latest: the host sees the newest frame, older ones are
 *   dropped; every: each frame, the simulation waits when 4 are undelivered), `rate=R` (steps
 *   per second, a non-negative finite decimal number, 0 = unlimited), `playing=0|1` and
 *   `lockstep=0|1` (`true` and `false` are accepted for both). `particles` adds `agents=N`
 *   (1..16000000) and `kernel=rust|cpp`; `crowd` adds `agents=N` (1..4000000) and the live
 *   settings `view=x0,y0,x1,y1` (the camera), `goal=x,y`, `threat=x,y` (decimal numbers) and
 *   `thin=k` (k >= 1: agents outside the view step every k-th step). A configure with a key
 *   that changes the state (`agents`, `kernel`) rebuilds the simulation from its deterministic
 *   start, on a worker (the running one plays on until the new one is ready); `delivery` and
 *   `lockstep` move the running state to a new driver at the step it reached; `rate`,
 *   `playing` and the live settings change the running simulation at its next step.
 * - custom topic `NAME/reset`: back to step 0.
 * - custom topic `NAME/advance`: its bytes are a step count N (ASCII decimal): N more steps,
 *   each frame published, then held while paused (a headless runner sends `playing=0` first,
 *   then runs of exact lengths). Text that is not a count is reported on `NAME/error`.
 * - `HL_EVENT_PLAYBACK_STARTED` / `HL_EVENT_PLAYBACK_STOPPED`: play / pause.
 * - `HL_EVENT_FRAME_CHANGED`: with `lockstep=1`, the simulation seeks to that frame.
 *
 * Sink messages it sends, on the main thread at a pump, per delivered frame in this order:
 * - `NAME/step`: `HL_PAYLOAD_BYTES`, 16 bytes: the frame's step (step 0 is the initial state)
 *   and the number of the configuration it belongs to, each a little-endian `uint64_t`. The
 *   number is 0 for the simulation the plugin loads with and grows by one with every
 *   `NAME/configure` it accepts (a refused one counts nothing; a hot reload keeps it). A host
 *   that configures the plugin waits for frames of a number above the last it saw: the
 *   particle count cannot tell a configure to the default's own size from the default.
 *   Frames of a simulation being rebuilt keep its old number until the new one replaces it;
 *   a change applied to the running simulation (`rate`, `playing`) renames its frames at once.
 *   Read the first 8 bytes for the step alone;
 * - then the plugin's frame: for `particles`, `particles/positions`, `HL_PAYLOAD_ARRAY` of
 *   `HL_ELEM_F32` with 3 components (x, y, z) per particle; for `crowd`, `crowd/positions`
 *   (`HL_ELEM_F32`, 2 components: x, y) and `crowd/modes` (`HL_ELEM_U8`, 1 component: 0 wander,
 *   1 seek, 2 flee).
 *
 * And at any time `NAME/error`: `HL_PAYLOAD_BYTES`, UTF-8 text (not NUL-terminated): a refused
 * configure, or a failed step (the simulation pauses). A simulation plays from the moment the
 * plugin loads: a host that configures it right after loading can see the default
 * simulation's first frame before the configured one's step 0.
 */
#ifndef HOSTLOOP_PLUGIN_API_H
#define HOSTLOOP_PLUGIN_API_H

#include "common.h"
#include "runtime.h"
/* The plugin ABI (descriptor, services, HL_PLUGIN_FLAG_*), which hosts read too. */
#include "../hostloop_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/** \brief A loaded plugin. Free with `hl_plugin_unload` (or `hl_runtime_free`, which unloads
 * every plugin of the runtime first). */
typedef struct hl_plugin_t hl_plugin_t;

/** \brief What `hl_plugin_info` reports. */
typedef struct hl_plugin_info_t {
    /** `sizeof(hl_plugin_info_t)`: set it before the call. */
    uint32_t struct_size;
    /** 0 after load, +1 per successful reload. */
    uint32_t generation;
    /** The descriptor's `HL_PLUGIN_FLAG_*`. */
    uint32_t flags;
    uint32_t reserved;
    /** NUL-terminated UTF-8, owned by the handle: valid until its next reload or unload. */
    const char *name;
    const char *version;
    /** The path the plugin was (re)loaded from. */
    const char *path;
    /** The plugin's work queued or running now. */
    uint64_t pending;
} hl_plugin_info_t;

/** \brief What `hl_plugin_unload` did. */
typedef struct hl_unload_report_t {
    /** `sizeof(hl_unload_report_t)`: set it before the call. */
    uint32_t struct_size;
    /** Non-zero if the image was retired (kept mapped) instead of unmapped. */
    uint32_t retired;
    /** The plugin's queued work dropped unrun (its `drop` called). */
    uint64_t dropped;
    /** Calls into the plugin still running at the deadline (then the status is TIMEOUT). */
    uint64_t stragglers;
    uint64_t elapsed_us;
} hl_unload_report_t;

/** \brief Counters of a runtime's plugin activity (`hl_runtime_plugin_stats`). */
typedef struct hl_plugin_stats_t {
    /** `sizeof(hl_plugin_stats_t)`: set it before the call. */
    uint32_t struct_size;
    uint32_t reserved;
    /** Plugins loaded now. */
    uint64_t loaded;
    /** Successful loads, reloads included. */
    uint64_t loads;
    uint64_t unloads;
    /** Successful hot reloads. */
    uint64_t reloads;
    /** Reloads that failed (the old build kept running). */
    uint64_t failed_reloads;
    /** Images kept mapped at unload (Rust plugins, or stragglers). */
    uint64_t images_retired;
    /** Images really unmapped (`dlclose`). */
    uint64_t images_closed;
    /** Calls into plugins still running at an unload's deadline. */
    uint64_t stragglers;
    /** Retired images that stay mapped in this process, all runtimes together: one per
     *  distinct build retired (a load or reload of a build mapped before, by content, reuses
     *  its image). Grows by one per load or reload of a build not seen before. */
    uint64_t images_retained;
} hl_plugin_stats_t;

/**
 * \brief Loads the plugin library at `path` into `rt` and calls its `load`.
 * \param path    NUL-terminated UTF-8 path of the shared library; not NULL.
 * \param plugin  receives the handle on success; not NULL. Free with `hl_plugin_unload`.
 * \return NULL_ARG; INVALID_HANDLE; INVALID_UTF8; WRONG_THREAD; SHUT_DOWN;
 * FILE_NOT_FOUND; NOT_A_LIBRARY (with the loader's message); NO_ENTRY_SYMBOL;
 * VERSION_MISMATCH (built for an older or newer plugin ABI); BAD_DESCRIPTOR (struct too small,
 * NULL name/load/unload); ALREADY_LOADED; PANIC (its `load` panicked); FAILED (its `load`
 * returned an error, whose text is in `hl_last_error()`); OS (a temporary copy failed). On
 * every failure nothing of the plugin stays loaded (a retired image stays mapped).
 * [main-thread] [not re-entrant]
 */
hl_status_t hl_plugin_load(hl_runtime_t *rt, const char *path, hl_plugin_t **plugin);

/**
 * \brief Where a plugin runs (`hl_plugin_load_options_t::isolation`).
 *
 * An isolated plugin is loaded by a `hostloop-worker` process with the same loader and
 * services: it cannot tell the difference. Host events are forwarded to it; its sink messages
 * reach this runtime's sink on the main thread at a pump, woken by the same wake fd, so the
 * host integration does not change. A crash of its native code (a null write, an abort, an
 * exit, a failed allocation, a hang past the heartbeat, a `kill`) ends only the worker. The
 * sink then receives, on the main thread, `HL_PAYLOAD_BYTES` UTF-8 text messages:
 * - `hostloop/plugin/crashed`: `plugin: NAME`, `pid: N`, `cause: ...` (e.g. `killed by signal
 *   11 (SIGSEGV)`, `exited with status 3`, `it did not answer for 5s (hung), so it was killed`),
 *   `then: restarting in ... (restart i of n)` or `then: staying down: ...`, and `last words:`
 *   followed by the end of the worker's stderr — one line each;
 * - `hostloop/plugin/restarted`: the new worker loaded the plugin and restored its last
 *   checkpoint (its `checkpoint_state`, else `save_state`, taken every
 *   `checkpoint_interval_ms`);
 * - `hostloop/plugin/down`: the restart limit was reached, or a restart failed; the plugin
 *   stays down, and `hl_plugin_process` says why.
 *
 * Every request pending when a worker is lost returns `HL_STATUS_WORKER`. `hl_plugin_unload`
 * and `hl_runtime_shutdown` end workers within their deadline: asked to quit, `SIGTERM` at
 * three quarters of it, `SIGKILL` at its end, and reaped. The host never gets a `SIGPIPE`
 * from a dead worker, and a worker exits by itself when its host goes away.
 */
enum {
    /** In the host's process (what `hl_plugin_load` does). */
    HL_ISOLATION_IN_PROCESS = 0,
    /** In a worker process of its own. */
    HL_ISOLATION_OWN_PROCESS = 1,
    /** In the worker process shared by every plugin loaded with the same `group` (fewer
     * processes; a crash ends, and restarts, the whole group). */
    HL_ISOLATION_SHARED_PROCESS = 2
};

/** \brief How `hl_plugin_load_ex` loads a plugin. Fill with `hl_plugin_load_options_init`. */
typedef struct hl_plugin_load_options_t {
    /** `sizeof(hl_plugin_load_options_t)`, set by `hl_plugin_load_options_init`. */
    uint32_t struct_size;
    /** `HL_ISOLATION_*` (default IN_PROCESS). */
    uint32_t isolation;
    /** SHARED_PROCESS: the group's name, NUL-terminated UTF-8, copied; not NULL or empty then.
     * Ignored otherwise. */
    const char *group;
    /** The worker program; NULL (default): `$HOSTLOOP_WORKER`, else `hostloop-worker` beside the
     * running executable or one directory up, else `hostloop-worker` on `PATH`. Copied. */
    const char *worker_program;
    /** A worker silent this long is declared hung and killed (default 5000; at least 10). */
    uint32_t heartbeat_ms;
    /** How often the plugin's state is checkpointed for a restart (default 1000; at least 1). */
    uint32_t checkpoint_interval_ms;
    /** Restarts of a lost worker before the plugin stays down (default 3; the count starts
     * again after a minute up). */
    uint32_t restart_limit;
    /** The wait before the first restart, doubled for each further one up to 30 s (default
     * 100). */
    uint32_t restart_backoff_ms;
    /** The worker's pool size; 0 (default): one per core. */
    uint32_t worker_threads;
    /** Non-zero (default 1): the worker's stderr is copied to the host's, as an in-process
     * plugin's would be. Its last 4 KiB are the crash report's last words either way. */
    uint32_t echo_stderr;
    /** How long load and reload wait for the worker's answer (default 30000). */
    uint32_t timeout_ms;
    /** Reserved, must be 0. */
    uint32_t reserved;
} hl_plugin_load_options_t;

/**
 * \brief Fills `options` with the defaults (and its `struct_size`).
 * \return NULL_ARG if `options` is NULL.
 * [any-thread]
 */
hl_status_t hl_plugin_load_options_init(hl_plugin_load_options_t *options);

/**
 * \brief Loads the plugin library at `path` into `rt` where `options` say: in this process
 * (exactly `hl_plugin_load`), in a worker process of its own, or in a named group's worker.
 * \param options  not NULL; from `hl_plugin_load_options_init`.
 * \return every status of `hl_plugin_load` (a load error in the worker is reported as it would
 * be in-process, with the worker's message); INVALID_ARG (options too small, an unknown
 * isolation, `reserved` not 0, SHARED_PROCESS without a group); INVALID_UTF8 (group or
 * worker_program); WORKER: the worker program could not be started (its path is in
 * `hl_last_error()`), or the worker was lost before the plugin loaded — a damaged or oversized
 * frame from it, a crash, a missed heartbeat. Nothing of a failed load stays behind (no process,
 * no fd).
 * [main-thread] [not re-entrant]
 */
hl_status_t hl_plugin_load_ex(hl_runtime_t *rt, const char *path,
                              const hl_plugin_load_options_t *options, hl_plugin_t **plugin);

/** \brief Where a plugin runs and how its worker fared (`hl_plugin_process`). */
typedef struct hl_plugin_process_t {
    /** `sizeof(hl_plugin_process_t)`: set it before the call. */
    uint32_t struct_size;
    /** `HL_ISOLATION_*`. */
    uint32_t isolation;
    /** The pid of the worker running it now; 0 in-process, while restarting, or down. */
    uint32_t pid;
    /** Restarts after a crash. */
    uint32_t restarts;
    /** Times its worker was lost (crashed, killed, hung, exited). */
    uint32_t crashes;
    /** Non-zero once it stays down; `down_reason` says why. */
    uint32_t down;
    /** Checkpoints of its state received (the latest is what a restart restores). */
    uint64_t checkpoints;
    /** Why its worker was last lost, e.g. `killed by signal 11 (SIGSEGV)`; NULL if never.
     * Owned by the handle: valid until the next `hl_plugin_process` on it or its unload. */
    const char *last_crash;
    /** Why it stays down; NULL unless `down`. Owned as `last_crash`. */
    const char *down_reason;
} hl_plugin_process_t;

/**
 * \brief Where a plugin runs, its worker's pid, and its crashes and restarts.
 * \param process  not NULL; `struct_size` set by the caller.
 * \return NULL_ARG; INVALID_HANDLE; INVALID_ARG (process too small); WRONG_THREAD; REENTRANT
 * (the plugin is being reloaded).
 * [main-thread]
 */
hl_status_t hl_plugin_process(const hl_plugin_t *plugin, hl_plugin_process_t *process);

/**
 * \brief Unloads a plugin and frees its handle: calls its `unload` (a Rust plugin's jobs see
 * cancellation and its simulations stop), drops its queued work unrun, waits up to
 * `deadline_ms` for calls into it that are running, then releases the library. No call into the
 * plugin can start after this returns.
 * \param report  NULL, or receives what was done (`struct_size` set by the caller).
 * \return OK; NULL_ARG; INVALID_HANDLE; WRONG_THREAD; INVALID_ARG (report too small);
 * TIMEOUT: calls were still running at the deadline — the handle is freed anyway and the image
 * retired (kept mapped) so they finish safely; for an isolated plugin, its worker did not quit
 * in time and was terminated or killed (`stragglers` is 1).
 * REENTRANT: called from inside the plugin's own code — the sink call of a message it emitted,
 * or any call it makes into the host from its callbacks — where the plugin can neither be
 * waited for nor have its `unload` run; nothing is done and the handle stays valid: unload it
 * after the callback returns (for example once `hl_runtime_pump` has returned).
 * [main-thread] [not re-entrant]
 */
hl_status_t hl_plugin_unload(hl_plugin_t *plugin, uint32_t deadline_ms,
                             hl_unload_report_t *report);

/**
 * \brief Hot-reloads a plugin from `path` (usually a rebuilt library) while the host runs.
 *
 * Loads the new build from a fresh copy; asks the running instance to `save_state` (which
 * suspends it); lets its work finish or cancels it, waiting up to `deadline_ms`; calls the new
 * build's `load` and `restore_state` with the bytes; then unloads the old build. The handle
 * stays the same; its generation grows by one.
 * \return OK; NULL_ARG; INVALID_HANDLE; INVALID_UTF8; WRONG_THREAD; REENTRANT (from inside the
 * plugin's callbacks); any status of `hl_plugin_load` for the new build (BAD_DESCRIPTOR also
 * when it is another plugin); FAILED or PANIC (save or restore failed); TIMEOUT (the old
 * build's work did not stop in time); WORKER (an isolated plugin's worker was lost, or is
 * restarting, before it answered). On every failure the old build keeps running, its state
 * handed back through its own `restore_state`. An isolated plugin is reloaded this way inside
 * its worker.
 * [main-thread] [not re-entrant]
 */
hl_status_t hl_plugin_reload(hl_plugin_t *plugin, const char *path, uint32_t deadline_ms);

/**
 * \brief Describes a loaded plugin.
 * \param info  not NULL; `struct_size` set by the caller.
 * \return NULL_ARG; INVALID_HANDLE; INVALID_ARG (info too small); WRONG_THREAD; REENTRANT
 * (the plugin is being reloaded: from inside its `save_state`/`restore_state`/`load`).
 * [main-thread]
 */
hl_status_t hl_plugin_info(const hl_plugin_t *plugin, hl_plugin_info_t *info);

/**
 * \brief Creates the shared read-only blob `name` in `rt` holding a copy of `len` bytes at
 * `data`: a sealed memfd (it can no longer change) that every plugin of the runtime — in this
 * process or in any worker — maps by name through its services table (`blob`), without a copy:
 * memory holds it once, however many processes read it. Blobs live until the runtime is freed.
 * \param name  NUL-terminated UTF-8, not empty; copied.
 * \return OK; NULL_ARG (name, or data with len > 0); INVALID_HANDLE; INVALID_UTF8; INVALID_ARG
 * (empty name, a blob of that name exists, or a plugin's runtime); FAILED (no memfd could be
 * made or filled: out of memory, no fd left, not Linux — the reason is in `hl_last_error()`);
 * SHUT_DOWN (the runtime is shut down, as every later call on it).
 * [any-thread]
 */
hl_status_t hl_blob_create(hl_runtime_t *rt, const char *name, const void *data, size_t len);

/**
 * \brief As `hl_blob_create`, with the bytes of the file at `path`, copied once into the sealed
 * memory (a mapping of the file itself would fault if it were truncated).
 * \return as `hl_blob_create`; FAILED also when the file cannot be read.
 * [any-thread]
 */
hl_status_t hl_blob_create_from_file(hl_runtime_t *rt, const char *name, const char *path);

/**
 * \brief Counters of a runtime's plugin activity (works after shutdown too).
 * \param stats  not NULL; `struct_size` set by the caller.
 * \return NULL_ARG; INVALID_HANDLE; INVALID_ARG (stats too small).
 * [any-thread]
 */
hl_status_t hl_runtime_plugin_stats(const hl_runtime_t *rt, hl_plugin_stats_t *stats);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_PLUGIN_API_H */
