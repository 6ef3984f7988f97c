/**
 * \file hostloop/common.h
 * \brief Versions, status codes, errors and the finalizer type shared by every hostloop header.
 *
 * Included by every other hostloop header; compiles on its own as C11 and C++17.
 */
#ifndef HOSTLOOP_COMMON_H
#define HOSTLOOP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** \name Versions
 * The library's semantic version, and the ABI version that structs and callbacks follow.
 * `HL_ABI_VERSION` changes only when a struct or signature changes incompatibly; structs that
 * may grow carry their own size instead. @{ */
#define HL_VERSION_MAJOR 0
#define HL_VERSION_MINOR 1
#define HL_VERSION_PATCH 0
/** `HL_VERSION_MAJOR << 16 | HL_VERSION_MINOR << 8 | HL_VERSION_PATCH`, as `hl_version()` returns. */
#define HL_VERSION ((HL_VERSION_MAJOR << 16) | (HL_VERSION_MINOR << 8) | HL_VERSION_PATCH)
#define HL_ABI_VERSION 1
/** @} */

/**
 * \brief The result of every hostloop function.
 *
 * Numbers are fixed and append-only. `HL_STATUS_OK` is 0; every other value is an error whose
 * message `hl_last_error()` returns on the same thread.
 */
typedef uint32_t hl_status_t;

enum {
    /** Success. */
    HL_STATUS_OK = 0,
    /** A required pointer argument was NULL. */
    HL_STATUS_NULL_ARG = 1,
    /** An argument was out of range, a struct size was wrong, or a view did not fit its data;
     * `hl_cache_open`: the file is not a frame cache. */
    HL_STATUS_INVALID_ARG = 2,
    /** A `[main-thread]` function was called from another thread. */
    HL_STATUS_WRONG_THREAD = 3,
    /** A call re-entered what is running it, and was refused rather than deadlock:
     * `hl_runtime_pump` or `hl_runtime_run_until` from inside a callback a pump is running or
     * from an `hl_until_fn`; `hl_plugin_reload` or `hl_plugin_info` on a plugin that is being
     * reloaded or unloaded (e.g. from inside its own callbacks); `hl_plugin_unload` from inside
     * the plugin's own callbacks (the sink call of its own message, say); a plugin's `emit`
     * from inside the sink. Nothing was done. */
    HL_STATUS_REENTRANT = 4,
    /** The host did not pump within the allowed time. */
    HL_STATUS_HOST_BUSY = 5,
    /** The runtime is shut down (or shutting down) and accepts no more work. */
    HL_STATUS_SHUT_DOWN = 6,
    /** A struct or caller was built for an ABI this library does not speak (`hl_cache_open`: a
     * cache file in a format it does not read). */
    HL_STATUS_VERSION_MISMATCH = 7,
    /** Code inside hostloop panicked; the message is in `hl_last_error()`. The runtime lives on. */
    HL_STATUS_PANIC = 8,
    /** A handle that is not (or no longer) valid: already freed, or never made by hostloop. */
    HL_STATUS_INVALID_HANDLE = 9,
    /** The job was cancelled. */
    HL_STATUS_CANCELLED = 10,
    /** A wait ran out of time. */
    HL_STATUS_TIMEOUT = 11,
    /** The job reported failure (its run callback returned non-zero); `hl_cache_frame`: the
     * frame's data does not match its checksum. */
    HL_STATUS_FAILED = 12,
    /** The job has not finished yet. */
    HL_STATUS_PENDING = 13,
    /** A string argument was not valid UTF-8. */
    HL_STATUS_INVALID_UTF8 = 14,
    /** The operating system refused a resource: a thread (no memory for its stack, or the
     * thread limit), a file descriptor, a file copy or a mapping; see `hl_last_error()`. */
    HL_STATUS_OS = 15,
    /** `hl_plugin_load`/`_reload`, `hl_cache_open`: no file at the path. */
    HL_STATUS_FILE_NOT_FOUND = 16,
    /** `hl_plugin_load`/`_reload`: the file is not a loadable shared library. */
    HL_STATUS_NOT_A_LIBRARY = 17,
    /** `hl_plugin_load`/`_reload`: the library does not export `hostloop_plugin_entry`. */
    HL_STATUS_NO_ENTRY_SYMBOL = 18,
    /** `hl_plugin_load`/`_reload`: the descriptor is too small, has NULL required fields or
     * non-UTF-8 strings, or a reload found a different plugin. */
    HL_STATUS_BAD_DESCRIPTOR = 19,
    /** `hl_plugin_load`: a plugin of that name is loaded in this runtime already. */
    HL_STATUS_ALREADY_LOADED = 20,
    /** An isolated plugin's worker process could not be started (`hl_last_error()` names the
     * program tried), or was lost — crashed, killed, hung, restarting, down — before it
     * answered (`hl_plugin_load_ex`, `hl_plugin_reload`). */
    HL_STATUS_WORKER = 21,
    /** There was no memory for a copy hostloop makes of the caller's data (`hl_runtime_emit`,
     * `hl_runtime_emit_array`, the bytes of `hl_runtime_post_event`), including a length no
     * allocation can have such as `SIZE_MAX`. Checked before the data is read; nothing was
     * done, and the process goes on. */
    HL_STATUS_OUT_OF_MEMORY = 22,
    /** The host has not pumped and the runtime's main-thread backlog is at its limit
     * (`hl_runtime_options_t::main_backlog_limit` items, or `main_backlog_bytes` bytes of
     * emitted payloads): `hl_runtime_post_event`, `hl_runtime_emit`, `hl_runtime_emit_array`
     * and `hl_job_spawn` queue nothing and say so, rather than let memory grow
     * without bound while the host is in a modal dialog. Retry after the host pumps (the
     * results of jobs already running are never refused: they arrive). */
    HL_STATUS_BACKLOG = 23
};

/**
 * \brief The message of the last failed hostloop call on this thread.
 *
 * \return a NUL-terminated UTF-8 string owned by hostloop, valid until the next hostloop call on
 * this thread; never NULL ("" when the last call succeeded).
 *
 * [any-thread]
 */
const char *hl_last_error(void);

/**
 * \brief The constant name of a status, e.g. "HL_STATUS_SHUT_DOWN" (never NULL; "HL_STATUS_UNKNOWN"
 * for numbers this library does not know). The string is static.
 *
 * [any-thread]
 */
const char *hl_status_name(hl_status_t status);

/** \brief The library's version, encoded like `HL_VERSION`. [any-thread] */
uint32_t hl_version(void);

/** \brief The ABI version the library speaks (compare with `HL_ABI_VERSION`). [any-thread] */
uint32_t hl_abi_version(void);

/**
 * \brief Releases a `user_data` pointer that was registered together with a callback.
 *
 * Every registration of `user_data` takes one (it may be NULL). hostloop calls it exactly once,
 * when the callback will never be called again — never while the callback is running (a
 * callback that replaces or removes itself is finalized after it returns). If the registering
 * call fails, the finalizer is not called and `user_data` stays the caller's. Unless stated
 * otherwise it may run on any thread.
 */
typedef void (*hl_finalizer_fn)(void *user_data);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_COMMON_H */
