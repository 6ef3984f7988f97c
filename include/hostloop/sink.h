/**
 * \file hostloop/sink.h
 * \brief The host sink: messages from tools and jobs to the host, on the main thread.
 *
 * The host registers one sink callback. Tools send it a topic plus a payload: raw bytes, or a
 * typed array view (element type, components per record, count, stride) for frame data such as
 * particle positions. The host receives them during `hl_runtime_pump`, on the main thread; the
 * message and everything it points to are valid only for the duration of the callback (no copy
 * is made for messages emitted on the main thread).
 */
#ifndef HOSTLOOP_SINK_H
#define HOSTLOOP_SINK_H

#include "common.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/** \brief Element types of typed arrays (`hl_array_view_t::elem_type`). Fixed numbers. */
enum {
    HL_ELEM_U8 = 1,
    HL_ELEM_I32 = 2,
    HL_ELEM_U32 = 3,
    HL_ELEM_I64 = 4,
    HL_ELEM_U64 = 5,
    HL_ELEM_F32 = 6,
    HL_ELEM_F64 = 7
};

/** \brief Payload kinds (`hl_message_t::payload_kind`). */
enum {
    /** `bytes`/`bytes_len` hold opaque bytes. */
    HL_PAYLOAD_BYTES = 1,
    /** `array` holds a typed array view. */
    HL_PAYLOAD_ARRAY = 2
};

/**
 * \brief A typed, strided array: `count` records of `components` elements of `elem_type`, record
 * `i` starting at `(const char *)data + i * stride`. For xyz float positions:
 * `{HL_ELEM_F32, 3, n, 12, ptr, n * 12}`.
 */
typedef struct hl_array_view_t {
    uint32_t elem_type;
    uint32_t components;
    uint64_t count;
    uint64_t stride;
    const void *data;
    /** Bytes readable at `data`: at least `(count - 1) * stride + components * elem size`. */
    uint64_t byte_len;
} hl_array_view_t;

/**
 * \brief Keeps a message's payload alive past the sink call; see `hl_message_lend`, which is
 * how a host uses it. A plugin written in C may fill one in for its own frames.
 */
typedef struct hl_lender_t {
    void *data;
    /**
     * Returns a token that keeps the payload's memory allocated and unwritten until
     * `release(token)`, or NULL if it cannot now. Called only during the sink call. [main-thread]
     */
    void *(*retain)(void *data);
    /** Gives a token back. [any-thread] */
    void (*release)(void *token);
} hl_lender_t;

/**
 * \brief One message to the sink. Borrowed: valid only during the sink callback — unless the
 * sink keeps the payload with `hl_message_lend`.
 */
typedef struct hl_message_t {
    /** `sizeof(hl_message_t)` of the library that made it; fields past it are absent. */
    uint32_t struct_size;
    /** `HL_PAYLOAD_BYTES` or `HL_PAYLOAD_ARRAY`. */
    uint32_t payload_kind;
    /** The topic, UTF-8, NUL-terminated; `topic_len` excludes the NUL. */
    const char *topic;
    size_t topic_len;
    /** For `HL_PAYLOAD_BYTES`: the bytes (NULL when empty). */
    const uint8_t *bytes;
    size_t bytes_len;
    /** For `HL_PAYLOAD_ARRAY`: the view. */
    hl_array_view_t array;
    /**
     * Who can keep the payload past the call, or NULL. Added after the first layout: read it
     * only when `struct_size` covers it (hostloop's messages always do). Hosts use
     * `hl_message_lend` rather than this field.
     */
    const hl_lender_t *lender;
} hl_message_t;

/** \brief A payload kept past its sink call (`hl_message_lend`). */
typedef struct hl_lease_t hl_lease_t;

/**
 * \brief Keeps the payload of `message` — the sink's own message, from inside the sink call —
 * valid past the call: its `bytes` or `array.data`, at the addresses the message gives, stay
 * allocated and unchanged until `hl_lease_release`. A viewer can then upload a frame straight
 * from hostloop's memory after the pump returns instead of copying it inside the sink (a pump
 * never splits an item, so a 12 MB copy there overruns a 2 ms budget). The topic is not kept:
 * copy it if you need it.
 *
 * Lendable: frames a simulation emits as shared buffers (the particles example, in-process
 * or as a plugin) and payloads sent with `hl_runtime_emit`/`hl_runtime_emit_array`. While a
 * lease is held the producer writes its next frames elsewhere (one allocation per frame while
 * you hold one across frames, none when you release it before the frame after next). A lease
 * on a plugin's frame does not hold up an unload or reload of the plugin; the old library then
 * stays mapped for good (its code releases the lease), as a retired image.
 *
 * \return the lease, or NULL: the payload is borrowed for the call only (copy what you need),
 * `message` is NULL, or the producer cannot lend now (the plugin is unloading);
 * `hl_last_error` says which.
 *
 * [main-thread], inside the sink callback only.
 */
hl_lease_t *hl_message_lend(const hl_message_t *message);

/** \brief Releases a lease; NULL is ignored. Each lease exactly once. [any-thread] */
void hl_lease_release(hl_lease_t *lease);

/**
 * \brief The sink callback. Runs on the main thread during `hl_runtime_pump`. It may call
 * `[main-thread]` functions except `hl_runtime_pump` (REENTRANT); it must not throw.
 *
 * [main-thread]
 */
typedef void (*hl_sink_fn)(void *user_data, const hl_message_t *message);

/**
 * \brief Registers the host sink, replacing (and finalizing) any previous one; `fn` NULL
 * removes it. Messages emitted while no sink is registered are dropped and counted in
 * `hl_stats_t::sink_dropped`.
 *
 * \param finalize  called once with `user_data` when the sink is replaced, removed or the
 *                  runtime is freed, on the main thread; may be NULL.
 * \return NULL_ARG (rt); INVALID_HANDLE; WRONG_THREAD; SHUT_DOWN.
 *
 * [main-thread]
 */
hl_status_t hl_runtime_set_sink(hl_runtime_t *rt, hl_sink_fn fn, void *user_data,
                                hl_finalizer_fn finalize);

/**
 * \brief Sends bytes to the sink. The topic and bytes are copied; the sink receives them at
 * the next pump.
 *
 * \param topic  NUL-terminated UTF-8; not NULL.
 * \param bytes  may be NULL only when `len` is 0.
 * \return NULL_ARG; INVALID_HANDLE; INVALID_UTF8 (topic); SHUT_DOWN; OUT_OF_MEMORY (no memory
 * for the copy of `len` bytes, checked before they are read; e.g. `len == SIZE_MAX`); BACKLOG
 * (the host has not pumped and the main-thread backlog is at its limit — in messages, or in
 * 256 MiB of payloads waiting: nothing was queued).
 *
 * [any-thread]
 */
hl_status_t hl_runtime_emit(hl_runtime_t *rt, const char *topic, const void *bytes, size_t len);

/**
 * \brief Sends a typed array to the sink. The records are copied (packed, so the sink sees
 * `stride == components * elem size`); the sink receives them at the next pump.
 *
 * \param view  not NULL; its `data` may be NULL only when `count` is 0.
 * \return NULL_ARG; INVALID_HANDLE; INVALID_UTF8; INVALID_ARG (unknown element type, zero
 * components, stride smaller than a record, records not within `byte_len`); SHUT_DOWN;
 * OUT_OF_MEMORY (no memory for the packed copy); BACKLOG (as `hl_runtime_emit`).
 *
 * [any-thread]
 */
hl_status_t hl_runtime_emit_array(hl_runtime_t *rt, const char *topic,
                                  const hl_array_view_t *view);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_SINK_H */
