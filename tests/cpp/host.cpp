// A C++17 host on the plain C API (include/hostloop.h, no wrapper): jobs whose user_data are C++
// objects, a sink, a poll()-driven pump loop. Callbacks are noexcept functions: exceptions must
// never unwind into hostloop.
//
// Prints `key=value` lines for tests/tests/cpp.rs and exits non-zero if a check failed.

#include "hostloop.h"

#include <poll.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kJobs = 8;
int failures = 0;
std::thread::id main_thread;

void check(bool ok, const std::string &what) {
    if (!ok) {
        ++failures;
        std::fprintf(stderr, "FAIL %s\n", what.c_str());
    }
}

void check_ok(hl_status_t st, const char *call) {
    check(st == HL_STATUS_OK,
          std::string(call) + " returned " + hl_status_name(st) + ": " + hl_last_error());
}

#define CHECK_OK(call) check_ok((call), #call)

struct Job {
    int index = 0;
    std::string result;  // written by run, read by done (on the main thread, after run)
    hl_status_t status = HL_STATUS_PENDING;
    bool done_on_main = false;
    std::atomic<int> finalized{0};
};

int done_count = 0;

int32_t run_job(void *user_data, hl_job_ctx_t *ctx) noexcept {
    auto *job = static_cast<Job *>(user_data);
    try {
        std::string s;
        for (int i = 0; i <= job->index; ++i) {
            if (hl_job_ctx_check(ctx) != HL_STATUS_OK) {
                return 1;
            }
            s += std::to_string(i);
        }
        hl_job_ctx_progress(ctx, 1.0f);
        job->result = std::move(s);
        return 0;
    } catch (...) {
        return 2;  // never let an exception reach hostloop
    }
}

void job_done(void *user_data, hl_status_t status, int32_t) noexcept {
    auto *job = static_cast<Job *>(user_data);
    job->status = status;
    job->done_on_main = std::this_thread::get_id() == main_thread;
    ++done_count;
}

void job_finalize(void *user_data) noexcept {
    static_cast<Job *>(user_data)->finalized.fetch_add(1);
}

struct Sink {
    std::vector<std::string> topics;
    bool on_main = true;
    std::atomic<int> finalized{0};
};

void on_message(void *user_data, const hl_message_t *m) noexcept {
    auto *sink = static_cast<Sink *>(user_data);
    sink->on_main = sink->on_main && std::this_thread::get_id() == main_thread;
    try {
        sink->topics.emplace_back(m->topic, m->topic_len);
    } catch (...) {
        ++failures;
    }
}

void sink_finalize(void *user_data) noexcept {
    static_cast<Sink *>(user_data)->finalized.fetch_add(1);
}

}  // namespace

int main() {
    main_thread = std::this_thread::get_id();
    hl_runtime_options_t options{};
    CHECK_OK(hl_runtime_options_init(&options));
    options.workers = 2;
    hl_runtime_t *rt = nullptr;
    CHECK_OK(hl_runtime_new(&options, &rt));
    if (rt == nullptr) {
        return 1;
    }
    int fd = -1;
    CHECK_OK(hl_runtime_wake_fd(rt, &fd));
    Sink sink;
    CHECK_OK(hl_runtime_set_sink(rt, on_message, &sink, sink_finalize));

    std::vector<std::unique_ptr<Job>> jobs;
    std::vector<hl_job_t *> handles;
    for (int i = 0; i < kJobs; ++i) {
        jobs.push_back(std::make_unique<Job>());
        jobs.back()->index = i;
        hl_job_desc_t desc{};
        desc.struct_size = sizeof desc;
        desc.priority = HL_PRIORITY_NORMAL;
        desc.lane = HL_LANE_CPU;
        desc.name = "cpp-job";
        desc.run = run_job;
        desc.done = job_done;
        desc.user_data = jobs.back().get();
        desc.finalize = job_finalize;
        hl_job_t *handle = nullptr;
        CHECK_OK(hl_job_spawn(rt, &desc, &handle));
        handles.push_back(handle);
    }
    const std::string topic = "cpp/hello";
    CHECK_OK(hl_runtime_emit(rt, topic.c_str(), topic.data(), topic.size()));

    int pumps = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (done_count < kJobs || sink.topics.empty()) {
        if (std::chrono::steady_clock::now() > deadline) {
            check(false, "the loop timed out");
            break;
        }
        pollfd p{fd, POLLIN, 0};
        poll(&p, 1, 16);
        hl_pump_report_t report{};
        report.struct_size = sizeof report;
        CHECK_OK(hl_runtime_pump(rt, 2000, &report));
        ++pumps;
    }

    int results = 0;
    for (const auto &job : jobs) {
        std::string expected;
        for (int i = 0; i <= job->index; ++i) {
            expected += std::to_string(i);
        }
        check(job->status == HL_STATUS_OK, "job status " + std::string(hl_status_name(job->status)));
        check(job->done_on_main, "done ran off the main thread");
        check(job->result == expected, "job result " + job->result);
        results += job->status == HL_STATUS_OK && job->result == expected;
    }
    for (hl_job_t *handle : handles) {
        float progress = 0;
        CHECK_OK(hl_job_progress(handle, &progress));
        check(progress == 1.0f, "progress " + std::to_string(progress));
        CHECK_OK(hl_job_free(handle));
    }
    check(sink.on_main, "the sink ran off the main thread");
    check(sink.topics.size() == 1 && sink.topics[0] == topic, "sink topics");

    hl_shutdown_report_t down{};
    down.struct_size = sizeof down;
    CHECK_OK(hl_runtime_shutdown(rt, 1000, &down));
    CHECK_OK(hl_runtime_free(rt));

    int finalized = sink.finalized.load();
    for (const auto &job : jobs) {
        check(job->finalized.load() == 1, "a job finalized " + std::to_string(job->finalized.load()) + " times");
        finalized += job->finalized.load();
    }
    std::printf("cpp results=%d sink_messages=%zu pumps=%d finalized=%d stragglers=%llu\n", results,
                sink.topics.size(), pumps, finalized,
                static_cast<unsigned long long>(down.stragglers));
    if (failures != 0) {
        std::printf("cpp host: FAILED (%d checks)\n", failures);
        return 1;
    }
    std::printf("cpp host: OK\n");
    return 0;
}
