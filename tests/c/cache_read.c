/*
 * Frame caches read from C through hostloop/cache.h.
 *
 * Usage:
 *   cache_read read PATH...     every frame of every cache, its data verified (`verify` = 1)
 *   cache_read scrub PATH...    the same with `verify` = 0 (headers only, data as it is)
 *   cache_read verify PATH...   `hl_cache_verify` first, then as `read`
 *   cache_read threads PATH     four threads read every frame at once while the main thread
 *                               verifies the cache; they must see the same bytes
 *   cache_read bad CACHE TEXT MISSING NEWER
 *                               every bad input: NULLs, bad paths, a text file, a cache of a
 *                               newer format, stale handles, indices past the end
 *
 * For each PATH (numbered from 0) the dump modes print
 *
 *   file <k>
 *   open <STATUS> <hl_last_error()>                  when it does not open; else:
 *   verified <frames left>                           (verify mode)
 *   frames <n>
 *   frame <i> step <step> topic <topic> payloads <p> or   frame <i> <STATUS> <hl_last_error()>
 *   payload <i> <j> <elem> <components> <count> <len> <FNV-1a 64 of the data, hex>
 *   damage <damaged> <offset> <file_len> <reason> <payload>
 *
 * Every mode ends with `misaligned=<n> bad_topics=<n>` (data not 64-byte aligned, topics not
 * NUL-terminated at `topic_len`) and `cache_read: OK`; it exits non-zero on any failed check.
 */
#define _POSIX_C_SOURCE 200809L

#include "common.h"

#include <inttypes.h>
#include <stdint.h>
#include <string.h>

static int misaligned;
static int bad_topics;

/* CHECKs that `call` returns `want`, and that hl_last_error() says something exactly when it
 * failed. */
#define EXPECT(call, want)                                                                     \
    do {                                                                                       \
        hl_status_t st_ = (call);                                                              \
        const char *err_ = hl_last_error();                                                    \
        CHECK(st_ == (want), "%s returned %s, expected %s: %s", #call, hl_status_name(st_),    \
              hl_status_name(want), err_);                                                     \
        CHECK((st_ == HL_STATUS_OK) == (err_[0] == '\0'), "%s: %s with last error \"%s\"",     \
              #call, hl_status_name(st_), err_);                                               \
    } while (0)

static uint64_t fnv1a64(const void *data, size_t len) {
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3u;
    }
    return h;
}

static void print_damage(const hl_cache_t *cache) {
    hl_cache_damage_t d;
    memset(&d, 0xab, sizeof d);
    d.struct_size = sizeof d;
    CHECK_OK(hl_cache_damage(cache, &d));
    CHECK(d.struct_size == sizeof d, "damage.struct_size %u", (unsigned)d.struct_size);
    CHECK(d.damaged || (d.offset == 0 && d.file_len == 0 && d.reason == HL_CACHE_DAMAGE_NONE &&
                        d.payload == 0),
          "an undamaged cache reports zeros");
    printf("damage %u %" PRIu64 " %" PRIu64 " %u %u\n", (unsigned)d.damaged, d.offset, d.file_len,
           (unsigned)d.reason, (unsigned)d.payload);
}

/* Prints frame `i` (and its payloads); returns the FNV of its data folded together, or 0 when
 * it does not read. */
static uint64_t dump_frame(const hl_cache_t *cache, uint64_t i, uint32_t verify, int print) {
    hl_cache_frame_t f;
    memset(&f, 0, sizeof f);
    f.struct_size = sizeof f;
    hl_status_t st = hl_cache_frame(cache, i, verify, &f);
    if (st != HL_STATUS_OK) {
        if (print) {
            printf("frame %" PRIu64 " %s %s\n", i, hl_status_name(st), hl_last_error());
        }
        CHECK(f.topic == NULL && f.step == 0, "frame %" PRIu64 ": out-param written on failure",
              i);
        return 0;
    }
    CHECK(f.payload_count >= 1, "frame %" PRIu64 " has no payload", i);
    if (f.topic == NULL || f.topic[f.topic_len] != '\0') {
        bad_topics++;
    }
    if (print) {
        printf("frame %" PRIu64 " step %" PRIu64 " topic ", i, f.step);
        fwrite(f.topic, 1, f.topic_len, stdout);
        printf(" payloads %u\n", (unsigned)f.payload_count);
    }
    uint64_t all = 0;
    for (uint32_t j = 0; j < f.payload_count; j++) {
        hl_cache_payload_t p;
        memset(&p, 0, sizeof p);
        p.struct_size = sizeof p;
        st = hl_cache_payload(cache, i, j, &p);
        if (st != HL_STATUS_OK) {
            CHECK(0, "payload %" PRIu64 "/%u: %s %s", i, (unsigned)j, hl_status_name(st),
                  hl_last_error());
            continue;
        }
        if (p.data == NULL || (uintptr_t)p.data % 64 != 0) {
            misaligned++;
        }
        CHECK(p.reserved == 0, "payload reserved %u", (unsigned)p.reserved);
        uint64_t h = fnv1a64(p.data, p.len);
        all = all * 31 + h;
        if (print) {
            printf("payload %" PRIu64 " %u %u %u %" PRIu64 " %zu %016" PRIx64 "\n", i,
                   (unsigned)j, (unsigned)p.elem, (unsigned)p.components, p.count, p.len, h);
        }
    }
    return all;
}

static void dump(int k, const char *path, const char *mode) {
    printf("file %d\n", k);
    hl_cache_t *cache = NULL;
    hl_status_t st = hl_cache_open(path, &cache);
    if (st != HL_STATUS_OK) {
        printf("open %s %s\n", hl_status_name(st), hl_last_error());
        CHECK(cache == NULL, "hl_cache_open wrote its out-param on failure");
        return;
    }
    uint32_t verify = strcmp(mode, "scrub") != 0;
    if (strcmp(mode, "verify") == 0) {
        uint64_t left = UINT64_MAX;
        CHECK_OK(hl_cache_verify(cache, &left));
        printf("verified %" PRIu64 "\n", left);
    }
    uint64_t n = 0;
    CHECK_OK(hl_cache_frame_count(cache, &n));
    printf("frames %" PRIu64 "\n", n);
    for (uint64_t i = 0; i < n; i++) {
        dump_frame(cache, i, verify, 1);
    }
    print_damage(cache);
    CHECK_OK(hl_cache_free(cache));
}

/* ---- threads ----------------------------------------------------------------------------- */

#define THREADS 4

typedef struct {
    const hl_cache_t *cache;
    uint64_t frames;
    uint64_t sum;
} reader;

static void *read_all(void *arg) {
    reader *r = arg;
    for (int round = 0; round < 20; round++) {
        uint64_t sum = 0;
        for (uint64_t i = 0; i < r->frames; i++) {
            sum = sum * 131 + dump_frame(r->cache, i, 1, 0);
        }
        if (round > 0 && sum != r->sum) {
            r->sum = 0;
            return NULL;
        }
        r->sum = sum;
    }
    return NULL;
}

static void threads(const char *path) {
    hl_cache_t *cache = NULL;
    CHECK_OK(hl_cache_open(path, &cache));
    uint64_t n = 0;
    CHECK_OK(hl_cache_frame_count(cache, &n));
    reader readers[THREADS];
    pthread_t ids[THREADS];
    for (int t = 0; t < THREADS; t++) {
        readers[t] = (reader){cache, n, 0};
        CHECK(pthread_create(&ids[t], NULL, read_all, &readers[t]) == 0, "pthread_create");
    }
    for (int v = 0; v < 5; v++) {
        uint64_t left = 0;
        CHECK_OK(hl_cache_verify(cache, &left));
        CHECK(left == n, "an intact cache keeps its %" PRIu64 " frames: %" PRIu64, n, left);
    }
    int agree = 1;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(ids[t], NULL);
        agree &= readers[t].sum != 0 && readers[t].sum == readers[0].sum;
    }
    printf("threads=%d agree=%d\n", THREADS, agree);
    CHECK_OK(hl_cache_free(cache));
}

/* ---- bad input --------------------------------------------------------------------------- */

static void bad(const char *cache_path, const char *text, const char *missing, const char *newer) {
    hl_cache_t *const sentinel = (hl_cache_t *)(uintptr_t)0x5e17;
    hl_cache_t *c = sentinel;

    /* Opening. */
    EXPECT(hl_cache_open(NULL, &c), HL_STATUS_NULL_ARG);
    EXPECT(hl_cache_open(cache_path, NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_cache_open("\xff\xfe.hlcache", &c), HL_STATUS_INVALID_UTF8);
    EXPECT(hl_cache_open(missing, &c), HL_STATUS_FILE_NOT_FOUND);
    EXPECT(hl_cache_open(text, &c), HL_STATUS_INVALID_ARG);
    EXPECT(hl_cache_open(newer, &c), HL_STATUS_VERSION_MISMATCH);
    CHECK(c == sentinel, "a failed hl_cache_open left its out-param alone");

    EXPECT(hl_cache_open(cache_path, &c), HL_STATUS_OK);
    uint64_t n = 0;
    EXPECT(hl_cache_frame_count(c, &n), HL_STATUS_OK);
    CHECK(n >= 1, "the cache has frames: %" PRIu64, n);

    /* NULL out-parameters and wrongly sized structs. */
    EXPECT(hl_cache_frame_count(c, NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_cache_damage(c, NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_cache_frame(c, 0, 1, NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_cache_payload(c, 0, 0, NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_cache_verify(c, NULL), HL_STATUS_OK);
    hl_cache_damage_t d;
    memset(&d, 0, sizeof d);
    d.struct_size = 4;
    EXPECT(hl_cache_damage(c, &d), HL_STATUS_INVALID_ARG);
    CHECK(d.struct_size == 4, "a refused struct is not written");
    hl_cache_frame_t f;
    memset(&f, 0, sizeof f);
    EXPECT(hl_cache_frame(c, 0, 1, &f), HL_STATUS_INVALID_ARG); /* struct_size 0 */
    f.struct_size = sizeof f - 1;
    EXPECT(hl_cache_frame(c, 0, 1, &f), HL_STATUS_INVALID_ARG);
    hl_cache_payload_t p;
    memset(&p, 0, sizeof p);
    EXPECT(hl_cache_payload(c, 0, 0, &p), HL_STATUS_INVALID_ARG);

    /* Indices past the end. */
    f.struct_size = sizeof f;
    p.struct_size = sizeof p;
    EXPECT(hl_cache_frame(c, n, 1, &f), HL_STATUS_INVALID_ARG);
    EXPECT(hl_cache_frame(c, n, 0, &f), HL_STATUS_INVALID_ARG);
    EXPECT(hl_cache_frame(c, UINT64_MAX, 1, &f), HL_STATUS_INVALID_ARG);
    CHECK(f.topic == NULL, "a failed hl_cache_frame left its out-param alone");
    EXPECT(hl_cache_payload(c, n, 0, &p), HL_STATUS_INVALID_ARG);
    EXPECT(hl_cache_frame(c, 0, 1, &f), HL_STATUS_OK);
    EXPECT(hl_cache_payload(c, 0, f.payload_count, &p), HL_STATUS_INVALID_ARG);
    EXPECT(hl_cache_payload(c, 0, UINT32_MAX, &p), HL_STATUS_INVALID_ARG);
    CHECK(p.data == NULL, "a failed hl_cache_payload left its out-param alone");
    EXPECT(hl_cache_payload(c, 0, f.payload_count - 1, &p), HL_STATUS_OK);
    CHECK(p.data != NULL, "the last payload reads");

    /* NULL and made-up handles. */
    EXPECT(hl_cache_frame_count(NULL, &n), HL_STATUS_NULL_ARG);
    EXPECT(hl_cache_free(NULL), HL_STATUS_NULL_ARG);
    EXPECT(hl_cache_verify(NULL, &n), HL_STATUS_NULL_ARG);
    hl_cache_t *fake = (hl_cache_t *)(uintptr_t)0xfffffff0u;
    EXPECT(hl_cache_frame_count(fake, &n), HL_STATUS_INVALID_HANDLE);
    EXPECT(hl_cache_free(fake), HL_STATUS_INVALID_HANDLE);

    /* A freed handle is stale for good, even once a newer one exists. */
    EXPECT(hl_cache_free(c), HL_STATUS_OK);
    hl_cache_t *c2 = NULL;
    EXPECT(hl_cache_open(cache_path, &c2), HL_STATUS_OK);
    CHECK(c2 != c, "a new handle is not the freed one");
    EXPECT(hl_cache_frame_count(c, &n), HL_STATUS_INVALID_HANDLE);
    EXPECT(hl_cache_damage(c, &d), HL_STATUS_INVALID_HANDLE);
    EXPECT(hl_cache_frame(c, 0, 1, &f), HL_STATUS_INVALID_HANDLE);
    EXPECT(hl_cache_payload(c, 0, 0, &p), HL_STATUS_INVALID_HANDLE);
    EXPECT(hl_cache_verify(c, &n), HL_STATUS_INVALID_HANDLE);
    EXPECT(hl_cache_free(c), HL_STATUS_INVALID_HANDLE);
    EXPECT(hl_cache_frame_count(c2, &n), HL_STATUS_OK);
    EXPECT(hl_cache_free(c2), HL_STATUS_OK);
    printf("bad input checked\n");
}

int main(int argc, char **argv) {
    main_thread = pthread_self();
    if (argc < 3) {
        fprintf(stderr, "usage: cache_read read|scrub|verify|threads|bad PATH...\n");
        return 2;
    }
    const char *mode = argv[1];
    if (strcmp(mode, "bad") == 0) {
        if (argc != 6) {
            fprintf(stderr, "usage: cache_read bad CACHE TEXT MISSING NEWER\n");
            return 2;
        }
        bad(argv[2], argv[3], argv[4], argv[5]);
    } else if (strcmp(mode, "threads") == 0) {
        threads(argv[2]);
    } else if (strcmp(mode, "read") == 0 || strcmp(mode, "scrub") == 0 ||
               strcmp(mode, "verify") == 0) {
        for (int k = 2; k < argc; k++) {
            dump(k - 2, argv[k], mode);
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("misaligned=%d bad_topics=%d\n", misaligned, bad_topics);
    if (failures != 0) {
        printf("cache_read: %d failed checks\n", failures);
        return 1;
    }
    printf("cache_read: OK\n");
    return 0;
}
