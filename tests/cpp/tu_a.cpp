// One of two translation units that both include hostloop.hpp twice and link into one program
// (with tu_b.cpp): everything in the header must be inline, include-guarded and ODR-safe.
#include "hostloop.hpp"
#include "hostloop.hpp"

#include <string>

// Defined here, used by tu_b.cpp.
void tu_a_on_swallowed(std::exception_ptr, const char *) {}

hostloop::Job tu_a_spawn(const hostloop::Runtime &rt, int *done) {
    return rt.spawn([](hostloop::JobContext &ctx) -> int32_t {
                        ctx.progress(1.0f);
                        return 0;
                    },
                    [done](hl_status_t status, int32_t) { *done = status == HL_STATUS_OK ? 1 : -1; },
                    hostloop::SpawnOptions(hostloop::Priority::normal, hostloop::Lane::cpu, "tu-a"));
}

std::string tu_a_status_name() { return hostloop::status_name(HL_STATUS_SHUT_DOWN); }

hostloop::ExceptionHandler tu_a_install_handler() {
    return hostloop::set_exception_handler(tu_a_on_swallowed);
}
