// `hostloop::Cache` (hostloop.hpp) over a frame cache: prints every frame as
// `tests/c/cache_read.c` does in its `read` mode (without the damage line's checks), the damage,
// and checks the wrapper's errors and moves.
//
// Usage: cache_hpp CACHE MISSING. Prints `cache_hpp: OK` and exits 0 when every check held.

#include "hostloop.hpp"

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <utility>

static int failures = 0;

static void check(bool cond, const char *what) {
    if (!cond) {
        ++failures;
        std::fprintf(stderr, "FAIL: %s\n", what);
    }
}

static uint64_t fnv1a64(const void *data, std::size_t len) {
    const auto *p = static_cast<const unsigned char *>(data);
    uint64_t h = 0xcbf29ce484222325u;
    for (std::size_t i = 0; i < len; ++i) {
        h ^= p[i];
        h *= 0x100000001b3u;
    }
    return h;
}

// The status an `Error` from `f` carries, or HL_STATUS_OK when nothing was thrown.
template <typename F> static hl_status_t thrown(F &&f) {
    try {
        f();
    } catch (const hostloop::Error &e) {
        return e.status();
    }
    return HL_STATUS_OK;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: cache_hpp CACHE MISSING\n");
        return 2;
    }
    hostloop::Cache cache = hostloop::Cache::open(argv[1]);
    const uint64_t n = cache.frame_count();
    std::printf("frames %" PRIu64 "\n", n);
    for (uint64_t i = 0; i < n; ++i) {
        const hostloop::CacheFrame f = cache.frame(i);
        std::printf("frame %" PRIu64 " step %" PRIu64 " topic ", i, f.step);
        std::fwrite(f.topic.data(), 1, f.topic.size(), stdout);
        std::printf(" payloads %zu\n", f.payloads.size());
        check(f.topic.data()[f.topic.size()] == '\0', "the topic is NUL-terminated");
        for (std::size_t j = 0; j < f.payloads.size(); ++j) {
            const hostloop::CachePayload &p = f.payloads[j];
            std::printf("payload %" PRIu64 " %zu %u %u %" PRIu64 " %zu %016" PRIx64 "\n", i, j,
                        static_cast<unsigned>(p.elem), static_cast<unsigned>(p.components),
                        p.count, p.len, fnv1a64(p.data, p.len));
            check(reinterpret_cast<std::uintptr_t>(p.data) % 64 == 0, "data is 64-byte aligned");
            check(p.is_bytes() == (p.elem == 0), "is_bytes");
            check((p.array_data<float>() != nullptr) == (p.elem == HL_ELEM_F32), "array_data<float>");
            check((p.array_data<uint32_t>() != nullptr) == (p.elem == HL_ELEM_U32),
                  "array_data<uint32_t>");
        }
    }
    const hostloop::CacheDamage d = cache.damage();
    std::printf("damage %u %" PRIu64 " %" PRIu64 " %u %u\n", d.damaged ? 1u : 0u, d.offset,
                d.file_len, static_cast<unsigned>(d.reason), static_cast<unsigned>(d.payload));

    // Errors are `hostloop::Error`s with the C status.
    check(thrown([&] { (void)cache.frame(n); }) == HL_STATUS_INVALID_ARG, "frame past the end");
    check(thrown([&] { hostloop::Cache missing(argv[2]); }) == HL_STATUS_FILE_NOT_FOUND,
          "a missing file");
    check(thrown([&] { hostloop::Cache none(static_cast<const char *>(nullptr)); }) ==
              HL_STATUS_NULL_ARG,
          "a NULL path");

    // Moves: one owner per handle; a moved-from cache owns nothing.
    hostloop::Cache moved = std::move(cache);
    check(!cache && static_cast<bool>(moved), "the handle moved");
    check(thrown([&] { (void)cache.frame_count(); }) == HL_STATUS_NULL_ARG, "moved-from");
    check(moved.verify() == n, "an intact cache verifies whole");
    hostloop::Cache adopted = hostloop::Cache::from_capi(moved.release());
    check(adopted.frame_count() == n, "release and from_capi");

    if (failures != 0) {
        std::printf("cache_hpp: %d failed checks\n", failures);
        return 1;
    }
    std::printf("cache_hpp: OK\n");
    return 0;
}
