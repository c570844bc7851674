/*
 * plugin.c - a minimal receptor work-type plugin in C.
 *
 * Claims the section `hello-c-worktype`:
 *
 *     - hello-c-worktype:
 *         worktype: hello-c     # the name clients submit to (default "hello-c")
 *         greeting: hello       # written before the payload (default "hello")
 *
 * A unit writes "<greeting>, " and then its payload to its results, on a thread of its
 * own, and reports Running, then Succeeded (or Failed, or Canceled). It reads its
 * section through the host's typed accessors (ABI 1.2) and describes it, so the node
 * checks it, lists it in --help and takes `--hello-c-worktype NAME`.
 *
 * The rules that matter (receptor_plugin.h says more): the descriptors and the progress
 * reference handed to start/reattach are the plugin's in every case (close them,
 * release it exactly once); report exactly one final state; never block the caller.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "receptor_plugin.h"

static const ReceptorHostApi *host;

static void set_error(const ReceptorErrorSink *err, const char *message) {
    if (err && err->set) err->set(err->ctx, (ReceptorStr){(const uint8_t *)message, strlen(message)});
}

/* Reads string field `key` into `out` (`fallback` if absent); 0 on success. */
static int read_string(ReceptorStr config, const char *key, char *out, size_t cap, const char *fallback,
                       const ReceptorErrorSink *err) {
    size_t len = 0;
    ReceptorStr k = {(const uint8_t *)key, strlen(key)};
    ReceptorStatus st = host->config_string(host->ctx, config, k, (uint8_t *)out, cap - 1, &len, err);
    if (st == RECEPTOR_STATUS_ABSENT) {
        strncpy(out, fallback, cap - 1);
        out[cap - 1] = '\0';
        return 0;
    }
    if (st != RECEPTOR_STATUS_OK) return -1; /* the host put the reason in err */
    if (len >= cap) {
        set_error(err, "a setting is too long");
        return -1;
    }
    out[len] = '\0';
    return 0;
}

/* ---- the work type ---- */

typedef struct {
    char name[128];
    char greeting[128];
} WorkType;

static ReceptorStatus wt_create(void *claim_ctx, ReceptorStr config, const ReceptorErrorSink *err,
                                ReceptorWorkTypeInfo *out_info, void **out_work_type) {
    (void)claim_ctx;
    if (!host || host->struct_size < RECEPTOR_HOST_API_V1_2_SIZE) {
        set_error(err, "this plugin needs a receptor of plugin ABI 1.2 or later");
        return RECEPTOR_STATUS_ERROR;
    }
    WorkType *wt = calloc(1, sizeof *wt);
    if (!wt) {
        set_error(err, "out of memory");
        return RECEPTOR_STATUS_ERROR;
    }
    if (read_string(config, "worktype", wt->name, sizeof wt->name, "hello-c", err) != 0 ||
        read_string(config, "greeting", wt->greeting, sizeof wt->greeting, "hello", err) != 0) {
        free(wt);
        return RECEPTOR_STATUS_ERROR;
    }
    out_info->name = (ReceptorStr){(const uint8_t *)wt->name, strlen(wt->name)};
    out_info->flags = 0;
    *out_work_type = wt;
    return RECEPTOR_STATUS_OK;
}

static void wt_destroy(void *work_type) { free(work_type); }

/* ---- units: shared by the unit's thread and the host's handle; the last one frees ---- */

typedef struct {
    atomic_int refs;
    atomic_int cancelled;
    int in, out;
    char greeting[130];
    ReceptorProgress progress;
} Unit;

static void unit_unref(Unit *u) {
    if (atomic_fetch_sub(&u->refs, 1) == 1) free(u);
}

static void report(Unit *u, uint32_t state, const char *detail) {
    ReceptorStr d = {(const uint8_t *)detail, strlen(detail)};
    u->progress.report(u->progress.ctx, state, d, (ReceptorStr){NULL, 0});
}

static int write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

static void *run_unit(void *arg) {
    Unit *u = arg;
    uint32_t state = RECEPTOR_STATE_SUCCEEDED;
    const char *detail = "Greeted";
    char buf[65536];
    if (write_all(u->out, u->greeting, strlen(u->greeting)) != 0) {
        state = RECEPTOR_STATE_FAILED;
        detail = "cannot write the results";
    }
    while (state == RECEPTOR_STATE_SUCCEEDED) {
        if (atomic_load(&u->cancelled)) {
            state = RECEPTOR_STATE_CANCELED;
            detail = "Canceled";
            break;
        }
        ssize_t n = read(u->in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0) break;
        if (n < 0) {
            state = RECEPTOR_STATE_FAILED;
            detail = "cannot read the payload";
        } else if (write_all(u->out, buf, (size_t)n) != 0) {
            state = RECEPTOR_STATE_FAILED;
            detail = "cannot write the results";
        }
    }
    close(u->in);
    close(u->out);
    report(u, state, detail); /* exactly one final state */
    u->progress.release(u->progress.ctx);
    unit_unref(u);
    return NULL;
}

static ReceptorStatus wt_start(void *work_type, const ReceptorStartRequest *request,
                               const ReceptorProgress *progress, const ReceptorErrorSink *err, void **out_unit) {
    WorkType *wt = work_type;
    Unit *u = calloc(1, sizeof *u);
    if (!u) {
        close(request->stdin_fd);
        close(request->stdout_fd);
        progress->release(progress->ctx);
        set_error(err, "out of memory");
        return RECEPTOR_STATUS_ERROR;
    }
    atomic_init(&u->refs, 2); /* the thread's and the handle's */
    atomic_init(&u->cancelled, 0);
    u->in = request->stdin_fd;
    u->out = request->stdout_fd;
    strcpy(u->greeting, wt->greeting);
    strcat(u->greeting, ", ");
    u->progress = *progress;
    report(u, RECEPTOR_STATE_RUNNING, "Running");
    pthread_t thread;
    if (pthread_create(&thread, NULL, run_unit, u) != 0) {
        close(u->in);
        close(u->out);
        report(u, RECEPTOR_STATE_FAILED, "cannot start a thread");
        u->progress.release(u->progress.ctx);
        free(u);
        set_error(err, "cannot start a thread");
        return RECEPTOR_STATUS_ERROR;
    }
    pthread_detach(thread);
    *out_unit = u;
    return RECEPTOR_STATUS_OK;
}

static ReceptorStatus wt_reattach(void *work_type, const ReceptorReattachRequest *request,
                                  const ReceptorProgress *progress, const ReceptorErrorSink *err,
                                  void **out_unit) {
    (void)work_type;
    (void)request;
    (void)out_unit;
    progress->release(progress->ctx);
    set_error(err, "hello-c units cannot be resumed after a restart");
    return RECEPTOR_STATUS_ERROR;
}

static ReceptorStatus wt_cancel(void *unit, const ReceptorErrorSink *err) {
    (void)err;
    atomic_store(&((Unit *)unit)->cancelled, 1);
    return RECEPTOR_STATUS_OK;
}

static void wt_free_unit(void *unit) { unit_unref(unit); }

/* ---- the descriptor ---- */

static const ReceptorWorkTypeVtable vtable = {
    sizeof(ReceptorWorkTypeVtable), wt_create, wt_start, wt_reattach, wt_cancel, wt_free_unit, wt_destroy,
};

static const ReceptorFieldDesc fields[] = {
    {sizeof(ReceptorFieldDesc), RECEPTOR_STR("worktype"), RECEPTOR_FIELD_STRING, 0, RECEPTOR_STR("hello-c"),
     RECEPTOR_STR("Name clients submit to")},
    {sizeof(ReceptorFieldDesc), RECEPTOR_STR("greeting"), RECEPTOR_FIELD_STRING, 0, RECEPTOR_STR("hello"),
     RECEPTOR_STR("What to write first")},
};

static const ReceptorSectionClaim claim = {
    .struct_size = sizeof(ReceptorSectionClaim),
    .section_kind = RECEPTOR_STR("hello-c-worktype"),
    .claim_type = RECEPTOR_CLAIM_WORK_TYPE,
    .work_type = &vtable,
    .help = RECEPTOR_STR("Write a greeting, then the payload (C)"),
    .fields = fields,
    .field_count = sizeof fields / sizeof fields[0],
    .bare_field = RECEPTOR_STR("worktype"),
    .v2_key = RECEPTOR_STR("hello-c-worktypes"),
};

static const ReceptorSectionClaim *const claims[] = {&claim};

static const ReceptorPluginDescriptor descriptor = {
    sizeof(ReceptorPluginDescriptor), RECEPTOR_PLUGIN_ABI_MAJOR, RECEPTOR_PLUGIN_ABI_MINOR,
    RECEPTOR_STR("hello-c"), RECEPTOR_STR("0.1.0"), claims, 1,
};

/* The one exported symbol (the export macro keeps it visible with -fvisibility=hidden). */
RECEPTOR_PLUGIN_EXPORT const ReceptorPluginDescriptor *receptor_plugin_entry_v1(const ReceptorHostApi *h) {
    host = h;
    return &descriptor;
}
