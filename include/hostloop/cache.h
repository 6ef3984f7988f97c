/**
 * \file hostloop/cache.h
 * \brief Frame caches read from C: the files of frames a simulation (the farm runner,
 * `hostloop-worker run --cache`, or a Rust `hostloop::cache::CacheWriter`) appends, read back
 * by memory map.
 *
 * A cache is one file of frames, each a step number, a topic (the sink topic the frame would
 * have had live, e.g. `particles/positions`) and one or more payloads: opaque bytes or typed
 * arrays, exactly what an `hl_message_t` carries. `hl_cache_open` maps the file and reads only
 * the frames' headers; `hl_cache_payload` hands out each payload as a pointer into the map —
 * no copy, no load step, 64-byte aligned — so a host can scrub a cache far larger than its
 * memory: the kernel pages in the frames looked at.
 *
 * \section cache_damage Damage
 *
 * A writer killed mid-frame leaves a torn last frame; a disk or a copy can corrupt bytes
 * anywhere. Opening never trusts a length it has not checked against the file: the frames
 * before the first damaged header are the cache, and `hl_cache_damage` says where and why the
 * rest was cut off. A frame whose header is intact but whose data is not is reported when it is
 * read with `verify` (`hl_cache_frame`: FAILED); `hl_cache_verify` checks every frame up front
 * and cuts the cache at the first bad one.
 *
 * \section cache_lifetime Lifetimes and threads
 *
 * Every function is `[any-thread]` and needs no runtime. The pointers handed out (topics,
 * payload data) are borrowed from the handle and stay valid until `hl_cache_free` — also after
 * `hl_cache_verify` cut the cache. The map is a shared mapping of the file: if another process
 * shrinks the file while it is open, touching the lost pages raises `SIGBUS`, as with any
 * mapped file, so do not truncate a cache that is being read (hostloop's writers only append).
 */
#ifndef HOSTLOOP_CACHE_H
#define HOSTLOOP_CACHE_H

#include "common.h"
#include "sink.h"

#ifdef __cplusplus
extern "C" {
#endif

/** \brief An open frame cache: its map, its frames' headers and its damage, if any. */
typedef struct hl_cache_t hl_cache_t;

/** \brief Why a cache's tail was not read (`hl_cache_damage_t::reason`). Fixed numbers. */
enum {
    /** Nothing was cut: every byte of the file was read as frames. */
    HL_CACHE_DAMAGE_NONE = 0,
    /** The file ends inside a frame: a writer stopped mid-frame. */
    HL_CACHE_DAMAGE_TRUNCATED = 1,
    /** The bytes where a frame should start are not a valid frame header (wrong magic, a
     * checksum that does not match, lengths that do not add up). */
    HL_CACHE_DAMAGE_BAD_HEADER = 2,
    /** The frame's header is intact, its data is not (`hl_cache_verify` found it). */
    HL_CACHE_DAMAGE_BAD_DATA = 3
};

/** \brief Where a cache stops being readable, and why (`hl_cache_damage`). */
typedef struct hl_cache_damage_t {
    /** `sizeof(hl_cache_damage_t)`: set it before the call. */
    uint32_t struct_size;
    /** Non-zero when the cache was cut short; then the fields below say where and why. 0: the
     * whole file is frames, and the fields below are 0. */
    uint32_t damaged;
    /** The byte offset of the first frame that was not taken; the frames before it are the
     * cache. */
    uint64_t offset;
    /** The file's length when it was opened. */
    uint64_t file_len;
    /** `HL_CACHE_DAMAGE_*`. */
    uint32_t reason;
    /** For `HL_CACHE_DAMAGE_BAD_DATA`: which payload of the frame failed its checksum; else 0. */
    uint32_t payload;
} hl_cache_damage_t;

/** \brief One frame's header (`hl_cache_frame`). */
typedef struct hl_cache_frame_t {
    /** `sizeof(hl_cache_frame_t)`: set it before the call. */
    uint32_t struct_size;
    /** The frame's payloads, at least 1: `hl_cache_payload` takes indices below this. */
    uint32_t payload_count;
    /** The simulation step. */
    uint64_t step;
    /** The topic, UTF-8 and NUL-terminated; `topic_len` excludes the NUL (a topic holding a
     * NUL of its own is longer than `strlen` says). Owned by the cache: valid until
     * `hl_cache_free`. */
    const char *topic;
    size_t topic_len;
} hl_cache_frame_t;

/** \brief One payload of a frame (`hl_cache_payload`): a view into the cache's map. */
typedef struct hl_cache_payload_t {
    /** `sizeof(hl_cache_payload_t)`: set it before the call. */
    uint32_t struct_size;
    /** 0 for opaque bytes, else the array's `HL_ELEM_*` (`hostloop/sink.h`). */
    uint32_t elem;
    /** Elements per record (1 for bytes). */
    uint32_t components;
    /** 0. */
    uint32_t reserved;
    /** Records (bytes: the byte count), packed: `len == count * components * elem size`. */
    uint64_t count;
    /** The data: never NULL, a multiple of 64 bytes from a page-aligned map (so aligned for
     * any element type and for vector loads), `len` readable bytes. Owned by the cache:
     * valid until `hl_cache_free`. */
    const void *data;
    size_t len;
} hl_cache_payload_t;

/**
 * \brief Opens the frame cache at `path`: maps the file and reads the header of every frame
 * (nothing of their data). A torn or damaged tail is cut off and reported by
 * `hl_cache_damage`, not returned as an error.
 * \param path   the file, NUL-terminated UTF-8; not NULL.
 * \param cache  not NULL; receives the handle on success (free it with `hl_cache_free`).
 * \return OK; NULL_ARG; INVALID_UTF8 (path); FILE_NOT_FOUND (no file at `path`); OS (the file
 * cannot be opened or mapped, e.g. no permission or a directory; see `hl_last_error()`);
 * INVALID_ARG (the file is not a frame cache: no valid cache header, e.g. another kind of file
 * or one cut within its first 64 bytes); VERSION_MISMATCH (a cache format this library does
 * not read).
 * [any-thread]
 */
hl_status_t hl_cache_open(const char *path, hl_cache_t **cache);

/**
 * \brief Unmaps the cache and frees the handle. Every pointer it handed out (topics, payload
 * data) is invalid afterwards: do not free a cache other threads are still reading.
 * \return OK; NULL_ARG; INVALID_HANDLE (freed already, or never made by hostloop).
 * [any-thread]
 */
hl_status_t hl_cache_free(hl_cache_t *cache);

/**
 * \brief The number of readable frames: the frames before any damage (and before the frame
 * `hl_cache_verify` cut at).
 * \param count  not NULL.
 * \return OK; NULL_ARG; INVALID_HANDLE.
 * [any-thread]
 */
hl_status_t hl_cache_frame_count(const hl_cache_t *cache, uint64_t *count);

/**
 * \brief Where and why the cache stopped being readable, if it did: a cache "reads up to its
 * last good frame and says so".
 * \param damage  not NULL; `struct_size` set by the caller.
 * \return OK; NULL_ARG; INVALID_HANDLE; INVALID_ARG (damage too small).
 * [any-thread]
 */
hl_status_t hl_cache_damage(const hl_cache_t *cache, hl_cache_damage_t *damage);

/**
 * \brief Reads every frame's data and checks its checksums; at the first frame that fails,
 * the cache is cut there (it and the frames after it are no longer readable) and the damage
 * recorded (`HL_CACHE_DAMAGE_BAD_DATA`). This reads the whole file; calls on other threads
 * wait while it runs, and see the cache either before or after the cut. Pointers handed out
 * before stay valid.
 * \param frames_left  NULL, or receives the number of frames left.
 * \return OK (damaged data is not an error: see `hl_cache_damage`); NULL_ARG; INVALID_HANDLE.
 * [any-thread]
 */
hl_status_t hl_cache_verify(hl_cache_t *cache, uint64_t *frames_left);

/**
 * \brief Frame `index`'s step, topic and number of payloads.
 * \param index   0 to `hl_cache_frame_count() - 1`, in file order.
 * \param verify  non-zero: read the frame's data and check it against its checksums first
 *                (this reads the whole frame); 0: the header only (checked at open), for
 *                scrubbing a large cache where only the pages drawn are read — damaged data
 *                then reads as whatever the bytes are, still bounded by the frame.
 * \param frame   not NULL; `struct_size` set by the caller.
 * \return OK; NULL_ARG; INVALID_HANDLE; INVALID_ARG (index past the end, frame too small);
 * FAILED (with `verify`: the frame's data does not match its checksum — `hl_last_error()`
 * names the frame, its offset and the payload; the other frames still read).
 * [any-thread]
 */
hl_status_t hl_cache_frame(const hl_cache_t *cache, uint64_t index, uint32_t verify,
                           hl_cache_frame_t *frame);

/**
 * \brief Payload `index` of frame `frame`: its type, shape and data, a pointer into the map.
 * The data's checksum is not checked here: read the frame with `hl_cache_frame` and `verify`
 * first (or call `hl_cache_verify`) to know it is intact.
 * \param payload  not NULL; `struct_size` set by the caller.
 * \return OK; NULL_ARG; INVALID_HANDLE; INVALID_ARG (frame or payload index past the end,
 * payload too small).
 * [any-thread]
 */
hl_status_t hl_cache_payload(const hl_cache_t *cache, uint64_t frame, uint32_t index,
                             hl_cache_payload_t *payload);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_CACHE_H */
