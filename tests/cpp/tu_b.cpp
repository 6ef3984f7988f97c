// The other translation unit (see tu_a.cpp); it has main().
#include "hostloop.hpp"
#include "hostloop.hpp"

#include <poll.h>

#include <chrono>
#include <cstdio>
#include <string>

void tu_a_on_swallowed(std::exception_ptr, const char *);
hostloop::Job tu_a_spawn(const hostloop::Runtime &rt, int *done);
std::string tu_a_status_name();
hostloop::ExceptionHandler tu_a_install_handler();

int main() {
    int failures = 0;
    // The exception handler is one inline variable for the whole program: set in tu_a, read here.
    tu_a_install_handler();
    if (hostloop::set_exception_handler(nullptr) != &tu_a_on_swallowed) {
        std::printf("FAIL the handler installed in tu_a is not the one seen in tu_b\n");
        ++failures;
    }
    if (tu_a_status_name() != hostloop::status_name(HL_STATUS_SHUT_DOWN)) {
        ++failures;
    }
    int done = 0;
    {
        hostloop::Runtime rt(hostloop::Options().workers(1));
        hostloop::Job job = tu_a_spawn(rt, &done);
        const int fd = rt.wake_fd();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
        while (done == 0 && std::chrono::steady_clock::now() < deadline) {
            pollfd p{fd, POLLIN, 0};
            poll(&p, 1, 16);
            rt.pump();
        }
        if (done != 1 || job.status() != HL_STATUS_OK) {
            std::printf("FAIL the job from tu_a did not finish OK\n");
            ++failures;
        }
    }
    std::printf("two_tus=%s\n", failures == 0 ? "OK" : "FAILED");
    return failures == 0 ? 0 : 1;
}
