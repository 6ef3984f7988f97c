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

/** \brief One message to the sink. Borrowed: valid only during the sink callback. */
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
} hl_message_t;

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
