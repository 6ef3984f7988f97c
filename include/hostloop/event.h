/**
 * \file hostloop/event.h
 * \brief Host events: what happened in the host (frame changed, selection changed, scene
 * opened/saved, playback, shutdown requested, custom topics), fanned out to subscribers.
 *
 * Subscribers registered here (and Rust tools' main-thread subscribers) receive events at the
 * next pump, on the main thread; background subscribers in Rust receive them at once. Each
 * event is one main-thread item: a pump delivers events in order until its budget is spent and
 * leaves the rest to the next pump, and `hl_pump_report_t.ran` / `.remaining` and
 * `hl_stats_t.queued_main` count events one by one.
 * High-frequency events coalesce between two pumps: subscribers see only the latest
 * `FRAME_CHANGED`, the latest `SELECTION_CHANGED`, and the latest custom event of each topic
 * posted with `coalesce` set.
 */
#ifndef HOSTLOOP_EVENT_H
#define HOSTLOOP_EVENT_H

#include "common.h"
#include "runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/** \brief Event kinds (`hl_event_t::kind`). Fixed numbers. */
enum {
    HL_EVENT_FRAME_CHANGED = 1,
    HL_EVENT_SELECTION_CHANGED = 2,
    HL_EVENT_SCENE_OPENED = 3,
    HL_EVENT_SCENE_SAVED = 4,
    HL_EVENT_PLAYBACK_STARTED = 5,
    HL_EVENT_PLAYBACK_STOPPED = 6,
    HL_EVENT_SHUTDOWN_REQUESTED = 7,
    HL_EVENT_CUSTOM = 8
};

/**
 * \brief One host event. Which fields are read depends on `kind`; the others are ignored.
 * Posted events are copied; delivered events are borrowed for the callback's duration.
 */
typedef struct hl_event_t {
    /** `sizeof(hl_event_t)`. */
    uint32_t struct_size;
    /** `HL_EVENT_*`. */
    uint32_t kind;
    /** `FRAME_CHANGED`: the new frame. */
    double frame;
    /** `SCENE_OPENED`, `SCENE_SAVED`: the scene path, NUL-terminated UTF-8. */
    const char *path;
    /** `CUSTOM`: the topic, NUL-terminated UTF-8. */
    const char *topic;
    /** `CUSTOM`: the data (may be NULL when `bytes_len` is 0). */
    const void *bytes;
    size_t bytes_len;
    /** `CUSTOM`: non-zero to coalesce with undelivered events of the same topic. */
    uint32_t coalesce;
    uint32_t reserved;
} hl_event_t;

/**
 * \brief Posts a host event.
 *
 * \param event  not NULL; copied.
 * \return NULL_ARG (rt, event, or a string the kind needs); INVALID_HANDLE; INVALID_ARG (unknown
 * kind, struct_size too small); INVALID_UTF8; SHUT_DOWN; OUT_OF_MEMORY (no memory for the copy
 * of `bytes_len` bytes, checked before they are read; e.g. `bytes_len == SIZE_MAX`); BACKLOG
 * (the host has not pumped and the main-thread backlog is at its limit; a coalescing event that
 * replaces one already waiting is still taken).
 *
 * [any-thread]
 */
hl_status_t hl_runtime_post_event(hl_runtime_t *rt, const hl_event_t *event);

/**
 * \brief An event subscriber. The event is borrowed for the duration of the call; it must not
 * throw.
 *
 * [main-thread]
 */
typedef void (*hl_event_fn)(void *user_data, const hl_event_t *event);

/**
 * \brief Subscribes to events of `kind` (0 = every kind), delivered at pumps.
 *
 * \param finalize      called once with `user_data` after unsubscribing or when the runtime is
 *                      freed; may be NULL.
 * \param subscription  receives an id for `hl_runtime_unsubscribe`; may be NULL.
 * \return NULL_ARG (rt, fn); INVALID_HANDLE; INVALID_ARG (unknown kind); SHUT_DOWN.
 *
 * [any-thread]
 */
hl_status_t hl_runtime_subscribe(hl_runtime_t *rt, uint32_t kind, hl_event_fn fn,
                                 void *user_data, hl_finalizer_fn finalize,
                                 uint64_t *subscription);

/**
 * \brief Ends a subscription made by `hl_runtime_subscribe`. Called on the main thread, the
 * callback never runs after this returns.
 *
 * \return NULL_ARG; INVALID_HANDLE; INVALID_ARG (no such subscription); SHUT_DOWN.
 *
 * [any-thread]
 */
hl_status_t hl_runtime_unsubscribe(hl_runtime_t *rt, uint64_t subscription);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* HOSTLOOP_EVENT_H */
