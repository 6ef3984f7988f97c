// The C++ wrapper's isolation switch: `hostloop::LoadOptions` and `Plugin::load(rt, path,
// options)` run a plugin in a worker process; `Plugin::process()` says where; a missing worker
// program is an `Error` with HL_STATUS_WORKER naming it.
//
//     isolation_hpp WORKER PLUGIN
//
// Prints `key=value` lines that tests/tests/cpp.rs asserts on, and `isolation hpp: OK`.
#include <hostloop.hpp>

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: isolation_hpp <hostloop-worker> <plugin.so>\n");
        return 2;
    }
    try {
        hostloop::Runtime rt;
        hostloop::LoadOptions options;
        options.own_process().worker_program(argv[1]).echo_stderr(false);
        {
            hostloop::Plugin plugin = hostloop::Plugin::load(rt, argv[2], options);
            const hostloop::PluginProcess p = plugin.process();
            std::printf("isolation=%u\n", static_cast<unsigned>(p.isolation));
            std::printf("in_worker=%d\n", p.pid != 0 && static_cast<pid_t>(p.pid) != getpid());
            std::printf("crashes=%u\n", static_cast<unsigned>(p.crashes));
            std::printf("name=%s\n", plugin.info().name.c_str());
            const hostloop::UnloadReport r = plugin.unload();
            std::printf("unload_timed_out=%d\n", r.timed_out ? 1 : 0);
        }
        hostloop::LoadOptions missing;
        missing.own_process().worker_program("/nonexistent/hostloop-worker");
        try {
            (void)hostloop::Plugin::load(rt, argv[2], missing);
            std::printf("missing_worker=loaded\n");
        } catch (const hostloop::Error &e) {
            std::printf("missing_worker=%s\n", hl_status_name(e.status()));
            std::printf("missing_worker_named=%d\n",
                        std::strstr(e.message(), "/nonexistent/hostloop-worker") != nullptr);
        }
    } catch (const std::exception &e) {
        std::printf("uncaught exception: %s\n", e.what());
        return 1;
    }
    std::printf("isolation hpp: OK\n");
    return 0;
}
