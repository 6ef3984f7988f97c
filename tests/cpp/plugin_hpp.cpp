// A C++17 host loading tool plugins through include/hostloop.hpp: hostloop::Plugin loads,
// describes, hot-reloads and unloads them; errors are hostloop::Error; a moved-from Plugin is
// inert; a Plugin's destructor unloads it; a Plugin whose runtime was shut down is left with a
// dead handle that is harmless, even after the runtime is freed.
//
// Usage: plugin_hpp <cplugin.so> <counter_v1.so> <counter_v2.so> <missing.so>
//   cplugin.so     tests/fixtures/c/plugin.c: custom event "work" (uint32 n) -> n answers
//                  "cplugin/total" (uint64, the running total of n sums of 1..1000)
//   counter_v*.so  tests/fixtures/counter/plugin.rs: custom event "tick" -> "counter/step"
//                  [u32 build, u64 step, u64 value], little-endian; v1 adds 1, v2 adds 2
//   missing.so     a path with no file
// Prints `key=value` lines for tests/tests/cpp.rs and exits non-zero if a check failed.

#include "hostloop.hpp"

#include <poll.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

int failures = 0;

void check(bool ok, const std::string &what) {
    if (!ok) {
        ++failures;
        std::fprintf(stderr, "FAIL %s\n", what.c_str());
    }
}

/// What the sink received, in order. Touched on the main thread only (the sink runs at pumps).
struct Inbox {
    std::vector<std::pair<std::string, std::vector<uint8_t>>> messages;

    [[nodiscard]] std::size_t count(const std::string &topic) const {
        std::size_t n = 0;
        for (const auto &m : messages) {
            n += m.first == topic;
        }
        return n;
    }

    [[nodiscard]] const std::vector<uint8_t> *last(const std::string &topic) const {
        for (auto it = messages.rbegin(); it != messages.rend(); ++it) {
            if (it->first == topic) {
                return &it->second;
            }
        }
        return nullptr;
    }
};

template <typename T> T read_le(const std::vector<uint8_t> &bytes, std::size_t at) {
    T v = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) {
        v |= static_cast<T>(static_cast<T>(bytes.at(at + i)) << (8 * i));
    }
    return v;
}

/// Pumps until `done()` holds, waiting on the doorbell with a 16 ms frame timer. The 60 s bound
/// only fires on a hang: then it throws, and the program fails.
template <typename Done> void pump_until(hostloop::Runtime &rt, const char *what, Done done) {
    const int fd = rt.wake_fd();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) {
            throw std::runtime_error(std::string("timed out waiting for ") + what);
        }
        pollfd p{fd, POLLIN, 0};
        poll(&p, 1, 16);
        rt.pump(std::chrono::milliseconds(2));
    }
}

/// Posts "tick" to the counter plugin and returns its answer as "build/step/value".
std::string tick(hostloop::Runtime &rt, const Inbox &inbox) {
    const std::size_t before = inbox.count("counter/step");
    rt.post_custom("tick", nullptr, 0);
    pump_until(rt, "a counter/step answer", [&] { return inbox.count("counter/step") > before; });
    const std::vector<uint8_t> &m = *inbox.last("counter/step");
    if (m.size() != 20) {
        throw std::runtime_error("counter/step is 20 bytes, got " + std::to_string(m.size()));
    }
    return std::to_string(read_le<uint32_t>(m, 0)) + "/" + std::to_string(read_le<uint64_t>(m, 4)) + "/" +
           std::to_string(read_le<uint64_t>(m, 12));
}

/// Runs `f`, which must throw hostloop::Error; returns its status name ("none" if nothing was
/// thrown) and stores its message.
template <typename F> std::string thrown(F f, std::string *message = nullptr) {
    try {
        f();
    } catch (const hostloop::Error &e) {
        if (message != nullptr) {
            *message = e.message();
        }
        return hostloop::status_name(e.status());
    }
    return "none";
}

/// Sends the C plugin "work" for `n` items, waits for their `n` answers and for its pending work
/// to drain (its last item may still be winding down on a worker when its answer arrives), and
/// returns the plugin's running total.
uint64_t work(hostloop::Runtime &rt, const Inbox &inbox, const hostloop::Plugin &c, uint32_t n) {
    const std::size_t before = inbox.count("cplugin/total");
    rt.post_custom("work", &n, sizeof n);
    pump_until(rt, "cplugin/total answers", [&] { return inbox.count("cplugin/total") == before + n; });
    pump_until(rt, "the C plugin's pending work to drain", [&] { return c.info().pending == 0; });
    return read_le<uint64_t>(*inbox.last("cplugin/total"), 0);
}

/// Moves `p` through a move construction and a move assignment into a Plugin that is returned;
/// counts the NULL_ARG errors of the two moved-from objects' info/reload/unload (6 expected).
hostloop::Plugin move_twice(hostloop::Plugin p, const char *path, int *moved_from_errors) {
    hostloop::Plugin moved(std::move(p));
    hostloop::Plugin holder;
    holder = std::move(moved);  // into an empty Plugin: nothing to unload
    for (hostloop::Plugin *from : {&p, &moved}) {
        check(!*from && from->capi() == nullptr, "a moved-from Plugin owns nothing");
        *moved_from_errors += thrown([&] { (void)from->info(); }) == "HL_STATUS_NULL_ARG";
        *moved_from_errors += thrown([&] { from->reload(path); }) == "HL_STATUS_NULL_ARG";
        *moved_from_errors += thrown([&] { (void)from->unload(); }) == "HL_STATUS_NULL_ARG";
    }
    return holder;
}  // ~Plugin of the moved-from `p` and `moved`: they own nothing, nothing is unloaded.

/// Unloads `p` explicitly and prints the report.
void unload_and_print(hostloop::Plugin &p) {
    const hostloop::UnloadReport r = p.unload(std::chrono::seconds(5));
    const bool still_owns = static_cast<bool>(p);
    const std::string unload_again = thrown([&] { (void)p.unload(); });
    std::printf("unload_retired=%d unload_stragglers=%llu unload_timed_out=%d unloaded_owns=%d unload_again=%s\n",
                r.retired ? 1 : 0, static_cast<unsigned long long>(r.stragglers), r.timed_out ? 1 : 0,
                still_owns ? 1 : 0, unload_again.c_str());
    check(r.timeout_message.empty(), "no timeout message without a timeout");
}

int run(const char *c_path, const char *v1_path, const char *v2_path, const char *missing_path) {
    Inbox inbox;
    // Declared before the runtime, so it outlives it: its handle goes dead when the runtime shuts
    // down, and its destructor (run after ~Runtime) must be harmless.
    hostloop::Plugin outlives_runtime;
    hostloop::Runtime rt(hostloop::Options().workers(2).io_threads(1).thread_name("hpp-plugins"));
    rt.set_sink([&inbox](const hostloop::Message &m) {
        if (m.is_bytes()) {
            inbox.messages.emplace_back(std::string(m.topic()),
                                        std::vector<uint8_t>(m.bytes(), m.bytes() + m.bytes_len()));
        }
    });
    check(rt.plugin_stats().loaded == 0, "nothing loaded at first");

    // A missing file: hostloop::Error with FILE_NOT_FOUND and the library's message naming the path.
    std::string missing_message;
    const std::string missing_load =
        thrown([&] { (void)hostloop::Plugin::load(rt, missing_path); }, &missing_message);
    std::printf("missing_load=%s missing_names_path=%d\n", missing_load.c_str(),
                missing_message.find(missing_path) != std::string::npos ? 1 : 0);

    {
        // The C plugin, through the constructor. Unloaded by its destructor at the end of this block.
        hostloop::Plugin c(rt, c_path);
        const hostloop::PluginInfo ci = c.info();
        std::printf("c_name=%s c_version=%s c_generation=%u c_retain=%d c_path_ok=%d\n", ci.name.c_str(),
                    ci.version.c_str(), static_cast<unsigned>(ci.generation), ci.retains_image() ? 1 : 0,
                    ci.path == c_path ? 1 : 0);
        const uint64_t total = work(rt, inbox, c, 50);
        std::printf("c_answers=%zu c_total=%llu\n", inbox.count("cplugin/total"),
                    static_cast<unsigned long long>(total));

        {
            // The Rust counter, through the static factory; two plugins share the runtime.
            hostloop::Plugin counter = hostloop::Plugin::load(rt, v1_path);
            const hostloop::PluginInfo v1 = counter.info();
            std::printf("counter_name=%s counter_version=%s counter_retain=%d\n", v1.name.c_str(),
                        v1.version.c_str(), v1.retains_image() ? 1 : 0);
            std::string v1_ticks;
            for (int i = 0; i < 3; ++i) {
                v1_ticks += (i ? "," : "") + tick(rt, inbox);
            }
            std::printf("v1_ticks=%s\n", v1_ticks.c_str());

            // A second plugin of the same name is refused.
            const std::string twice = thrown([&] { (void)hostloop::Plugin::load(rt, v2_path); });
            std::printf("second_counter=%s\n", twice.c_str());

            // A reload from a missing file fails and v1 runs on.
            const std::string missing_reload = thrown([&] { counter.reload(missing_path); });
            const uint32_t failed_generation = counter.info().generation;
            const std::string t4 = tick(rt, inbox);
            std::printf("missing_reload=%s failed_reload_generation=%u after_failed_reload=%s\n",
                        missing_reload.c_str(), static_cast<unsigned>(failed_generation), t4.c_str());

            // v1 -> v2: the state carries over, the new build adds 2 per step.
            counter.reload(v2_path, std::chrono::seconds(5));
            const hostloop::PluginInfo v2 = counter.info();
            std::printf("reload_version=%s reload_generation=%u reload_path_ok=%d\n", v2.version.c_str(),
                        static_cast<unsigned>(v2.generation), v2.path == v2_path ? 1 : 0);
            check(v1.version == "1.0.0" && v1.path == v1_path, "the earlier PluginInfo is a copy");
            const std::string t5 = tick(rt, inbox);
            const std::string t6 = tick(rt, inbox);
            std::printf("v2_ticks=%s,%s\n", t5.c_str(), t6.c_str());

            // Moves: the moved-from objects own nothing, throw NULL_ARG and unload nothing.
            int moved_from_errors = 0;
            hostloop::Plugin holder = move_twice(std::move(counter), v1_path, &moved_from_errors);
            const bool moved_from_owns = static_cast<bool>(counter);
            const std::string t7 = tick(rt, inbox);
            std::printf("moved_from_errors=%d moved_from_owns=%d moved_tick=%s unloads_before=%llu\n",
                        moved_from_errors, moved_from_owns ? 1 : 0, t7.c_str(),
                        static_cast<unsigned long long>(rt.plugin_stats().unloads));

            // An explicit unload: a Rust image is retired; the object owns nothing afterwards.
            unload_and_print(holder);
        }  // ~Plugin of `counter` and `holder`: both own nothing.
        const hostloop::PluginStats mid = rt.plugin_stats();
        std::printf("counter_block_loaded=%llu counter_block_unloads=%llu\n",
                    static_cast<unsigned long long>(mid.loaded), static_cast<unsigned long long>(mid.unloads));
    }  // ~Plugin of `c` unloads the C plugin.

    const hostloop::PluginStats s = rt.plugin_stats();
    std::printf("after_destructor_loaded=%llu after_destructor_unloads=%llu\n",
                static_cast<unsigned long long>(s.loaded), static_cast<unsigned long long>(s.unloads));
    std::printf("stats_loads=%llu stats_reloads=%llu stats_failed_reloads=%llu stats_retired=%llu "
                "stats_closed=%llu stats_stragglers=%llu\n",
                static_cast<unsigned long long>(s.loads), static_cast<unsigned long long>(s.reloads),
                static_cast<unsigned long long>(s.failed_reloads),
                static_cast<unsigned long long>(s.images_retired),
                static_cast<unsigned long long>(s.images_closed), static_cast<unsigned long long>(s.stragglers));

    // The destructor freed the name: the C plugin loads again, as a fresh instance.
    hostloop::Plugin again(rt, c_path);
    std::printf("again_total=%llu\n", static_cast<unsigned long long>(work(rt, inbox, again, 1)));

    // Shutdown unloads what is still loaded (`again`, `outlives_runtime`): their handles go dead,
    // detected (handles are never reused).
    outlives_runtime = hostloop::Plugin::load(rt, v1_path);
    const hostloop::ShutdownReport shut = rt.shutdown(std::chrono::seconds(5));
    const hostloop::PluginStats after = rt.plugin_stats();
    std::printf("shutdown_timed_out=%d loaded_after_shutdown=%llu unloads_after_shutdown=%llu\n",
                shut.timed_out ? 1 : 0, static_cast<unsigned long long>(after.loaded),
                static_cast<unsigned long long>(after.unloads));
    const std::string dead_info = thrown([&] { (void)again.info(); });
    const std::string dead_unload = thrown([&] { (void)again.unload(); });
    std::printf("dead_info=%s dead_unload=%s dead_owns=%d\n", dead_info.c_str(), dead_unload.c_str(),
                again ? 1 : 0);
    const std::string load_after_shutdown = thrown([&] { (void)hostloop::Plugin::load(rt, c_path); });
    std::printf("load_after_shutdown=%s\n", load_after_shutdown.c_str());
    return 0;
}  // ~Runtime frees the runtime; then ~Plugin of `outlives_runtime` meets a dead handle.

}  // namespace

int main(int argc, char **argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: plugin_hpp <cplugin.so> <counter_v1.so> <counter_v2.so> <missing.so>\n");
        return 2;
    }
    try {
        run(argv[1], argv[2], argv[3], argv[4]);
    } catch (const std::exception &e) {
        std::printf("uncaught exception: %s\n", e.what());
        return 1;
    }
    if (failures != 0) {
        std::printf("plugin hpp: FAILED (%d checks)\n", failures);
        return 1;
    }
    std::printf("plugin hpp: OK\n");
    return 0;
}
