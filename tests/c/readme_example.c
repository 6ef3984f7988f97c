#define _POSIX_C_SOURCE 200809L
#include <hostloop.h>
#include <poll.h>
#include <stdio.h>

static hl_runtime_t *rt;
static int finished;

static int32_t work(void *user_data, hl_job_ctx_t *ctx) {          /* on a worker thread */
    (void)user_data; (void)ctx;
    return hl_runtime_emit(rt, "demo/answer", "42", 2) == HL_STATUS_OK ? 0 : 1;
}
static void done(void *user_data, hl_status_t status, int32_t code) {  /* on the main thread */
    (void)user_data; printf("job: %s (%d)\n", hl_status_name(status), code); finished = 1;
}
static void sink(void *user_data, const hl_message_t *m) {          /* on the main thread */
    (void)user_data; printf("%s: %.*s\n", m->topic, (int)m->bytes_len, (const char *)m->bytes);
}

int main(void) {
    hl_runtime_options_t options;
    hl_runtime_options_init(&options);                   /* then set options.workers etc. */
    if (hl_runtime_new(&options, &rt) != HL_STATUS_OK) {
        fprintf(stderr, "hostloop: %s\n", hl_last_error());
        return 1;
    }
    int fd;
    hl_runtime_wake_fd(rt, &fd);                         /* watch it in the host's loop */
    hl_runtime_set_sink(rt, sink, NULL, NULL);
    hl_job_desc_t job = {.struct_size = sizeof job, .priority = HL_PRIORITY_NORMAL,
                         .name = "demo", .run = work, .done = done};
    hl_job_spawn(rt, &job, NULL);
    while (!finished) {                                  /* the host's event loop */
        struct pollfd p = {fd, POLLIN, 0};
        poll(&p, 1, 16);                                 /* the doorbell, or a 16 ms frame */
        hl_runtime_pump(rt, 2000, NULL);                 /* at most ~2 ms of main-thread work */
    }
    hl_runtime_shutdown(rt, 1000, NULL);
    hl_runtime_free(rt);
    return 0;
}
