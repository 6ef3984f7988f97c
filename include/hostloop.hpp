/**
 * \file hostloop.hpp
 * \brief hostloop for C++17: header-only RAII classes over the C API in `hostloop.h`.
 *
 * This header adds no behaviour of its own: every class owns or borrows one C handle, every
 * method converts its arguments and calls one C function, and the rules of `hostloop.h`
 * (threads, ownership, shutdown) apply unchanged. It includes only `hostloop.h` and the standard library, needs C++17 with
 * exceptions enabled, and may be included any number of times in any number of translation
 * units (everything here is `inline` or a template).
 *
 * \code
 * hostloop::Runtime rt(hostloop::Options().workers(4).thread_name("maya-tools"));
 * rt.set_sink([](const hostloop::Message &m) { show(m.topic(), m.bytes(), m.bytes_len()); });
 * hostloop::Job job = rt.spawn(
 *     [](hostloop::JobContext &ctx) {
 *         for (int i = 0; i < 100; ++i) { ctx.check(); step(i); ctx.progress(i / 100.0f); }
 *         return 0;
 *     },
 *     [](hl_status_t status, int32_t code) { report(status, code); });
 * // In the host's idle callback, or when rt.wake_fd() is readable:
 * rt.pump(std::chrono::milliseconds(2));
 *
 * // A tool plugin (hostloop/plugin.h), unloaded when `tool` is destroyed:
 * hostloop::Plugin tool = hostloop::Plugin::load(rt, "/studio/tools/libretime.so");
 * tool.reload("/studio/tools/build/libretime.so");  // hot reload, state kept
 * \endcode
 *
 * \section hpp_errors Errors
 *
 * One policy: every failing call throws `hostloop::Error`, which carries the `hl_status_t` and
 * the `hl_last_error()` message (copied at once, so later hostloop calls cannot clobber it).
 * Constructors throw too. The few checks made here before calling C (an empty callable, a
 * negative duration, an array size that overflows) throw `Error` with `HL_STATUS_NULL_ARG` or
 * `HL_STATUS_INVALID_ARG` as the C call would. Nothing else is thrown apart from
 * `std::bad_alloc` when memory runs out. Destructors never throw; they ignore the status of `_free`
 * (and of `hl_plugin_unload`). Three outcomes are results, not errors: `hl_job_status`
 * (`Job::status()` returns PENDING/OK/FAILED/CANCELLED/PANIC as a value), a shutdown that hits its
 * deadline (`ShutdownReport::timed_out`) and a plugin unload that hits its deadline
 * (`UnloadReport::timed_out`), because the C API writes the report in those cases and the runtime
 * is shut down, or the plugin unloaded, either way.
 *
 * \section hpp_ownership Ownership
 *
 * `Runtime`, `Job`, `Plugin`, `Cache` and `FarmRun` are move-only owners of one handle each: the
 * destructor calls `hl_runtime_free` / `hl_job_free` / `hl_plugin_unload` / `hl_cache_free` /
 * `hl_farm_run_free`, a moved-from
 * object owns nothing (and its methods throw `HL_STATUS_NULL_ARG`). `capi()` lends the handle, `release()` gives it up. A
 * `Plugin` belongs to the runtime it was loaded into, which unloads it when shut down or freed;
 * the `Plugin` is then left with a dead handle (its methods throw `HL_STATUS_INVALID_HANDLE`, its
 * destructor does nothing), so it may outlive its `Runtime`. `JobContext` and
 * `Message` are borrowed views, valid only during the callback that receives them; they can not
 * be copied. A `CacheFrame` and its `CachePayload`s borrow the `Cache`'s map: they are valid
 * while the `Cache` lives.
 *
 * A callable given to `set_sink`, `set_request_pump`, `subscribe`, `spawn` or `FarmRun` is
 * moved into a heap object whose pointer is the C `user_data`; the C finalizer deletes it, so the callable
 * and everything it captures are destroyed exactly once, on the thread the C header names for
 * that finalizer (often *any* thread — keep captures thread-safe to destroy). If registration
 * fails, the wrapper deletes the object itself before throwing, except after
 * `HL_STATUS_PANIC`, when the library may already have finalized it: then it is leaked rather
 * than risk a double delete.
 *
 * \section hpp_threads Threads
 *
 * Every member repeats the thread tag of the C function it calls. The rule for `Runtime`: its
 * `const` methods are exactly the `[any-thread]` ones, so a `const Runtime &` can be handed to
 * worker threads and exposes only what they may call; its non-const methods are `[main-thread]`
 * (and move, `release()` and destruction need exclusive access as well). Every `Job` method is
 * `[any-thread]`; `JobContext` is used on the job's worker during `run`. Every `Plugin` method is
 * `[main-thread]`, `const` ones included, and so are its destruction and move assignment (they
 * unload). Every `Cache` method is `[any-thread]`; its `const` ones may run concurrently.
 * `FarmRun`'s constructor is `[main-thread]` (it takes a non-const `Runtime &`), its methods
 * `[any-thread]`; `FarmSpec` is a plain value.
 *
 * \section hpp_exceptions Exceptions in callbacks
 *
 * C callbacks must never unwind into hostloop, so every trampoline here catches every exception
 * thrown by the callable it runs and swallows it. Each swallowed exception is counted
 * (`swallowed_exceptions()`) and passed to the handler installed with
 * `set_exception_handler()`, if any, on the thread where it was caught. A job's `run` that
 * throws returns `uncaught_exception_code` (its `done` sees `HL_STATUS_FAILED` with that code),
 * except that `hostloop::Error` with `HL_STATUS_CANCELLED` — what `JobContext::check()` throws —
 * ends the job quietly as cancelled.
 */
#ifndef HOSTLOOP_HPP
#define HOSTLOOP_HPP

#if __cplusplus < 201703L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 201703L)
#error "hostloop.hpp needs C++17"
#endif

#include "hostloop.h"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace hostloop {

/// \name Library information
/// @{

/** \brief The constant name of a status, e.g. "HL_STATUS_SHUT_DOWN" (static string). [any-thread] */
[[nodiscard]] inline const char *status_name(hl_status_t status) noexcept {
    return hl_status_name(status);
}

/** \brief The loaded library's version, encoded like `HL_VERSION`. [any-thread] */
[[nodiscard]] inline uint32_t version() noexcept { return hl_version(); }

/** \brief The ABI version the loaded library speaks (compare with `HL_ABI_VERSION`). [any-thread] */
[[nodiscard]] inline uint32_t abi_version() noexcept { return hl_abi_version(); }

/// @}

/**
 * \brief What every failing call in this header throws: a status and its message.
 *
 * `what()` is "HL_STATUS_NAME: message". Copying never throws.
 */
class Error : public std::runtime_error {
public:
    /** \brief An error with `status` and `message` (usually a copy of `hl_last_error()`).
     *  Throws `std::bad_alloc` only. [any-thread] */
    Error(hl_status_t status, const std::string &message) : Error(status, known(hl_status_name(status)), message) {}

    /** \brief The `hl_status_t` of the failed call (never `HL_STATUS_OK`). [any-thread] */
    [[nodiscard]] hl_status_t status() const noexcept { return status_; }

    /** \brief The message without the status name; "" when the library gave none. Owned by
     *  this object. [any-thread] */
    [[nodiscard]] const char *message() const noexcept { return what() + message_offset_; }

private:
    Error(hl_status_t status, const char *name, const std::string &message)
        : std::runtime_error(compose(name, message)), status_(status),
          message_offset_(std::strlen(name) + (message.empty() ? 0 : 2)) {}

    static const char *known(const char *name) noexcept { return name != nullptr ? name : "HL_STATUS_UNKNOWN"; }

    static std::string compose(const char *name, const std::string &message) {
        std::string s = name;
        if (!message.empty()) {
            s += ": ";
            s += message;
        }
        return s;
    }

    hl_status_t status_;
    std::size_t message_offset_;
};

/**
 * \brief The `code` a job's `done` receives (with `HL_STATUS_FAILED`) when its `run` callable
 * threw something other than a cancellation.
 */
inline constexpr int32_t uncaught_exception_code = std::numeric_limits<int32_t>::min();

/**
 * \brief Receives each exception a trampoline swallowed: the exception and the kind of callback
 * it came from ("sink", "request_pump", "event", "job run", "job done"). Called on the thread
 * where the callback ran; anything it throws is swallowed as well.
 */
using ExceptionHandler = void (*)(std::exception_ptr error, const char *callback);

namespace detail {

inline std::atomic<ExceptionHandler> exception_handler{nullptr};
inline std::atomic<uint64_t> swallowed{0};

/** Call only inside a `catch` block. */
inline void swallow_current_exception(const char *callback) noexcept {
    swallowed.fetch_add(1, std::memory_order_relaxed);
    if (ExceptionHandler handler = exception_handler.load(std::memory_order_acquire)) {
        try {
            handler(std::current_exception(), callback);
        } catch (...) {
            // The handler itself failed; there is nobody left to tell.
        }
    }
}

/** The error for a failed call; reads `hl_last_error()` before anything else can clear it. */
[[nodiscard]] inline Error last_error(hl_status_t status) {
    const char *message = hl_last_error();
    return Error(status, message != nullptr ? std::string(message) : std::string());
}

inline void check(hl_status_t status) {
    if (status != HL_STATUS_OK) {
        throw last_error(status);
    }
}

/**
 * Hands `box` to the library after a registration call returned `status`: on success the
 * library owns it (its finalizer deletes it); on failure it is deleted here, except after a
 * panic, where the library may already have run the finalizer.
 */
template <typename T> void adopt_or_throw(std::unique_ptr<T> &box, hl_status_t status) {
    if (status == HL_STATUS_OK) {
        box.release();
        return;
    }
    Error error = last_error(status);  // before the box's destructor can make hostloop calls
    if (status == HL_STATUS_PANIC) {
        box.release();
    }
    throw error;
}

template <typename T> void finalize(void *user_data) noexcept { delete static_cast<T *>(user_data); }

template <typename Rep, typename Period>
[[nodiscard]] uint64_t to_u64(std::chrono::duration<Rep, Period> d, const char *what) {
    if (d.count() < 0) {
        throw Error(HL_STATUS_INVALID_ARG, std::string(what) + " must not be negative");
    }
    return static_cast<uint64_t>(d.count());
}

template <typename Rep, typename Period>
[[nodiscard]] uint32_t to_u32(std::chrono::duration<Rep, Period> d, const char *what) {
    const uint64_t v = to_u64(d, what);
    return v > std::numeric_limits<uint32_t>::max() ? std::numeric_limits<uint32_t>::max()
                                                    : static_cast<uint32_t>(v);
}

template <typename T> struct elem_type;
template <> struct elem_type<uint8_t> : std::integral_constant<uint32_t, HL_ELEM_U8> {};
template <> struct elem_type<int32_t> : std::integral_constant<uint32_t, HL_ELEM_I32> {};
template <> struct elem_type<uint32_t> : std::integral_constant<uint32_t, HL_ELEM_U32> {};
template <> struct elem_type<int64_t> : std::integral_constant<uint32_t, HL_ELEM_I64> {};
template <> struct elem_type<uint64_t> : std::integral_constant<uint32_t, HL_ELEM_U64> {};
template <> struct elem_type<float> : std::integral_constant<uint32_t, HL_ELEM_F32> {};
template <> struct elem_type<double> : std::integral_constant<uint32_t, HL_ELEM_F64> {};

}  // namespace detail

/**
 * \brief Installs the handler for exceptions swallowed by trampolines (NULL removes it) and
 * returns the previous one. The handler is process-wide (per loaded copy of this header's
 * code). [any-thread]
 */
inline ExceptionHandler set_exception_handler(ExceptionHandler handler) noexcept {
    return detail::exception_handler.exchange(handler, std::memory_order_acq_rel);
}

/** \brief How many exceptions trampolines have swallowed so far, process-wide. [any-thread] */
[[nodiscard]] inline uint64_t swallowed_exceptions() noexcept {
    return detail::swallowed.load(std::memory_order_relaxed);
}

/**
 * \brief A string argument that must reach C NUL-terminated: borrowed from `const char *` and
 * `std::string`, copied from `std::string_view` (which need not be terminated).
 *
 * Only meant as a parameter type; it borrows, so it must not outlive the argument.
 */
class CStr {
public:
    /** \brief Borrows `s` (NULL is passed on, and the C call reports `HL_STATUS_NULL_ARG`). */
    CStr(const char *s) noexcept : borrowed_(s) {}  // NOLINT(google-explicit-constructor)
    /** \brief Borrows `s`. */
    CStr(const std::string &s) noexcept : borrowed_(s.c_str()) {}  // NOLINT(google-explicit-constructor)
    /** \brief Copies `s`. Throws `std::bad_alloc`. */
    CStr(std::string_view s) : owned_(s), owns_(true) {}  // NOLINT(google-explicit-constructor)

    /** \brief The NUL-terminated string (NULL if constructed from NULL). */
    [[nodiscard]] const char *c_str() const noexcept { return owns_ ? owned_.c_str() : borrowed_; }

private:
    const char *borrowed_ = nullptr;
    std::string owned_;
    bool owns_ = false;
};

/** \brief `HL_PRIORITY_*`: workers take higher priorities first (CPU lane only). */
enum class Priority : uint32_t {
    high = HL_PRIORITY_HIGH,
    normal = HL_PRIORITY_NORMAL,
    low = HL_PRIORITY_LOW,
    background = HL_PRIORITY_BACKGROUND,
};

/** \brief `HL_LANE_*`: where a job runs. */
enum class Lane : uint32_t {
    /** The CPU pool. */
    cpu = HL_LANE_CPU,
    /** The IO lane, for blocking work that must not take a CPU worker. */
    io = HL_LANE_IO,
};

/** \brief `HL_EVENT_*`, plus `any` (0) to subscribe to every kind. */
enum class EventKind : uint32_t {
    any = 0,
    frame_changed = HL_EVENT_FRAME_CHANGED,
    selection_changed = HL_EVENT_SELECTION_CHANGED,
    scene_opened = HL_EVENT_SCENE_OPENED,
    scene_saved = HL_EVENT_SCENE_SAVED,
    playback_started = HL_EVENT_PLAYBACK_STARTED,
    playback_stopped = HL_EVENT_PLAYBACK_STOPPED,
    shutdown_requested = HL_EVENT_SHUTDOWN_REQUESTED,
    custom = HL_EVENT_CUSTOM,
};

/**
 * \brief Options for a `Runtime`: an `hl_runtime_options_t` filled by `hl_runtime_options_init`,
 * with chainable setters. A value type; copy it freely.
 */
class Options {
public:
    /** \brief The library's defaults. Throws `Error` if `hl_runtime_options_init` fails (it does
     *  not for a valid pointer). [any-thread] */
    Options() : raw_() { detail::check(hl_runtime_options_init(&raw_)); }

    /** \brief CPU worker threads; 0 = available cores - 1 (at least 1). Pass the host's thread
     *  setting here. */
    Options &workers(uint32_t n) noexcept {
        raw_.workers = n;
        return *this;
    }
    /** \brief Threads of the IO lane; 0 = 2. */
    Options &io_threads(uint32_t n) noexcept {
        raw_.io_threads = n;
        return *this;
    }
    /** \brief The budget `Runtime::pump()` uses when given 0 (default 2 ms). Throws `Error`
     *  (INVALID_ARG) if negative; clamped to `UINT32_MAX` µs. */
    Options &default_budget(std::chrono::microseconds budget) {
        raw_.default_budget_us = detail::to_u32(budget, "default_budget");
        return *this;
    }
    /** \brief How long a background call-on-main waits for a pump before HOST_BUSY (default
     *  2 s). Throws `Error` (INVALID_ARG) if negative; clamped to `UINT32_MAX` ms. */
    Options &call_timeout(std::chrono::milliseconds timeout) {
        raw_.call_timeout_ms = detail::to_u32(timeout, "call_timeout");
        return *this;
    }
    /** \brief The shutdown deadline the `Runtime` destructor uses if `shutdown()` was not
     *  called (default 2 s). Throws `Error` (INVALID_ARG) if negative; clamped to `UINT32_MAX` ms. */
    Options &free_deadline(std::chrono::milliseconds deadline) {
        raw_.free_deadline_ms = detail::to_u32(deadline, "free_deadline");
        return *this;
    }
    /** \brief The most main-thread items that may wait for a pump (0 = 1,048,576): past it,
     *  posts, events, emits from other threads and spawns throw `Error` with
     *  HL_STATUS_BACKLOG while the host does not pump (see
     *  `hl_runtime_options_t::main_backlog_limit`). */
    Options &main_backlog_limit(uint32_t items) noexcept {
        raw_.main_backlog_limit = items;
        return *this;
    }
    /** \brief Stack size of runtime threads in bytes; 0 = the platform's default. */
    Options &stack_size(uint64_t bytes) noexcept {
        raw_.stack_size = bytes;
        return *this;
    }
    /** \brief Prefix of thread names (`<prefix>-worker-<i>`), UTF-8; copied into this object. */
    Options &thread_name(std::string prefix) {
        thread_name_ = std::move(prefix);
        has_thread_name_ = true;
        return *this;
    }

    /** \brief The C struct. Its `thread_name` points into this object: valid while it lives and
     *  is not modified. */
    [[nodiscard]] hl_runtime_options_t capi() const noexcept {
        hl_runtime_options_t options = raw_;
        options.thread_name = has_thread_name_ ? thread_name_.c_str() : nullptr;
        return options;
    }

private:
    hl_runtime_options_t raw_;
    std::string thread_name_;
    bool has_thread_name_ = false;
};

/** \brief What one `Runtime::pump()` did (`hl_pump_report_t`). */
struct PumpReport {
    /** Main-thread items run. */
    uint64_t ran = 0;
    /** Items still queued (the doorbell stays readable while this is > 0). */
    uint64_t remaining = 0;
    /** Time the pump took. */
    std::chrono::microseconds elapsed{0};
    /** How far past the budget it ran (0 within budget). */
    std::chrono::microseconds overrun{0};
};

/** \brief What one `Runtime::run_until()` did (`hl_run_report_t`). */
struct RunReport {
    /** True when the condition held; false when the timeout passed first. */
    bool finished = false;
    /** Pumps run. */
    uint64_t pumps = 0;
    /** Main-thread items those pumps ran. */
    uint64_t ran = 0;
    /** Wall-clock time of the whole run. */
    std::chrono::microseconds elapsed{0};
};

/** \brief What `Runtime::shutdown()` did (`hl_shutdown_report_t`). */
struct ShutdownReport {
    /** Runtime threads that exited and were joined. */
    uint32_t threads_joined = 0;
    /** Queued jobs cancelled without running. */
    uint64_t cancelled_queued = 0;
    /** Jobs that were running when shutdown began (asked to cancel). */
    uint64_t cancelled_running = 0;
    /** Jobs still running at the deadline (their threads are detached, not joined). */
    uint64_t stragglers = 0;
    /** Main-thread items dropped without running. */
    uint64_t main_items_dropped = 0;
    /** How long shutdown took. */
    std::chrono::microseconds elapsed{0};
    /** True when jobs were still running at the deadline (the C call returned TIMEOUT). */
    bool timed_out = false;
    /** When `timed_out`: the library's message naming the stragglers and their age. */
    std::string timeout_message;
};

/** \brief The runtime's counters: the C struct, with `struct_size` set. */
using Stats = hl_stats_t;

/** \brief The main-thread backlog (`hl_runtime_backlog`): items waiting for a pump, the limit
 *  (`Options::main_backlog_limit`), and the calls refused with HL_STATUS_BACKLOG so far. */
struct Backlog {
    uint64_t queued = 0;
    uint64_t limit = 0;
    uint64_t refused = 0;
};

/** \brief What `Plugin::unload()` did (`hl_unload_report_t`). */
struct UnloadReport {
    /** True when the image was retired (kept mapped, unused) instead of unmapped: always for a
     *  plugin with `HL_PLUGIN_FLAG_RETAIN_IMAGE` (every Rust plugin), and after stragglers. */
    bool retired = false;
    /** The plugin's queued work dropped unrun. */
    uint64_t dropped = 0;
    /** Calls into the plugin still running at the deadline. */
    uint64_t stragglers = 0;
    /** How long the unload took. */
    std::chrono::microseconds elapsed{0};
    /** True when calls were still running at the deadline (the C call returned TIMEOUT): the
     *  plugin is unloaded anyway and its image retired, so they finish safely. */
    bool timed_out = false;
    /** When `timed_out`: the library's message. */
    std::string timeout_message;
};

/** \brief A loaded plugin's description (`hl_plugin_info_t`), its strings copied: it stays valid
 *  after the plugin is reloaded or unloaded. */
struct PluginInfo {
    /** The plugin's name, unique per runtime (UTF-8). */
    std::string name;
    /** The plugin's own version (UTF-8). */
    std::string version;
    /** The path it was last (re)loaded from, as given to `Plugin::load` or `Plugin::reload`. */
    std::string path;
    /** 0 after load, +1 per successful reload. */
    uint32_t generation = 0;
    /** The descriptor's `HL_PLUGIN_FLAG_*`. */
    uint32_t flags = 0;
    /** The plugin's work queued or running at the time of the call. */
    uint64_t pending = 0;

    /** \brief True when `flags` has `HL_PLUGIN_FLAG_RETAIN_IMAGE` (every Rust plugin): unloading
     *  retires the image instead of unmapping it. */
    [[nodiscard]] bool retains_image() const noexcept { return (flags & HL_PLUGIN_FLAG_RETAIN_IMAGE) != 0; }
};

/**
 * \brief How `Plugin::load` loads a plugin (`hl_plugin_load_options_t`): in-process, or
 * isolated in a worker process (see `HL_ISOLATION_*` in `hostloop/plugin.h`). Starts from
 * `hl_plugin_load_options_init`'s defaults; the strings are copied at the load.
 */
class LoadOptions {
public:
    LoadOptions() { detail::check(hl_plugin_load_options_init(&raw_)); }

    /** \brief A worker process of its own. */
    LoadOptions &own_process() {
        raw_.isolation = HL_ISOLATION_OWN_PROCESS;
        return *this;
    }
    /** \brief The worker process shared by every plugin loaded with the same `group`. */
    LoadOptions &shared_process(std::string group) {
        group_ = std::move(group);
        raw_.isolation = HL_ISOLATION_SHARED_PROCESS;
        return *this;
    }
    /** \brief In the host's process (the default). */
    LoadOptions &in_process() {
        raw_.isolation = HL_ISOLATION_IN_PROCESS;
        return *this;
    }
    /** \brief The worker program (default: `$HOSTLOOP_WORKER`, beside the executable, `PATH`). */
    LoadOptions &worker_program(std::string path) {
        program_ = std::move(path);
        return *this;
    }
    /** \brief How long a silent worker lives before it is declared hung and killed. */
    LoadOptions &heartbeat(std::chrono::milliseconds ms) {
        raw_.heartbeat_ms = detail::to_u32(ms, "heartbeat");
        return *this;
    }
    /** \brief How often the plugin's state is checkpointed for a restart. */
    LoadOptions &checkpoint_interval(std::chrono::milliseconds ms) {
        raw_.checkpoint_interval_ms = detail::to_u32(ms, "checkpoint_interval");
        return *this;
    }
    /** \brief Restarts of a lost worker before the plugin stays down. */
    LoadOptions &restart_limit(uint32_t n) {
        raw_.restart_limit = n;
        return *this;
    }
    /** \brief Whether the worker's stderr is copied to the host's (default true). */
    LoadOptions &echo_stderr(bool echo) {
        raw_.echo_stderr = echo ? 1u : 0u;
        return *this;
    }

    /** \brief The C struct, its strings pointing into this object (valid while it lives). */
    [[nodiscard]] hl_plugin_load_options_t capi() const {
        hl_plugin_load_options_t o = raw_;
        o.group = raw_.isolation == HL_ISOLATION_SHARED_PROCESS ? group_.c_str() : nullptr;
        o.worker_program = program_.empty() ? nullptr : program_.c_str();
        return o;
    }

private:
    hl_plugin_load_options_t raw_{};
    std::string group_;
    std::string program_;
};

/** \brief Where a plugin runs and how its worker fared (`hl_plugin_process`); strings copied. */
struct PluginProcess {
    /** `HL_ISOLATION_*`. */
    uint32_t isolation = HL_ISOLATION_IN_PROCESS;
    /** The worker's pid; 0 in-process, while restarting, or down. */
    uint32_t pid = 0;
    uint32_t restarts = 0;
    uint32_t crashes = 0;
    uint64_t checkpoints = 0;
    /** Why its worker was last lost; empty if never. */
    std::string last_crash;
    /** Set when it stays down: why. */
    bool down = false;
    std::string down_reason;
};

/** \brief A runtime's plugin counters (`hl_runtime_plugin_stats`): the C struct, with
 *  `struct_size` set. */
using PluginStats = hl_plugin_stats_t;

/**
 * \brief A sink payload kept past its call (`hl_message_lend`): the message's `bytes()` or
 * `array().data` stay valid, at the same addresses, until the lease is destroyed or reset — on
 * any thread. Move-only; empty when the payload could not be lent.
 */
class Lease {
public:
    /** \brief An empty lease. */
    Lease() noexcept = default;
    /** \brief Takes ownership of `raw` (from `hl_message_lend`; NULL makes an empty lease). */
    explicit Lease(hl_lease_t *raw) noexcept : raw_(raw) {}
    /** \brief Moves the lease; `other` becomes empty. */
    Lease(Lease &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    /** \brief Releases this lease and takes `other`'s. */
    Lease &operator=(Lease &&other) noexcept {
        if (this != &other) {
            reset();
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }
    Lease(const Lease &) = delete;
    Lease &operator=(const Lease &) = delete;
    /** \brief Releases the payload. */
    ~Lease() { reset(); }
    /** \brief True when it holds a payload. */
    explicit operator bool() const noexcept { return raw_ != nullptr; }
    /** \brief Releases the payload now (idempotent). [any-thread] */
    void reset() noexcept { hl_lease_release(std::exchange(raw_, nullptr)); }

private:
    hl_lease_t *raw_ = nullptr;
};

/**
 * \brief One message to the sink, borrowed: valid only during the sink callback (copy what you
 * keep, or `lend()` it). Wraps `const hl_message_t &`.
 */
class Message {
public:
    /** \brief Views `raw` (borrowed). */
    explicit Message(const hl_message_t &raw) noexcept : raw_(raw) {}
    /** \brief Not copyable: the message is borrowed, a copy would outlive it. */
    Message(const Message &) = delete;
    /** \brief Not copyable (see the copy constructor). */
    Message &operator=(const Message &) = delete;

    /** \brief The topic, UTF-8 (no NUL inside the view; `capi().topic` is NUL-terminated). */
    [[nodiscard]] std::string_view topic() const noexcept {
        return raw_.topic != nullptr ? std::string_view(raw_.topic, raw_.topic_len) : std::string_view();
    }
    /** \brief True for an `HL_PAYLOAD_BYTES` message. */
    [[nodiscard]] bool is_bytes() const noexcept { return raw_.payload_kind == HL_PAYLOAD_BYTES; }
    /** \brief True for an `HL_PAYLOAD_ARRAY` message. */
    [[nodiscard]] bool is_array() const noexcept { return raw_.payload_kind == HL_PAYLOAD_ARRAY; }
    /** \brief The bytes of an `HL_PAYLOAD_BYTES` message (NULL when empty or not bytes). */
    [[nodiscard]] const uint8_t *bytes() const noexcept { return is_bytes() ? raw_.bytes : nullptr; }
    /** \brief The number of bytes (0 when not a bytes message). */
    [[nodiscard]] std::size_t bytes_len() const noexcept { return is_bytes() ? raw_.bytes_len : 0; }
    /** \brief The typed array of an `HL_PAYLOAD_ARRAY` message (packed: `stride` equals
     *  `components` times the element size). Meaningless unless `is_array()`. */
    [[nodiscard]] const hl_array_view_t &array() const noexcept { return raw_.array; }
    /**
     * \brief The array's elements as `T` (one of `uint8_t`, `int32_t`, `uint32_t`, `int64_t`,
     * `uint64_t`, `float`, `double`), or NULL when this is not an array of `T`. There are
     * `array().count * array().components` of them.
     */
    template <typename T> [[nodiscard]] const T *array_data() const noexcept {
        return is_array() && raw_.array.elem_type == detail::elem_type<T>::value
                   ? static_cast<const T *>(raw_.array.data)
                   : nullptr;
    }
    /**
     * \brief Keeps the payload past the sink call, without a copy (`hl_message_lend`): empty
     * when it is only borrowed for the call. Call it inside the sink only.
     */
    [[nodiscard]] Lease lend() const noexcept { return Lease(hl_message_lend(&raw_)); }
    /** \brief The C message (borrowed). */
    [[nodiscard]] const hl_message_t &capi() const noexcept { return raw_; }

private:
    const hl_message_t &raw_;
};

/**
 * \brief What a running job sees: wraps the borrowed `hl_job_ctx_t *`, valid only during the
 * job's `run` callable. Not copyable.
 */
class JobContext {
public:
    /** \brief Views `ctx` (borrowed; not freed). */
    explicit JobContext(hl_job_ctx_t *ctx) noexcept : ctx_(ctx) {}
    /** \brief Not copyable: the context is borrowed, a copy would outlive it. */
    JobContext(const JobContext &) = delete;
    /** \brief Not copyable (see the copy constructor). */
    JobContext &operator=(const JobContext &) = delete;

    /** \brief True once the job was cancelled (directly or by shutdown): return soon.
     *  Throws `Error` only for a NULL context. [any-thread] (the job's worker) */
    [[nodiscard]] bool cancelled() const {
        const hl_status_t status = hl_job_ctx_check(ctx_);
        if (status == HL_STATUS_CANCELLED) {
            return true;
        }
        detail::check(status);
        return false;
    }

    /** \brief Throws `Error` with `HL_STATUS_CANCELLED` once the job was cancelled; letting it
     *  escape `run` ends the job as cancelled. Also throws `Error` (NULL_ARG) for a NULL
     *  context. [any-thread] (the job's worker) */
    void check() const { detail::check(hl_job_ctx_check(ctx_)); }

    /** \brief Reports progress, clamped to 0..1; cheap. Throws `Error` only for a NULL context.
     *  [any-thread] (the job's worker) */
    void progress(float fraction) { detail::check(hl_job_ctx_progress(ctx_, fraction)); }

    /** \brief The C context (borrowed). */
    [[nodiscard]] hl_job_ctx_t *capi() const noexcept { return ctx_; }

private:
    hl_job_ctx_t *ctx_;
};

/**
 * \brief A job handle: move-only owner of an `hl_job_t *`. Destroying it frees the handle
 * (`hl_job_free`) but does **not** cancel the job; call `cancel()` first to stop it.
 */
class Job {
public:
    /** \brief No job (`operator bool` is false). */
    Job() noexcept = default;
    /** \brief Takes ownership of `raw` (from `hl_job_spawn`). */
    explicit Job(hl_job_t *raw) noexcept : raw_(raw) {}
    /** \brief Move-only: one owner per handle. */
    Job(const Job &) = delete;
    /** \brief Move-only: one owner per handle. */
    Job &operator=(const Job &) = delete;
    /** \brief Takes `other`'s handle; `other` owns nothing afterwards. */
    Job(Job &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    /** \brief Frees this handle (not the job), then takes `other`'s. */
    Job &operator=(Job &&other) noexcept {
        if (this != &other) {
            reset();
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }
    /** \brief Frees the handle with `hl_job_free`; the job goes on. Never throws. [any-thread] */
    ~Job() { reset(); }

    /** \brief Asks the job to stop: it never starts if still queued; a running job sees
     *  `JobContext::check()` throw. Throws `Error` (NULL_ARG, INVALID_HANDLE). [any-thread] */
    void cancel() const { detail::check(hl_job_cancel(raw_)); }

    /** \brief The latest progress, 0 to 1. Throws `Error` (NULL_ARG, INVALID_HANDLE).
     *  [any-thread] */
    [[nodiscard]] float progress() const {
        float fraction = 0.0f;
        detail::check(hl_job_progress(raw_, &fraction));
        return fraction;
    }

    /** \brief `HL_STATUS_PENDING` while queued or running, then the outcome (OK, FAILED,
     *  CANCELLED, PANIC) — a value, not thrown. Throws `Error` (NULL_ARG, INVALID_HANDLE).
     *  [any-thread] */
    [[nodiscard]] hl_status_t status() const {
        hl_status_t status = HL_STATUS_PENDING;
        detail::check(hl_job_status(raw_, &status));
        return status;
    }

    /** \brief True once `status()` is no longer PENDING. Throws like `status()`. [any-thread] */
    [[nodiscard]] bool finished() const { return status() != HL_STATUS_PENDING; }

    /** \brief True when this object owns a handle. */
    explicit operator bool() const noexcept { return raw_ != nullptr; }
    /** \brief The handle, still owned by this object (NULL if none). */
    [[nodiscard]] hl_job_t *capi() const noexcept { return raw_; }
    /** \brief Gives up the handle: the caller frees it with `hl_job_free`. */
    [[nodiscard]] hl_job_t *release() noexcept { return std::exchange(raw_, nullptr); }

private:
    void reset() noexcept {
        if (raw_ != nullptr) {
            (void)hl_job_free(raw_);
            raw_ = nullptr;
        }
    }

    hl_job_t *raw_ = nullptr;
};

/** \brief A job's progress, 0 to 1, coalesced: at most once per pump with the newest value,
 *  never after its `done`. [main-thread] */
using JobProgress = std::function<void(float fraction)>;

/**
 * \brief How to run a job: priority (CPU lane only), lane, a name shown in shutdown reports and
 * a main-thread progress callable, e.g. `SpawnOptions{Priority::low, Lane::io, "load cache"}`,
 * `SpawnOptions{Priority::high}`, or any one of them by name:
 * `SpawnOptions{}.with_name("load cache").with_progress([&](float f) { bar.set(f); })`.
 */
struct SpawnOptions {
    /** \brief Sets every field; each one may be left out from the right. Implicit, so a bare
     *  `Priority` converts: `rt.spawn(run, {}, Priority::low)`. */
    SpawnOptions(Priority job_priority = Priority::normal, Lane job_lane = Lane::cpu,  // NOLINT(google-explicit-constructor)
                 std::string job_name = {})
        : priority(job_priority), lane(job_lane), name(std::move(job_name)) {}

    /** \brief A copy with `priority` set. */
    [[nodiscard]] SpawnOptions with_priority(Priority p) const {
        SpawnOptions o = *this;
        o.priority = p;
        return o;
    }
    /** \brief A copy with `lane` set. */
    [[nodiscard]] SpawnOptions with_lane(Lane l) const {
        SpawnOptions o = *this;
        o.lane = l;
        return o;
    }
    /** \brief A copy with `name` set (UTF-8). */
    [[nodiscard]] SpawnOptions with_name(std::string n) const {
        SpawnOptions o = *this;
        o.name = std::move(n);
        return o;
    }
    /** \brief A copy with `progress` set. */
    [[nodiscard]] SpawnOptions with_progress(JobProgress f) const {
        SpawnOptions o = *this;
        o.progress = std::move(f);
        return o;
    }

    /** Workers take higher priorities first. */
    Priority priority = Priority::normal;
    /** The CPU pool or the IO lane. */
    Lane lane = Lane::cpu;
    /** UTF-8; empty = no name. */
    std::string name;
    /** Called on the main thread at pumps with the job's progress (`JobContext::progress`),
     *  coalesced; empty = none. Exceptions from it are swallowed. */
    JobProgress progress;
};

/** \brief A job's work: return 0 for success, anything else for failure. [any-thread] (a
 *  worker) */
using JobRun = std::function<int32_t(JobContext &)>;
/** \brief A job's outcome: status OK, FAILED (with the run's `code`), CANCELLED or PANIC.
 *  [main-thread] */
using JobDone = std::function<void(hl_status_t status, int32_t code)>;
/** \brief The sink callable; may call `[main-thread]` methods except `pump()`. [main-thread] */
using SinkFn = std::function<void(const Message &)>;
/** \brief An event subscriber. [main-thread] */
using EventFn = std::function<void(const hl_event_t &)>;
/** \brief The request-pump callable: only schedules a pump, never pumps. [any-thread] */
using RequestPumpFn = std::function<void()>;

namespace detail {

struct JobState {
    JobRun run;
    JobDone done;
    JobProgress progress;
};

inline void sink_trampoline(void *user_data, const hl_message_t *message) noexcept {
    try {
        if (message != nullptr) {
            const Message m(*message);
            (*static_cast<SinkFn *>(user_data))(m);
        }
    } catch (...) {
        swallow_current_exception("sink");
    }
}

/** `run_until`'s condition, and what it threw (rethrown by `run_until` once the C call returns). */
struct UntilState {
    const std::function<bool()> *until;
    std::exception_ptr error;
};

inline int32_t until_trampoline(void *user_data) noexcept {
    auto *state = static_cast<UntilState *>(user_data);
    try {
        return (*state->until)() ? 1 : 0;
    } catch (...) {
        state->error = std::current_exception();
        return 1;  // stop: the exception goes to run_until's caller
    }
}

inline void request_pump_trampoline(void *user_data) noexcept {
    try {
        (*static_cast<RequestPumpFn *>(user_data))();
    } catch (...) {
        swallow_current_exception("request_pump");
    }
}

inline void event_trampoline(void *user_data, const hl_event_t *event) noexcept {
    try {
        if (event != nullptr) {
            (*static_cast<EventFn *>(user_data))(*event);
        }
    } catch (...) {
        swallow_current_exception("event");
    }
}

inline int32_t job_run_trampoline(void *user_data, hl_job_ctx_t *ctx) noexcept {
    try {
        JobContext context(ctx);
        return static_cast<JobState *>(user_data)->run(context);
    } catch (const Error &e) {
        if (e.status() == HL_STATUS_CANCELLED) {
            return static_cast<int32_t>(HL_STATUS_CANCELLED);  // hostloop reports CANCELLED
        }
        swallow_current_exception("job run");
    } catch (...) {
        swallow_current_exception("job run");
    }
    return uncaught_exception_code;
}

inline void job_progress_trampoline(void *user_data, float fraction) noexcept {
    try {
        JobProgress &progress = static_cast<JobState *>(user_data)->progress;
        if (progress) {
            progress(fraction);
        }
    } catch (...) {
        swallow_current_exception("job progress");
    }
}

inline void job_done_trampoline(void *user_data, hl_status_t status, int32_t code) noexcept {
    try {
        JobDone &done = static_cast<JobState *>(user_data)->done;
        if (done) {
            done(status, code);
        }
    } catch (...) {
        swallow_current_exception("job done");
    }
}

}  // namespace detail

/**
 * \brief The runtime: move-only owner of an `hl_runtime_t *` (worker pool, main-thread queue,
 * doorbell). Make one per process on the host's main thread.
 *
 * `const` methods are exactly the `[any-thread]` ones; the others are `[main-thread]`.
 */
class Runtime {
public:
    /**
     * \brief Creates a runtime and starts its threads; the calling thread becomes the main
     * thread. Throws `Error` (INVALID_ARG, VERSION_MISMATCH, OS). [main-thread] (defines it)
     */
    explicit Runtime(const Options &options = Options()) {
        const hl_runtime_options_t raw = options.capi();
        detail::check(hl_runtime_new(&raw, &raw_));
    }

    /** \brief Same as the constructor. Throws `Error`. [main-thread] (defines it) */
    [[nodiscard]] static Runtime create(const Options &options = Options()) { return Runtime(options); }

    /** \brief Takes ownership of `raw` (from `hl_runtime_new`). */
    [[nodiscard]] static Runtime from_capi(hl_runtime_t *raw) noexcept { return Runtime(raw, Adopt{}); }

    /** \brief Move-only: one owner per handle. */
    Runtime(const Runtime &) = delete;
    /** \brief Move-only: one owner per handle. */
    Runtime &operator=(const Runtime &) = delete;
    /** \brief Takes `other`'s handle; `other` owns nothing afterwards. */
    Runtime(Runtime &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    /** \brief Frees this runtime (as the destructor does), then takes `other`'s handle.
     *  [main-thread] */
    Runtime &operator=(Runtime &&other) noexcept {
        if (this != &other) {
            reset();
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }

    /**
     * \brief Shuts down (if `shutdown()` was not called, with the options' `free_deadline`) and
     * frees the runtime with `hl_runtime_free`, unloading its plugins first. Registered callables
     * are destroyed through their finalizers, some on other threads. Never throws. [main-thread]
     * (other threads must have stopped using the runtime)
     */
    ~Runtime() { reset(); }

    /**
     * \brief The doorbell fd: readable when main-thread work arrives, cleared by `pump()`. Watch
     * it for readability; never read, write or close it. Valid until the runtime is freed.
     * Throws `Error` (INVALID_HANDLE, WRONG_THREAD, SHUT_DOWN). [main-thread]
     */
    [[nodiscard]] int wake_fd() {
        int fd = -1;
        detail::check(hl_runtime_wake_fd(raw_, &fd));
        return fd;
    }

    /**
     * \brief Runs queued main-thread work (job `done`s, sink messages, event subscribers) in FIFO
     * order until the queue is empty or `budget` is spent (0 = the options' default budget, not
     * one item as in Rust; pass 1 us for one item); at least one item runs. Throws `Error` (INVALID_HANDLE, WRONG_THREAD, REENTRANT when called
     * from a callback this pump runs or from a `run_until` condition, SHUT_DOWN, INVALID_ARG for
     * a negative budget).
     * [main-thread] [not re-entrant]
     */
    PumpReport pump(std::chrono::microseconds budget = std::chrono::microseconds(0)) {
        hl_pump_report_t raw{};
        raw.struct_size = sizeof raw;
        detail::check(hl_runtime_pump(raw_, detail::to_u64(budget, "budget"), &raw));
        PumpReport report;
        report.ran = raw.ran;
        report.remaining = raw.remaining;
        report.elapsed = std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(raw.elapsed_us));
        report.overrun = std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(raw.overrun_us));
        return report;
    }

    /**
     * \brief Batch mode, for hosts with no running event loop (`blender -b`, `hython`, a farm
     * job): pumps with `budget`, sleeps on the doorbell until more work arrives, and repeats
     * until `until()` returns true (`finished`) or `timeout` passes (`finished == false`, not
     * thrown). `until` runs on this thread between pumps; an exception it throws ends the run
     * and is rethrown here; `pump()` and `run_until()` inside it throw REENTRANT. An empty
     * `until` runs until the timeout. Throws `Error` (INVALID_HANDLE, WRONG_THREAD, REENTRANT
     * from a callback a pump runs or from another run's `until`, SHUT_DOWN,
     * INVALID_ARG for a negative budget or timeout). [main-thread] [not re-entrant]
     */
    RunReport run_until(const std::function<bool()> &until, std::chrono::microseconds budget,
                        std::chrono::milliseconds timeout) {
        hl_run_report_t raw{};
        raw.struct_size = sizeof raw;
        detail::UntilState state{&until, nullptr};
        const hl_status_t status =
            hl_runtime_run_until(raw_, until ? &detail::until_trampoline : nullptr, &state,
                                 detail::to_u64(budget, "budget"), detail::to_u32(timeout, "timeout"), &raw);
        if (state.error) {
            std::rethrow_exception(state.error);
        }
        if (status != HL_STATUS_OK && status != HL_STATUS_TIMEOUT) {
            throw detail::last_error(status);
        }
        RunReport report;
        report.finished = status == HL_STATUS_OK;
        report.pumps = raw.pumps;
        report.ran = raw.ran;
        report.elapsed = std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(raw.elapsed_us));
        return report;
    }

    /**
     * \brief Shuts down within `deadline`: unloads the runtime's plugins (their `Plugin` handles
     * go dead), stops intake, cancels every job, drops queued main-thread items, joins the
     * threads. Missing the deadline is not thrown: it sets `timed_out` and `timeout_message`.
     * Calling it again returns the first report. Throws `Error` (INVALID_HANDLE, WRONG_THREAD,
     * INVALID_ARG for a negative deadline; clamped to `UINT32_MAX` ms). [main-thread]
     */
    ShutdownReport shutdown(std::chrono::milliseconds deadline) {
        hl_shutdown_report_t raw{};
        raw.struct_size = sizeof raw;
        const hl_status_t status = hl_runtime_shutdown(raw_, detail::to_u32(deadline, "deadline"), &raw);
        ShutdownReport report;
        if (status == HL_STATUS_TIMEOUT) {
            report.timed_out = true;
            report.timeout_message = detail::last_error(status).message();
        } else {
            detail::check(status);
        }
        report.threads_joined = raw.threads_joined;
        report.cancelled_queued = raw.cancelled_queued;
        report.cancelled_running = raw.cancelled_running;
        report.stragglers = raw.stragglers;
        report.main_items_dropped = raw.main_items_dropped;
        report.elapsed = std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(raw.elapsed_us));
        return report;
    }

    /** \brief A copy of the runtime's counters; works after shutdown too. Throws `Error`
     *  (INVALID_HANDLE). [any-thread] */
    [[nodiscard]] Stats stats() const {
        Stats stats{};
        stats.struct_size = sizeof stats;
        detail::check(hl_runtime_stats(raw_, &stats));
        return stats;
    }

    /** \brief The main-thread backlog, for a host's "N results waiting"; works after shutdown
     *  too. Throws `Error` (INVALID_HANDLE). [any-thread] */
    [[nodiscard]] Backlog backlog() const {
        Backlog b;
        detail::check(hl_runtime_backlog(raw_, &b.queued, &b.limit, &b.refused));
        return b;
    }

    /** \brief A copy of the runtime's plugin counters; works after shutdown too. Throws `Error`
     *  (INVALID_HANDLE). [any-thread] */
    [[nodiscard]] PluginStats plugin_stats() const {
        PluginStats stats{};
        stats.struct_size = sizeof stats;
        detail::check(hl_runtime_plugin_stats(raw_, &stats));
        return stats;
    }

    /**
     * \brief Registers the host sink, replacing any previous one (whose callable is then
     * destroyed); an empty `sink` removes it. `sink` runs on the main thread during `pump()`;
     * the `Message` is valid only for the call; exceptions it throws are swallowed. The
     * callable is destroyed on the main thread. Throws `Error` (INVALID_HANDLE, WRONG_THREAD,
     * SHUT_DOWN). [main-thread]
     */
    void set_sink(SinkFn sink) {
        if (!sink) {
            detail::check(hl_runtime_set_sink(raw_, nullptr, nullptr, nullptr));
            return;
        }
        auto box = std::make_unique<SinkFn>(std::move(sink));
        const hl_status_t status =
            hl_runtime_set_sink(raw_, &detail::sink_trampoline, box.get(), &detail::finalize<SinkFn>);
        detail::adopt_or_throw(box, status);
    }

    /**
     * \brief Registers the request-pump callable, for host loops that cannot watch `wake_fd()`,
     * replacing any previous one; an empty `request` removes it. `request` is called on any
     * thread whenever the doorbell rings and must only schedule a pump (post an event, set a
     * flag), never pump; exceptions it throws are swallowed. The callable is destroyed on any
     * thread. Throws `Error` (INVALID_HANDLE, SHUT_DOWN). [any-thread]
     */
    void set_request_pump(RequestPumpFn request) const {
        if (!request) {
            detail::check(hl_runtime_set_request_pump(raw_, nullptr, nullptr, nullptr));
            return;
        }
        auto box = std::make_unique<RequestPumpFn>(std::move(request));
        const hl_status_t status = hl_runtime_set_request_pump(raw_, &detail::request_pump_trampoline, box.get(),
                                                               &detail::finalize<RequestPumpFn>);
        detail::adopt_or_throw(box, status);
    }

    /**
     * \brief Sends `len` bytes at `bytes` to the sink under `topic` (UTF-8); both are copied, the
     * sink receives them at the next pump. Throws `Error` (NULL_ARG, INVALID_HANDLE,
     * INVALID_UTF8, SHUT_DOWN). [any-thread]
     */
    void emit(CStr topic, const void *bytes, std::size_t len) const {
        detail::check(hl_runtime_emit(raw_, topic.c_str(), bytes, len));
    }

    /** \brief Sends the bytes of `bytes` to the sink under `topic`; see the other `emit`.
     *  [any-thread] */
    void emit(CStr topic, std::string_view bytes) const { emit(std::move(topic), bytes.data(), bytes.size()); }

    /**
     * \brief Sends a typed array to the sink under `topic`; the records are copied (packed).
     * Throws `Error` (NULL_ARG, INVALID_HANDLE, INVALID_UTF8, INVALID_ARG for a bad view,
     * SHUT_DOWN). [any-thread]
     */
    void emit_array(CStr topic, const hl_array_view_t &view) const {
        detail::check(hl_runtime_emit_array(raw_, topic.c_str(), &view));
    }

    /**
     * \brief Sends `count` records of `components` elements of `T` starting at `data` (for xyz
     * positions: `emit_array("points", xyz, 3, n)`), `stride` bytes apart (0 = packed). `T` is
     * one of `uint8_t`, `int32_t`, `uint32_t`, `int64_t`, `uint64_t`, `float`, `double`.
     * Throws like the other `emit_array`, and `Error` (INVALID_ARG) if the size overflows.
     * [any-thread]
     */
    template <typename T>
    void emit_array(CStr topic, const T *data, uint32_t components, uint64_t count, uint64_t stride = 0) const {
        constexpr uint64_t max = std::numeric_limits<uint64_t>::max();
        const uint64_t record = static_cast<uint64_t>(components) * sizeof(T);
        if (stride == 0) {
            stride = record;
        }
        if (stride != 0 && count > 1 && (count - 1) > (max - record) / stride) {
            throw Error(HL_STATUS_INVALID_ARG, "emit_array: array size overflows");
        }
        hl_array_view_t view{};
        view.elem_type = detail::elem_type<std::remove_cv_t<T>>::value;
        view.components = components;
        view.count = count;
        view.stride = stride;
        view.data = data;
        view.byte_len = count == 0 ? 0 : (count - 1) * stride + record;
        emit_array(std::move(topic), view);
    }

    /**
     * \brief Posts a host event (copied; `struct_size` is set here). Throws `Error` (NULL_ARG for
     * a string the kind needs, INVALID_HANDLE, INVALID_ARG, INVALID_UTF8, SHUT_DOWN).
     * [any-thread]
     */
    void post_event(const hl_event_t &event) const {
        hl_event_t copy = event;
        copy.struct_size = sizeof copy;
        detail::check(hl_runtime_post_event(raw_, &copy));
    }

    /** \brief Posts `FRAME_CHANGED` (coalesced between pumps). Throws like `post_event`.
     *  [any-thread] */
    void post_frame_changed(double frame) const {
        hl_event_t event = make_event(EventKind::frame_changed);
        event.frame = frame;
        post_event(event);
    }
    /** \brief Posts `SELECTION_CHANGED` (coalesced between pumps). Throws like `post_event`.
     *  [any-thread] */
    void post_selection_changed() const { post_event(make_event(EventKind::selection_changed)); }
    /** \brief Posts `SCENE_OPENED` with the scene's path (UTF-8, copied). Throws like
     *  `post_event`. [any-thread] */
    void post_scene_opened(CStr path) const {
        hl_event_t event = make_event(EventKind::scene_opened);
        event.path = path.c_str();
        post_event(event);
    }
    /** \brief Posts `SCENE_SAVED` with the scene's path (UTF-8, copied). Throws like
     *  `post_event`. [any-thread] */
    void post_scene_saved(CStr path) const {
        hl_event_t event = make_event(EventKind::scene_saved);
        event.path = path.c_str();
        post_event(event);
    }
    /** \brief Posts `PLAYBACK_STARTED`. Throws like `post_event`. [any-thread] */
    void post_playback_started() const { post_event(make_event(EventKind::playback_started)); }
    /** \brief Posts `PLAYBACK_STOPPED`. Throws like `post_event`. [any-thread] */
    void post_playback_stopped() const { post_event(make_event(EventKind::playback_stopped)); }
    /** \brief Posts `SHUTDOWN_REQUESTED`. Throws like `post_event`. [any-thread] */
    void post_shutdown_requested() const { post_event(make_event(EventKind::shutdown_requested)); }
    /**
     * \brief Posts a `CUSTOM` event: `topic` (UTF-8) and `len` bytes at `bytes`, both copied;
     * with `coalesce`, subscribers see only the latest undelivered event of this topic. Throws
     * like `post_event`. [any-thread]
     */
    void post_custom(CStr topic, const void *bytes, std::size_t len, bool coalesce = false) const {
        hl_event_t event = make_event(EventKind::custom);
        event.topic = topic.c_str();
        event.bytes = bytes;
        event.bytes_len = len;
        event.coalesce = coalesce ? 1u : 0u;
        post_event(event);
    }

    /**
     * \brief Subscribes `fn` to events of `kind` (`EventKind::any` = every kind); it runs on the
     * main thread at pumps, with the event borrowed for the call; exceptions it throws are
     * swallowed. The callable is destroyed on any thread after `unsubscribe` or when the runtime
     * is freed. Returns the id for `unsubscribe` (dropping it keeps the subscription until the
     * runtime is freed). Throws `Error` (NULL_ARG for an empty `fn`, INVALID_HANDLE, INVALID_ARG,
     * SHUT_DOWN). [any-thread]
     */
    uint64_t subscribe(EventKind kind, EventFn fn) const {
        if (!fn) {
            throw Error(HL_STATUS_NULL_ARG, "subscribe: empty callable");
        }
        auto box = std::make_unique<EventFn>(std::move(fn));
        uint64_t id = 0;
        const hl_status_t status = hl_runtime_subscribe(raw_, static_cast<uint32_t>(kind), &detail::event_trampoline,
                                                        box.get(), &detail::finalize<EventFn>, &id);
        detail::adopt_or_throw(box, status);
        return id;
    }

    /** \brief Ends a subscription; called on the main thread, its callable never runs after
     *  this returns. Throws `Error` (INVALID_HANDLE, INVALID_ARG for an unknown id, SHUT_DOWN).
     *  [any-thread] */
    void unsubscribe(uint64_t subscription) const { detail::check(hl_runtime_unsubscribe(raw_, subscription)); }

    /**
     * \brief Queues a job: `run` on a worker (or the IO lane), then `done` (if not empty) on the
     * main thread at a pump with the outcome, and `options.progress` (if not empty) at pumps
     * before it. Not called if the runtime shuts down first. The callables are destroyed
     * together on any thread after the job ends. Exceptions from `run`
     * end it (see the header's introduction); from `done`, they are swallowed. The returned
     * `Job` does not cancel the job when destroyed. Throws `Error` (NULL_ARG for an empty `run`,
     * INVALID_HANDLE, INVALID_ARG, INVALID_UTF8 for the name, SHUT_DOWN). [any-thread]
     */
    [[nodiscard]] Job spawn(JobRun run, JobDone done = {}, const SpawnOptions &options = {}) const {
        hl_job_t *job = nullptr;
        spawn_raw(std::move(run), std::move(done), options, &job);
        return Job(job);
    }

    /** \brief `spawn` without a handle (fire and forget): the job can only be cancelled by
     *  shutdown. Throws like `spawn`. [any-thread] */
    void spawn_detached(JobRun run, JobDone done = {}, const SpawnOptions &options = {}) const {
        spawn_raw(std::move(run), std::move(done), options, nullptr);
    }

    /** \brief True when this object owns a runtime. */
    explicit operator bool() const noexcept { return raw_ != nullptr; }
    /** \brief The handle, still owned by this object (NULL if none). */
    [[nodiscard]] hl_runtime_t *capi() const noexcept { return raw_; }
    /** \brief Gives up the handle: the caller frees it with `hl_runtime_free`. */
    [[nodiscard]] hl_runtime_t *release() noexcept { return std::exchange(raw_, nullptr); }

private:
    struct Adopt {};
    Runtime(hl_runtime_t *raw, Adopt) noexcept : raw_(raw) {}

    void reset() noexcept {
        if (raw_ != nullptr) {
            (void)hl_runtime_free(raw_);
            raw_ = nullptr;
        }
    }

    static hl_event_t make_event(EventKind kind) noexcept {
        hl_event_t event{};
        event.struct_size = sizeof event;
        event.kind = static_cast<uint32_t>(kind);
        return event;
    }

    void spawn_raw(JobRun run, JobDone done, const SpawnOptions &options, hl_job_t **out) const {
        if (!run) {
            throw Error(HL_STATUS_NULL_ARG, "spawn: empty run callable");
        }
        auto state = std::make_unique<detail::JobState>(
            detail::JobState{std::move(run), std::move(done), options.progress});
        hl_job_desc_t desc{};
        desc.struct_size = sizeof desc;
        desc.priority = static_cast<uint32_t>(options.priority);
        desc.lane = static_cast<uint32_t>(options.lane);
        desc.name = options.name.empty() ? nullptr : options.name.c_str();
        desc.run = &detail::job_run_trampoline;
        desc.done = state->done ? &detail::job_done_trampoline : nullptr;
        desc.progress = state->progress ? &detail::job_progress_trampoline : nullptr;
        desc.user_data = state.get();
        desc.finalize = &detail::finalize<detail::JobState>;
        detail::adopt_or_throw(state, hl_job_spawn(raw_, &desc, out));
    }

    hl_runtime_t *raw_ = nullptr;
};

/**
 * \brief A loaded tool plugin (`hostloop/plugin.h`): move-only owner of an `hl_plugin_t *`.
 * Destroying it unloads the plugin with `default_deadline`; call `unload()` to choose the deadline
 * and read the report.
 *
 * Every method is `[main-thread]`, `const` ones included. Loading a library runs its code: load
 * only plugins you trust. When the runtime is shut down or freed it unloads the plugin itself;
 * this object is then left with a dead handle, detected by the library (handles are never
 * reused): its methods throw `Error` (INVALID_HANDLE) and its destructor does nothing.
 */
class Plugin {
public:
    /** \brief The deadline the destructor and move assignment give `hl_plugin_unload`, and the
     *  default of `unload()` and `reload()`. */
    static constexpr std::chrono::milliseconds default_deadline{2000};

    /** \brief No plugin (`operator bool` is false). */
    Plugin() noexcept = default;

    /**
     * \brief Loads the plugin library at `path` (UTF-8) into `rt` and calls its `load`. Throws
     * `Error` (NULL_ARG, INVALID_HANDLE, INVALID_UTF8, WRONG_THREAD, SHUT_DOWN, FILE_NOT_FOUND,
     * NOT_A_LIBRARY, NO_ENTRY_SYMBOL, VERSION_MISMATCH, BAD_DESCRIPTOR, ALREADY_LOADED when a
     * plugin of that name is loaded in `rt`, PANIC, FAILED with the plugin's reason, OS); nothing
     * of the plugin stays loaded then. [main-thread] [not re-entrant]
     */
    explicit Plugin(Runtime &rt, CStr path) { detail::check(hl_plugin_load(rt.capi(), path.c_str(), &raw_)); }

    /** \brief Same as the constructor. Throws `Error`. [main-thread] [not re-entrant] */
    [[nodiscard]] static Plugin load(Runtime &rt, CStr path) { return Plugin(rt, std::move(path)); }

    /**
     * \brief Loads the plugin where `options` say (`hl_plugin_load_ex`): in-process, or in a
     * worker process whose crash the host survives. Throws `Error` (as the constructor, and
     * INVALID_ARG for bad options, WORKER when the worker program cannot start or the worker was
     * lost before the plugin loaded). [main-thread] [not re-entrant]
     */
    [[nodiscard]] static Plugin load(Runtime &rt, CStr path, const LoadOptions &options) {
        const hl_plugin_load_options_t o = options.capi();
        hl_plugin_t *raw = nullptr;
        detail::check(hl_plugin_load_ex(rt.capi(), path.c_str(), &o, &raw));
        return Plugin(raw, Adopt{});
    }

    /** \brief Takes ownership of `raw` (from `hl_plugin_load`). */
    [[nodiscard]] static Plugin from_capi(hl_plugin_t *raw) noexcept { return Plugin(raw, Adopt{}); }

    /** \brief Move-only: one owner per handle. */
    Plugin(const Plugin &) = delete;
    /** \brief Move-only: one owner per handle. */
    Plugin &operator=(const Plugin &) = delete;
    /** \brief Takes `other`'s handle; `other` owns nothing afterwards. */
    Plugin(Plugin &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    /** \brief Unloads this plugin (as the destructor does), then takes `other`'s handle.
     *  [main-thread] */
    Plugin &operator=(Plugin &&other) noexcept {
        if (this != &other) {
            reset();
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }

    /**
     * \brief Unloads the plugin with `hl_plugin_unload` and `default_deadline`, ignoring the
     * status (a missed deadline retires the image; a dead handle is left alone). Never throws.
     * [main-thread] (elsewhere the plugin stays loaded until its runtime is shut down)
     */
    ~Plugin() { reset(); }

    /**
     * \brief Hot-reloads the plugin from `path` (UTF-8; usually a rebuilt library) while the host
     * runs: the running build saves its state and is suspended, its work finishes or is cancelled
     * within `deadline`, the new build is loaded from a fresh copy and restores the state, then
     * the old build is unloaded. The handle stays the same; `info().generation` grows by one.
     * Throws `Error` (NULL_ARG, INVALID_HANDLE, INVALID_UTF8, WRONG_THREAD, REENTRANT, any status
     * of loading the new build, BAD_DESCRIPTOR also when it is another plugin, FAILED or PANIC
     * when saving or restoring failed, TIMEOUT when the old build's work did not stop in time,
     * INVALID_ARG for a negative deadline; clamped to `UINT32_MAX` ms); the old build then keeps
     * running with its own state. [main-thread] [not re-entrant]
     */
    void reload(CStr path, std::chrono::milliseconds deadline = default_deadline) {
        const uint32_t ms = detail::to_u32(deadline, "deadline");
        detail::check(hl_plugin_reload(raw_, path.c_str(), ms));
    }

    /**
     * \brief Unloads the plugin and frees the handle: calls the plugin's `unload`, drops its
     * queued work unrun, waits up to `deadline` for calls into it that are running, then
     * releases the library. No call into the plugin starts after this returns, and this object
     * owns nothing afterwards. Missing the deadline is not thrown (the plugin is unloaded either
     * way): it sets `timed_out` and `timeout_message`. Throws `Error` (NULL_ARG when this object
     * owns nothing; INVALID_HANDLE when the runtime unloaded the plugin already, after which this
     * object owns nothing; WRONG_THREAD, or REENTRANT from inside the plugin's own callbacks such
     * as the sink call of its own message, after which it still owns the plugin; INVALID_ARG for a
     * negative deadline; clamped to `UINT32_MAX` ms). [main-thread] [not re-entrant]
     */
    UnloadReport unload(std::chrono::milliseconds deadline = default_deadline) {
        const uint32_t ms = detail::to_u32(deadline, "deadline");
        hl_unload_report_t raw{};
        raw.struct_size = sizeof raw;
        const hl_status_t status = hl_plugin_unload(raw_, ms, &raw);
        UnloadReport report;
        if (status == HL_STATUS_TIMEOUT) {
            raw_ = nullptr;
            report.timed_out = true;
            report.timeout_message = detail::last_error(status).message();
        } else if (status == HL_STATUS_OK) {
            raw_ = nullptr;
        } else {
            Error error = detail::last_error(status);
            if (status == HL_STATUS_INVALID_HANDLE) {
                raw_ = nullptr;  // gone for good: handles are never reused
            }
            throw error;
        }
        report.retired = raw.retired != 0;
        report.dropped = raw.dropped;
        report.stragglers = raw.stragglers;
        report.elapsed = std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(raw.elapsed_us));
        return report;
    }

    /**
     * \brief Describes the plugin; the strings are copied. Throws `Error` (NULL_ARG,
     * INVALID_HANDLE, WRONG_THREAD, REENTRANT while it is being reloaded). [main-thread]
     */
    [[nodiscard]] PluginInfo info() const {
        hl_plugin_info_t raw{};
        raw.struct_size = sizeof raw;
        detail::check(hl_plugin_info(raw_, &raw));
        PluginInfo info;
        info.name = raw.name != nullptr ? raw.name : "";
        info.version = raw.version != nullptr ? raw.version : "";
        info.path = raw.path != nullptr ? raw.path : "";
        info.generation = raw.generation;
        info.flags = raw.flags;
        info.pending = raw.pending;
        return info;
    }

    /**
     * \brief Where the plugin runs, its worker's pid, its crashes and restarts. Throws `Error`
     * (NULL_ARG, INVALID_HANDLE, WRONG_THREAD, REENTRANT while it is being reloaded).
     * [main-thread]
     */
    [[nodiscard]] PluginProcess process() const {
        hl_plugin_process_t raw{};
        raw.struct_size = sizeof raw;
        detail::check(hl_plugin_process(raw_, &raw));
        PluginProcess p;
        p.isolation = raw.isolation;
        p.pid = raw.pid;
        p.restarts = raw.restarts;
        p.crashes = raw.crashes;
        p.checkpoints = raw.checkpoints;
        p.last_crash = raw.last_crash != nullptr ? raw.last_crash : "";
        p.down = raw.down != 0;
        p.down_reason = raw.down_reason != nullptr ? raw.down_reason : "";
        return p;
    }

    /** \brief True when this object owns a handle (it may have gone dead with its runtime). */
    explicit operator bool() const noexcept { return raw_ != nullptr; }
    /** \brief The handle, still owned by this object (NULL if none). */
    [[nodiscard]] hl_plugin_t *capi() const noexcept { return raw_; }
    /** \brief Gives up the handle: the caller unloads it with `hl_plugin_unload`. */
    [[nodiscard]] hl_plugin_t *release() noexcept { return std::exchange(raw_, nullptr); }

private:
    struct Adopt {};
    Plugin(hl_plugin_t *raw, Adopt) noexcept : raw_(raw) {}

    void reset() noexcept {
        if (raw_ != nullptr) {
            (void)hl_plugin_unload(raw_, static_cast<uint32_t>(default_deadline.count()), nullptr);
            raw_ = nullptr;
        }
    }

    hl_plugin_t *raw_ = nullptr;
};

/** \brief One payload of a cache frame (`hl_cache_payload_t`): a view into the cache's map,
 *  valid while the `Cache` it came from lives. */
struct CachePayload {
    /** 0 for opaque bytes, else the array's `HL_ELEM_*`. */
    uint32_t elem = 0;
    /** Elements per record (1 for bytes). */
    uint32_t components = 0;
    /** Records (bytes: the byte count). */
    uint64_t count = 0;
    /** The data, 64-byte aligned; `len` bytes. */
    const void *data = nullptr;
    /** Bytes at `data`. */
    std::size_t len = 0;

    /** \brief True for opaque bytes. */
    [[nodiscard]] bool is_bytes() const noexcept { return elem == 0; }
    /** \brief The bytes, whatever the type. */
    [[nodiscard]] const uint8_t *bytes() const noexcept { return static_cast<const uint8_t *>(data); }
    /**
     * \brief The array's elements as `T` (one of `uint8_t`, `int32_t`, `uint32_t`, `int64_t`,
     * `uint64_t`, `float`, `double`), or NULL when this is not an array of `T`. There are
     * `count * components` of them.
     */
    template <typename T> [[nodiscard]] const T *array_data() const noexcept {
        return elem == detail::elem_type<T>::value ? static_cast<const T *>(data) : nullptr;
    }
};

/** \brief One frame of a `Cache`: its step, topic and payloads, borrowed from the cache (valid
 *  while the `Cache` it came from lives). */
struct CacheFrame {
    /** The simulation step. */
    uint64_t step = 0;
    /** The topic, UTF-8 (NUL-terminated in memory: `topic.data()` may be passed to C). */
    std::string_view topic;
    /** The payloads, at least one. */
    std::vector<CachePayload> payloads;
};

/** \brief Where and why a cache stopped being readable (`hl_cache_damage_t`). */
struct CacheDamage {
    /** True when the cache was cut short; the fields below are 0 otherwise. */
    bool damaged = false;
    /** The byte offset of the first frame not taken. */
    uint64_t offset = 0;
    /** The file's length when it was opened. */
    uint64_t file_len = 0;
    /** `HL_CACHE_DAMAGE_*`. */
    uint32_t reason = HL_CACHE_DAMAGE_NONE;
    /** For `HL_CACHE_DAMAGE_BAD_DATA`: the payload that failed its checksum. */
    uint32_t payload = 0;
};

/**
 * \brief A frame cache opened for reading (`hostloop/cache.h`): move-only owner of an
 * `hl_cache_t *`, freed with `hl_cache_free` by the destructor. Frames and payloads point into
 * its map: they are valid while this object (or whoever took its handle) lives.
 *
 * Every method is `[any-thread]`; `const` ones may run concurrently.
 */
class Cache {
public:
    /** \brief No cache (`operator bool` is false). */
    Cache() noexcept = default;

    /**
     * \brief Opens the cache at `path` (UTF-8) by memory map; a torn or damaged tail is cut off
     * and reported by `damage()`. Throws `Error` (NULL_ARG, INVALID_UTF8, FILE_NOT_FOUND, OS,
     * INVALID_ARG when the file is not a frame cache, VERSION_MISMATCH). [any-thread]
     */
    explicit Cache(CStr path) { detail::check(hl_cache_open(path.c_str(), &raw_)); }

    /** \brief Same as the constructor. Throws `Error`. [any-thread] */
    [[nodiscard]] static Cache open(CStr path) { return Cache(std::move(path)); }

    /** \brief Takes ownership of `raw` (from `hl_cache_open`). */
    [[nodiscard]] static Cache from_capi(hl_cache_t *raw) noexcept { return Cache(raw, Adopt{}); }

    /** \brief Move-only: one owner per handle. */
    Cache(const Cache &) = delete;
    /** \brief Move-only: one owner per handle. */
    Cache &operator=(const Cache &) = delete;
    /** \brief Takes `other`'s handle; `other` owns nothing afterwards. */
    Cache(Cache &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    /** \brief Frees this cache (as the destructor does), then takes `other`'s handle. */
    Cache &operator=(Cache &&other) noexcept {
        if (this != &other) {
            reset();
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }
    /** \brief Unmaps the cache with `hl_cache_free`: frames and payloads taken from it are
     *  invalid afterwards. Never throws. [any-thread] */
    ~Cache() { reset(); }

    /** \brief The number of readable frames. Throws `Error` (NULL_ARG, INVALID_HANDLE).
     *  [any-thread] */
    [[nodiscard]] uint64_t frame_count() const {
        uint64_t n = 0;
        detail::check(hl_cache_frame_count(raw_, &n));
        return n;
    }

    /**
     * \brief Frame `index` with its payloads; with `verify` its data is first checked against
     * its checksums (this reads the whole frame). Throws `Error` (NULL_ARG, INVALID_HANDLE,
     * INVALID_ARG past the end, FAILED when `verify` finds the data damaged). [any-thread]
     */
    [[nodiscard]] CacheFrame frame(uint64_t index, bool verify = true) const {
        hl_cache_frame_t raw{};
        raw.struct_size = sizeof raw;
        detail::check(hl_cache_frame(raw_, index, verify ? 1u : 0u, &raw));
        CacheFrame frame;
        frame.step = raw.step;
        frame.topic = std::string_view(raw.topic, raw.topic_len);
        frame.payloads.reserve(raw.payload_count);
        for (uint32_t i = 0; i < raw.payload_count; ++i) {
            hl_cache_payload_t p{};
            p.struct_size = sizeof p;
            detail::check(hl_cache_payload(raw_, index, i, &p));
            CachePayload payload;
            payload.elem = p.elem;
            payload.components = p.components;
            payload.count = p.count;
            payload.data = p.data;
            payload.len = p.len;
            frame.payloads.push_back(payload);
        }
        return frame;
    }

    /** \brief Where and why the cache stopped being readable, if it did. Throws `Error`
     *  (NULL_ARG, INVALID_HANDLE). [any-thread] */
    [[nodiscard]] CacheDamage damage() const {
        hl_cache_damage_t raw{};
        raw.struct_size = sizeof raw;
        detail::check(hl_cache_damage(raw_, &raw));
        CacheDamage d;
        d.damaged = raw.damaged != 0;
        d.offset = raw.offset;
        d.file_len = raw.file_len;
        d.reason = raw.reason;
        d.payload = raw.payload;
        return d;
    }

    /** \brief Checks every frame's data and cuts the cache at the first bad one
     *  (`hl_cache_verify`); returns the frames left. Throws `Error` (NULL_ARG,
     *  INVALID_HANDLE). [any-thread] */
    uint64_t verify() {
        uint64_t left = 0;
        detail::check(hl_cache_verify(raw_, &left));
        return left;
    }

    /** \brief True when this object owns a handle. */
    explicit operator bool() const noexcept { return raw_ != nullptr; }
    /** \brief The handle, still owned by this object (NULL if none). */
    [[nodiscard]] hl_cache_t *capi() const noexcept { return raw_; }
    /** \brief Gives up the handle: the caller frees it with `hl_cache_free`. */
    [[nodiscard]] hl_cache_t *release() noexcept { return std::exchange(raw_, nullptr); }

private:
    struct Adopt {};
    Cache(hl_cache_t *raw, Adopt) noexcept : raw_(raw) {}

    void reset() noexcept {
        if (raw_ != nullptr) {
            (void)hl_cache_free(raw_);
            raw_ = nullptr;
        }
    }

    hl_cache_t *raw_ = nullptr;
};

/** \brief A farm run's progress: the fraction of the steps done and a message such as
 *  "segment 2/4, step 1800 of 4000" (borrowed for the call), coalesced: at most once per pump,
 *  never after its `done`. [main-thread] */
using FarmProgress = std::function<void(float fraction, const char *message)>;
/** \brief A farm run's outcome, once: OK with the final state's path, FAILED with the reason,
 *  CANCELLED, or PANIC with its message (`text` borrowed for the call). [main-thread] */
using FarmDone = std::function<void(hl_status_t status, const char *text)>;

/**
 * \brief What to run on a farm (`hl_farm_spec_t`), as a value: the library's defaults
 * (`hl_farm_spec_init`: Slurm, 1,000 steps in one segment, frames cached) and setters that
 * copy their strings, e.g.
 * `FarmSpec(worker, plugin, "/shared/run1").configure("agents=1000").steps(5000).segments(4)`.
 * Fields are checked by `FarmRun`'s constructor, not here.
 */
class FarmSpec {
public:
    /** \brief The `hostloop-worker` program, the simulation plugin and the run's directory
     *  (UTF-8; relative paths are taken from the current directory when the run starts).
     *  Throws `Error` only if `hl_farm_spec_init` fails (it does not). [any-thread] */
    FarmSpec(std::string worker, std::string plugin, std::string dir)
        : raw_(), worker_(std::move(worker)), plugin_(std::move(plugin)), dir_(std::move(dir)) {
        detail::check(hl_farm_spec_init(&raw_));
    }

    /** \brief The configuration of a fresh start ("agents=1000"). */
    FarmSpec &configure(std::string text) {
        configure_ = std::move(text);
        has_configure_ = true;
        return *this;
    }
    /** \brief Start from a saved state at step `at_step` instead of a fresh one. */
    FarmSpec &restore(std::string state, uint64_t at_step) {
        restore_ = std::move(state);
        has_restore_ = true;
        raw_.restore_step = at_step;
        return *this;
    }
    /** \brief Steps in all (at least 1). */
    FarmSpec &steps(uint64_t n) noexcept {
        raw_.steps = n;
        return *this;
    }
    /** \brief Chained jobs the steps are split into (1 to `steps`). */
    FarmSpec &segments(uint32_t n) noexcept {
        raw_.segments = n;
        return *this;
    }
    /** \brief Each job also saves every `k` steps (0 = only at its end). */
    FarmSpec &save_every(uint64_t k) noexcept {
        raw_.save_every = k;
        return *this;
    }
    /** \brief Whether the segments write `dir/frames.hlcache` (default: yes). */
    FarmSpec &cache(bool on) noexcept {
        raw_.cache = on ? 1u : 0u;
        return *this;
    }
    /** \brief CPUs per job (0 counts as 1). */
    FarmSpec &cpus(uint32_t n) noexcept {
        raw_.cpus = n;
        return *this;
    }
    /** \brief Run the Slurm commands from `dir` instead of the `PATH`. */
    FarmSpec &slurm_bin_dir(std::string dir) {
        slurm_bin_dir_ = std::move(dir);
        has_slurm_bin_dir_ = true;
        return *this;
    }
    /** \brief Submit to this Slurm partition instead of the cluster's default. */
    FarmSpec &slurm_partition(std::string partition) {
        slurm_partition_ = std::move(partition);
        has_slurm_partition_ = true;
        return *this;
    }

    /** \brief The C struct. Its strings point into this object: valid while it lives and is
     *  not modified. */
    [[nodiscard]] hl_farm_spec_t capi() const noexcept {
        hl_farm_spec_t spec = raw_;
        spec.worker = worker_.c_str();
        spec.plugin = plugin_.c_str();
        spec.dir = dir_.c_str();
        spec.configure = has_configure_ ? configure_.c_str() : nullptr;
        spec.restore = has_restore_ ? restore_.c_str() : nullptr;
        spec.slurm_bin_dir = has_slurm_bin_dir_ ? slurm_bin_dir_.c_str() : nullptr;
        spec.slurm_partition = has_slurm_partition_ ? slurm_partition_.c_str() : nullptr;
        return spec;
    }

private:
    hl_farm_spec_t raw_;
    std::string worker_, plugin_, dir_, configure_, restore_, slurm_bin_dir_, slurm_partition_;
    bool has_configure_ = false, has_restore_ = false, has_slurm_bin_dir_ = false,
         has_slurm_partition_ = false;
};

namespace detail {

struct FarmState {
    FarmDone done;
    FarmProgress progress;
};

inline void farm_progress_trampoline(void *user_data, float fraction, const char *message) noexcept {
    try {
        FarmProgress &progress = static_cast<FarmState *>(user_data)->progress;
        if (progress) {
            progress(fraction, message);
        }
    } catch (...) {
        swallow_current_exception("farm progress");
    }
}

inline void farm_done_trampoline(void *user_data, hl_status_t status, const char *text) noexcept {
    try {
        FarmDone &done = static_cast<FarmState *>(user_data)->done;
        if (done) {
            done(status, text);
        }
    } catch (...) {
        swallow_current_exception("farm done");
    }
}

}  // namespace detail

/**
 * \brief A simulation run on a farm (`hostloop/farm.h`): move-only owner of an
 * `hl_farm_run_t *`. Its `done` and `progress` callables run on the main thread at pumps.
 * Destroying it frees the handle (`hl_farm_run_free`) but does **not** cancel the run, whose
 * callables still come; call `cancel()` first to stop it (and its farm jobs).
 */
class FarmRun {
public:
    /** \brief No run (`operator bool` is false). */
    FarmRun() noexcept = default;

    /**
     * \brief Submits `spec` as a job of `rt` (`hl_farm_run`): `progress` (if not empty) at pumps
     * while it runs, then `done` (if not empty) once with the outcome; a farm that refuses or
     * cannot be reached is a FAILED `done`, not an exception. The callables are destroyed
     * together after `done`, or at shutdown (when `done` is not called), on any thread.
     * Throws `Error` (NULL_ARG, INVALID_HANDLE, INVALID_ARG, VERSION_MISMATCH, INVALID_UTF8, OS,
     * WRONG_THREAD, SHUT_DOWN, BACKLOG). [main-thread]
     */
    FarmRun(Runtime &rt, const FarmSpec &spec, FarmDone done = {}, FarmProgress progress = {}) {
        auto state = std::make_unique<detail::FarmState>(detail::FarmState{std::move(done), std::move(progress)});
        const hl_farm_spec_t raw = spec.capi();
        const hl_status_t status =
            hl_farm_run(rt.capi(), &raw, state->progress ? &detail::farm_progress_trampoline : nullptr,
                        state->done ? &detail::farm_done_trampoline : nullptr, state.get(),
                        &detail::finalize<detail::FarmState>, &raw_);
        detail::adopt_or_throw(state, status);
    }

    /** \brief Takes ownership of `raw` (from `hl_farm_run`). */
    [[nodiscard]] static FarmRun from_capi(hl_farm_run_t *raw) noexcept { return FarmRun(raw, Adopt{}); }

    /** \brief Move-only: one owner per handle. */
    FarmRun(const FarmRun &) = delete;
    /** \brief Move-only: one owner per handle. */
    FarmRun &operator=(const FarmRun &) = delete;
    /** \brief Takes `other`'s handle; `other` owns nothing afterwards. */
    FarmRun(FarmRun &&other) noexcept : raw_(std::exchange(other.raw_, nullptr)) {}
    /** \brief Frees this handle (not the run), then takes `other`'s. */
    FarmRun &operator=(FarmRun &&other) noexcept {
        if (this != &other) {
            reset();
            raw_ = std::exchange(other.raw_, nullptr);
        }
        return *this;
    }
    /** \brief Frees the handle with `hl_farm_run_free`; the run goes on. Never throws.
     *  [any-thread] */
    ~FarmRun() { reset(); }

    /** \brief Cancels the run and its farm jobs; `done` then reports CANCELLED. Throws `Error`
     *  (NULL_ARG, INVALID_HANDLE). [any-thread] */
    void cancel() const { detail::check(hl_farm_run_cancel(raw_)); }

    /** \brief The latest progress, 0 to 1. Throws `Error` (NULL_ARG, INVALID_HANDLE).
     *  [any-thread] */
    [[nodiscard]] float progress() const {
        float fraction = 0.0f;
        detail::check(hl_farm_run_progress(raw_, &fraction));
        return fraction;
    }

    /** \brief `HL_STATUS_PENDING` while it runs, then the outcome (OK, FAILED, CANCELLED,
     *  PANIC) — a value, not thrown. Throws `Error` (NULL_ARG, INVALID_HANDLE). [any-thread] */
    [[nodiscard]] hl_status_t status() const {
        hl_status_t status = HL_STATUS_PENDING;
        detail::check(hl_farm_run_status(raw_, &status));
        return status;
    }

    /** \brief True once `status()` is no longer PENDING. Throws like `status()`. [any-thread] */
    [[nodiscard]] bool finished() const { return status() != HL_STATUS_PENDING; }

    /** \brief True when this object owns a handle. */
    explicit operator bool() const noexcept { return raw_ != nullptr; }
    /** \brief The handle, still owned by this object (NULL if none). */
    [[nodiscard]] hl_farm_run_t *capi() const noexcept { return raw_; }
    /** \brief Gives up the handle: the caller frees it with `hl_farm_run_free`. */
    [[nodiscard]] hl_farm_run_t *release() noexcept { return std::exchange(raw_, nullptr); }

private:
    struct Adopt {};
    FarmRun(hl_farm_run_t *raw, Adopt) noexcept : raw_(raw) {}

    void reset() noexcept {
        if (raw_ != nullptr) {
            (void)hl_farm_run_free(raw_);
            raw_ = nullptr;
        }
    }

    hl_farm_run_t *raw_ = nullptr;
};

}  // namespace hostloop

#endif /* HOSTLOOP_HPP */
