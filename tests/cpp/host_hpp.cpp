// A C++17 host on include/hostloop.hpp: RAII runtime and jobs, lambdas as callbacks, exceptions
// as errors, swallowed exceptions in callbacks, captures destroyed exactly once.
//
// Usage: host_hpp            the host scenario
//        host_hpp cancel     a job that stops with ctx.check() must end CANCELLED
// Prints `key=value` lines for tests/tests/cpp.rs and exits non-zero if a check failed.

#include "hostloop.hpp"

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const std::string &what) {
    if (!ok) {
        ++failures;
        std::fprintf(stderr, "FAIL %s\n", what.c_str());
    }
}

/// Counts live copies, so the test can see that every callable hostloop.hpp boxed was destroyed.
struct Tracker {
    static std::atomic<int> live;
    Tracker() { ++live; }
    Tracker(const Tracker &) { ++live; }
    Tracker(Tracker &&) noexcept { ++live; }
    Tracker &operator=(const Tracker &) = default;
    ~Tracker() { --live; }
};
std::atomic<int> Tracker::live{0};

std::atomic<int> handled_exceptions{0};
std::string last_exception_callback;

void on_swallowed(std::exception_ptr, const char *callback) {
    ++handled_exceptions;
    last_exception_callback = callback;
}

/// Pumps until `done()` holds, waiting on the doorbell with a 16 ms frame timer.
template <typename Done> int pump_until(hostloop::Runtime &rt, Done done) {
    const int fd = rt.wake_fd();
    int pumps = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) {
            check(false, "timed out");
            break;
        }
        pollfd p{fd, POLLIN, 0};
        poll(&p, 1, 16);
        rt.pump(std::chrono::milliseconds(2));
        ++pumps;
    }
    return pumps;
}

constexpr int kJobs = 10;

int host() {
    const auto main_thread = std::this_thread::get_id();
    hostloop::set_exception_handler(on_swallowed);
    const uint64_t swallowed_before = hostloop::swallowed_exceptions();
    int results = 0, failed_with_exception = 0, messages = 0, arrays = 0, events = 0;
    int reentrant_errors = 0, off_main = 0;
    std::string utf8_error;
    int pumps = 0;
    bool run_until_rethrew = false;
    hostloop::ShutdownReport report;
    {
        hostloop::Runtime rt(hostloop::Options().workers(2).io_threads(1).thread_name("hpp"));
        const hostloop::Runtime &shared = rt;  // what worker threads may use: [any-thread] only

        // Arrays kept past their sink calls: the lease, the data, its first value.
        struct Kept {
            hostloop::Lease lease;
            const float *xyz;
            float first;
        };
        std::vector<Kept> kept;
        Tracker sink_tracker;
        rt.set_sink([&, sink_tracker](const hostloop::Message &m) {
            off_main += std::this_thread::get_id() != main_thread;
            ++messages;
            if (m.is_array()) {
                const float *xyz = m.array_data<float>();
                check(xyz != nullptr && m.array().components == 3 && m.array().stride == 12,
                      "a packed float xyz array");
                ++arrays;
                // Emitted from a worker: lendable, kept past the call at the same address.
                hostloop::Lease lease = m.lend();
                check(static_cast<bool>(lease), "an emitted array is lendable");
                kept.push_back({std::move(lease), xyz, xyz[0]});
            }
            if (m.topic() == "throw") {
                try {
                    rt.pump();
                } catch (const hostloop::Error &e) {
                    reentrant_errors += e.status() == HL_STATUS_REENTRANT;
                }
                throw std::runtime_error("a bug in the host's sink");
            }
        });

        Tracker sub_tracker;
        rt.subscribe(hostloop::EventKind::custom, [&, sub_tracker](const hl_event_t &e) {
            off_main += std::this_thread::get_id() != main_thread;
            events += std::strcmp(e.topic, "hpp/ping") == 0;
        });
        rt.post_custom("hpp/ping", "x", 1);

        std::vector<hostloop::Job> jobs;
        int done_count = 0;
        for (int i = 0; i < kJobs; ++i) {
            Tracker job_tracker;
            jobs.push_back(rt.spawn(
                [&shared, i, job_tracker](hostloop::JobContext &ctx) -> int32_t {
                    float points[2][4] = {{float(i), 0, 0, -1}, {float(i), 1, 1, -1}};
                    for (int k = 0; k < 1000; ++k) {
                        ctx.check();
                        ctx.progress(k / 1000.0f);
                    }
                    shared.emit("hpp/result", std::to_string(i));
                    shared.emit_array("hpp/points", &points[0][0], 3, 2, sizeof points[0]);
                    return 0;
                },
                [&, job_tracker](hl_status_t status, int32_t code) {
                    off_main += std::this_thread::get_id() != main_thread;
                    results += status == HL_STATUS_OK && code == 0;
                    ++done_count;
                },
                hostloop::SpawnOptions(i % 2 ? hostloop::Priority::low : hostloop::Priority::high,
                                       i % 5 == 0 ? hostloop::Lane::io : hostloop::Lane::cpu,
                                       "hpp-job")));
        }
        // A run that throws: done sees FAILED with uncaught_exception_code.
        Tracker thrower_tracker;
        hostloop::Job thrower = rt.spawn(
            [thrower_tracker](hostloop::JobContext &) -> int32_t {
                throw std::logic_error("a bug in a job");
            },
            [&](hl_status_t status, int32_t code) {
                failed_with_exception +=
                    status == HL_STATUS_FAILED && code == hostloop::uncaught_exception_code;
                ++done_count;
            });
        rt.emit("throw", "", 0);

        // Errors are exceptions carrying the status and the library's message.
        try {
            rt.emit("bad\xff", "x", 1);
        } catch (const hostloop::Error &e) {
            check(e.status() == HL_STATUS_INVALID_UTF8, "INVALID_UTF8 is thrown");
            utf8_error = e.message();
        }

        pumps = pump_until(rt, [&] {
            return done_count == kJobs + 1 && messages >= 2 * kJobs + 1 && events == 1;
        });
        for (const hostloop::Job &job : jobs) {
            check(job.status() == HL_STATUS_OK, "Job::status");
            check(job.progress() > 0.99f, "Job::progress");
        }
        check(thrower.status() == HL_STATUS_FAILED, "the throwing job's status");
        // Batch mode: run_until drives the pump itself; a throwing condition reaches the caller.
        bool batch_done = false;
        Tracker batch_tracker;
        hostloop::Job batch = rt.spawn([batch_tracker](hostloop::JobContext &) -> int32_t { return 0; },
                                       [&](hl_status_t, int32_t) { batch_done = true; });
        const hostloop::RunReport run = rt.run_until([&] { return batch_done; },
                                                     std::chrono::milliseconds(2), std::chrono::seconds(60));
        check(run.finished && batch_done && run.pumps >= 1, "run_until ran the job's done");
        const hostloop::RunReport idle =
            rt.run_until([] { return false; }, std::chrono::milliseconds(2), std::chrono::milliseconds(20));
        check(!idle.finished, "run_until reports a timeout as finished == false");
        try {
            rt.run_until([]() -> bool { throw std::runtime_error("a bug in the condition"); },
                         std::chrono::milliseconds(2), std::chrono::seconds(60));
        } catch (const std::runtime_error &) {
            run_until_rethrew = true;
        }
        check(kept.size() == static_cast<std::size_t>(kJobs), "every array kept");
        for (const Kept &k : kept) {
            check(k.xyz[0] == k.first && k.xyz[4] == 1.0f, "a kept array is unchanged after its call");
        }
        kept.erase(kept.begin(), kept.begin() + kJobs / 2);  // released here; the rest after shutdown
        report = rt.shutdown(std::chrono::seconds(1));
        try {
            rt.pump();
            check(false, "pump after shutdown throws");
        } catch (const hostloop::Error &e) {
            check(e.status() == HL_STATUS_SHUT_DOWN, "pump after shutdown is SHUT_DOWN");
        }
    }  // ~Job frees the handles, ~Runtime frees the runtime: every boxed callable is destroyed.

    const uint64_t swallowed = hostloop::swallowed_exceptions() - swallowed_before;
    check(results == kJobs, "every job succeeded");
    check(failed_with_exception == 1, "a throwing run ends FAILED with uncaught_exception_code");
    check(arrays == kJobs, "one array per job");
    check(events == 1, "the custom event arrived");
    check(reentrant_errors == 1, "pump() inside the sink throws REENTRANT");
    check(off_main == 0, "callbacks ran on the main thread");
    check(!utf8_error.empty(), "the error carries the library's message");
    check(swallowed == 2 && handled_exceptions == 2, "two exceptions swallowed and handled");
    check(!report.timed_out && report.stragglers == 0, "shutdown in time");
    check(run_until_rethrew, "an exception in run_until's condition is rethrown to its caller");
    check(Tracker::live == 0, "every captured copy destroyed, live: " + std::to_string(Tracker::live));
    std::printf("hpp results=%d failed_with_exception=%d messages=%d arrays=%d events=%d pumps=%d\n",
                results, failed_with_exception, messages, arrays, events, pumps);
    std::printf("swallowed=%llu reentrant_errors=%d live_captures=%d timed_out=%d\n",
                static_cast<unsigned long long>(swallowed), reentrant_errors, Tracker::live.load(),
                report.timed_out ? 1 : 0);
    std::printf("utf8_error=%s\n", utf8_error.empty() ? "(none)" : "yes");
    if (failures != 0) {
        std::printf("hpp host: FAILED (%d checks)\n", failures);
        return 1;
    }
    std::printf("hpp host: OK\n");
    return 0;
}

// hostloop.hpp: "hostloop::Error with HL_STATUS_CANCELLED — what JobContext::check() throws —
// ends the job quietly as cancelled."
int cancel() {
    hostloop::Runtime rt(hostloop::Options().workers(1));
    std::atomic<bool> started{false};
    hl_status_t done_status = HL_STATUS_PENDING;
    int32_t done_code = -1;
    bool done = false;
    hostloop::Job job = rt.spawn(
        [&started](hostloop::JobContext &ctx) -> int32_t {
            started = true;
            const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
            while (std::chrono::steady_clock::now() < deadline) {
                ctx.check();
            }
            return 99;
        },
        [&](hl_status_t status, int32_t code) {
            done_status = status;
            done_code = code;
            done = true;
        });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!started) {
        if (std::chrono::steady_clock::now() > deadline) {
            std::printf("the job never started\n");
            return 1;
        }
    }
    job.cancel();
    pump_until(rt, [&] { return done; });
    std::printf("cancel done_status=%s done_code=%d job_status=%s\n", hostloop::status_name(done_status),
                static_cast<int>(done_code), hostloop::status_name(job.status()));
    check(done_status == HL_STATUS_CANCELLED, "done sees CANCELLED");
    check(job.status() == HL_STATUS_CANCELLED, "Job::status is CANCELLED");
    return failures == 0 ? 0 : 1;
}

// hostloop.hpp: past `Options::main_backlog_limit`, `emit` and `spawn` throw `Error` with
// HL_STATUS_BACKLOG while the host does not pump; `backlog()` says so; a pump frees the limit.
int backlog() {
    hostloop::Runtime rt(hostloop::Options().workers(1).main_backlog_limit(4));
    int admitted = 0;
    hl_status_t refused_with = HL_STATUS_OK;
    for (int i = 0; i < 10; i++) {
        try {
            rt.emit("backlog/msg", "x");
            admitted++;
        } catch (const hostloop::Error &e) {
            refused_with = e.status();
        }
    }
    hl_status_t spawn_refused_with = HL_STATUS_OK;
    try {
        hostloop::Job job = rt.spawn([](hostloop::JobContext &) -> int32_t { return 0; });
        (void)job;
    } catch (const hostloop::Error &e) {
        spawn_refused_with = e.status();
    }
    const hostloop::Backlog b = rt.backlog();
    std::printf("backlog admitted=%d refused_with=%s spawn_refused_with=%s queued=%llu limit=%llu "
                "refused=%llu\n",
                admitted, hostloop::status_name(refused_with), hostloop::status_name(spawn_refused_with),
                static_cast<unsigned long long>(b.queued), static_cast<unsigned long long>(b.limit),
                static_cast<unsigned long long>(b.refused));
    check(admitted == 4, "the limit admits 4");
    check(refused_with == HL_STATUS_BACKLOG, "emit past the limit throws BACKLOG");
    check(spawn_refused_with == HL_STATUS_BACKLOG, "spawn past the limit throws BACKLOG");
    check(b.queued == 4 && b.limit == 4 && b.refused == 7, "backlog() reports it");
    pump_until(rt, [&] { return rt.backlog().queued == 0; });
    rt.emit("backlog/msg", "x");  // admitted again: throws otherwise
    return failures == 0 ? 0 : 1;
}

// hostloop.hpp: `SpawnOptions{}.with_name(...).with_progress(...)` — a name without naming the
// other fields, and the job's progress on the main thread, coalesced, before its `done`.
int progress() {
    hostloop::Runtime rt(hostloop::Options().workers(2));
    const std::thread::id main_id = std::this_thread::get_id();
    constexpr int reports = 100000;
    int calls = 0, off_main = 0, after_done = 0, backwards = 0, pumps = 0;
    float last = -1.0f;
    bool done = false;
    hostloop::Job job = rt.spawn(
        [](hostloop::JobContext &ctx) -> int32_t {
            for (int i = 0; i <= reports; i++) {
                ctx.progress(static_cast<float>(i) / reports);
            }
            return 0;
        },
        [&](hl_status_t, int32_t) { done = true; },
        hostloop::SpawnOptions{}.with_name("progress-job").with_progress([&](float f) {
            calls++;
            off_main += std::this_thread::get_id() != main_id;
            after_done += done;
            backwards += f < last;
            last = f;
        }));
    pump_until(rt, [&] {
        pumps++;
        return done;
    });
    std::printf("progress calls=%d pumps=%d last=%.3f off_main=%d after_done=%d backwards=%d\n", calls,
                pumps, static_cast<double>(last), off_main, after_done, backwards);
    check(calls >= 1 && calls <= pumps, "progress is coalesced: at most one call per pump");
    check(last == 1.0f, "the last progress seen is the final one");
    check(off_main == 0 && after_done == 0 && backwards == 0, "on the main thread, before done, forward");
    const hostloop::SpawnOptions named = hostloop::SpawnOptions{}.with_name("only a name");
    check(named.priority == hostloop::Priority::normal && named.lane == hostloop::Lane::cpu &&
              named.name == "only a name" && !named.progress,
          "with_name keeps the other defaults");
    return failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char **argv) {
    try {
        if (argc == 2 && std::strcmp(argv[1], "cancel") == 0) {
            return cancel();
        }
        if (argc == 2 && std::strcmp(argv[1], "backlog") == 0) {
            return backlog();
        }
        if (argc == 2 && std::strcmp(argv[1], "progress") == 0) {
            return progress();
        }
        return host();
    } catch (const std::exception &e) {
        std::printf("uncaught exception: %s\n", e.what());
        return 1;
    }
}
