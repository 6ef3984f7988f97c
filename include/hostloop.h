/**
 * \file hostloop.h
 * \brief hostloop: run heavy work off a host application's main thread and apply the results
 * back on it within a time budget.
 *
 * This umbrella header includes every hostloop header. Link with `-lhostloop` (or
 * `pkg-config --cflags --libs hostloop`).
 *
 * \section threads Threads
 *
 * The thread that calls `hl_runtime_new` is the runtime's **main thread** — in a DCC host, the
 * thread that may call the host's API. Every function and callback type below carries exactly
 * one tag:
 *
 * - `[main-thread]`: call it only on the main thread; elsewhere it returns
 *   `HL_STATUS_WRONG_THREAD` (callbacks so tagged are only ever called there);
 * - `[any-thread]`: any thread, concurrently;
 * - `[not re-entrant]` in addition: calling it from inside a callback it is running returns
 *   `HL_STATUS_REENTRANT` — never a deadlock.
 *
 * The host drives: `hl_runtime_pump` does bounded work and reports what is left. Background
 * code never calls host APIs; it sends work to the main thread. Waking is coalesced: many
 * results before one pump ring the doorbell (`hl_runtime_wake_fd`) once.
 *
 * \section ownership Ownership
 *
 * Each handle type has one `_new`/`_spawn`/`_open` (a farm run: `hl_farm_run`) and one
 * `_free`. Strings and buffers passed in are copied (or only read during the call) unless a
 * function says otherwise. Pointers handed to callbacks are borrowed for the duration of the
 * call. Every registration of a `user_data` pointer takes an `hl_finalizer_fn`, called exactly
 * once when hostloop drops the callback. `const hl_x_t *` parameters are read-only and safe to
 * use concurrently; `hl_x_t *` ones are exclusive unless tagged `[any-thread]`.
 *
 * \section errors Errors
 *
 * Every function returns an `hl_status_t`; `HL_STATUS_OK` (0) is success. Results come back in
 * trailing out-parameters, written only on success. On failure `hl_last_error()` returns a
 * message for the calling thread, valid until its next hostloop call. NULL pointers, stale or
 * freed handles, calls from the wrong thread, invalid UTF-8, wrongly sized structs and calls
 * after shutdown are reported as statuses, never undefined behaviour (the exceptions — memory
 * hostloop never handed out, or freed by someone else — are stated where they apply).
 *
 * \section versioning Versioning
 *
 * `HL_VERSION_*` give the library version this header describes; `hl_version()` the one
 * loaded. Structs that may grow start with `struct_size`, which the caller sets to the
 * `sizeof` it was compiled with; hostloop reads and writes no further. Status numbers, enum
 * values and struct prefixes are append-only. `HL_ABI_VERSION` changes only on an
 * incompatible change, and `hl_runtime_new` refuses a mismatch with
 * `HL_STATUS_VERSION_MISMATCH`.
 *
 * \section panics Panics and exceptions
 *
 * No Rust panic crosses this boundary: every exported function catches panics and returns
 * `HL_STATUS_PANIC` with the message in `hl_last_error()`, and every place where tool code runs
 * (jobs, main-thread items, sink and event callbacks) catches them too — an artist's unsaved
 * scene outlives any bug in a tool. In return, callbacks given to hostloop must not unwind
 * (C++ exceptions, `longjmp`) into it; `hostloop.hpp` catches exceptions in its trampolines.
 *
 * A caught panic prints nothing on the host's stderr, even with `RUST_BACKTRACE=1` in its
 * environment: its message goes into the status, the job's error or a `*_panicked` counter
 * only. Set `HOSTLOOP_PANIC_BACKTRACE=1` (read once, when the first runtime starts) to have
 * the Rust panic hook report caught panics too, for diagnostics.
 */
#ifndef HOSTLOOP_H
#define HOSTLOOP_H

#include "hostloop/common.h"
#include "hostloop/runtime.h"
#include "hostloop/sink.h"
#include "hostloop/event.h"
#include "hostloop/job.h"
#include "hostloop/plugin.h"
#include "hostloop/pool.h"
#include "hostloop/cache.h"
#include "hostloop/farm.h"

#endif /* HOSTLOOP_H */
