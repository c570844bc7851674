/*
 * uppercase.c - a receptor work-type plugin written in C.
 *
 * Claims the config section `uppercase-worktype`:
 *
 *     - uppercase-worktype:
 *         worktype: shout        # the name clients submit to (default "uppercase")
 *
 * A unit copies its payload to its results with ASCII letters in upper case, on a thread
 * of its own, and reports Running, then Succeeded (or Failed, or Canceled).
 *
 * It reads its section through the host's typed accessors and describes it (ABI 1.2),
 * so the node checks the section, lists it in --help and accepts
 * `--uppercase-worktype shout` on the command line.
 *
 * Build:  cc -std=c11 -shared -fPIC -pthread -fvisibility=hidden \
 *            -I ../../plugin-sdk/include uppercase.c -o libuppercase.so
 * Load:   list the file (or its folder) under `plugins:` in receptor's config, or put it
 *         in a folder named by RECEPTOR_PLUGIN_PATH.
 */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "receptor_plugin.h"

#ifndef SECTION_KIND
#define SECTION_KIND "uppercase-worktype"
#endif

static void set_error(const ReceptorErrorSink *err, const char *message) {
    if (err && err->set) {
        ReceptorStr s = {(const uint8_t *)message, strlen(message)};
        err->set(err->ctx, s);
    }
}

/* ---- configuration: read through the host's typed accessors (ABI 1.2) ---- */

static const ReceptorHostApi *host;

typedef struct {
    char name[128];
} WorkType;

static ReceptorStatus wt_create(void *claim_ctx, ReceptorStr config_json, const ReceptorErrorSink *err,
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
    size_t len = 0;
    ReceptorStatus st = host->config_string(host->ctx, config_json, RECEPTOR_STR("worktype"),
                                            (uint8_t *)wt->name, sizeof wt->name - 1, &len, err);
    if (st == RECEPTOR_STATUS_ERROR || (st == RECEPTOR_STATUS_OK && (len == 0 || len >= sizeof wt->name))) {
        free(wt);
        if (st == RECEPTOR_STATUS_OK) set_error(err, SECTION_KIND ": worktype: expected a non-empty name");
        return RECEPTOR_STATUS_ERROR;
    }
    if (st == RECEPTOR_STATUS_ABSENT) strcpy(wt->name, "uppercase");
    else wt->name[len] = '\0';
    out_info->name = (ReceptorStr){(const uint8_t *)wt->name, strlen(wt->name)};
    out_info->flags = 0;
    *out_work_type = wt;
    return RECEPTOR_STATUS_OK;
}

/* ---- units: shared by the copying thread and the host's handle, freed by the last ---- */

typedef struct {
    atomic_int refs;
    atomic_int cancelled;
    int in, out;
    ReceptorProgress progress;
} Unit;

static void unit_unref(Unit *u) {
    if (atomic_fetch_sub(&u->refs, 1) == 1) free(u);
}

static void report(Unit *u, uint32_t state, const char *detail) {
    ReceptorStr d = {(const uint8_t *)detail, strlen(detail)};
    ReceptorStr none = {NULL, 0};
    u->progress.report(u->progress.ctx, state, d, none);
}

static void *run_unit(void *arg) {
    Unit *u = arg;
    unsigned char buf[65536];
    uint32_t state = RECEPTOR_STATE_SUCCEEDED;
    const char *detail = "uppercased";
    for (;;) {
        if (atomic_load(&u->cancelled)) {
            state = RECEPTOR_STATE_CANCELED;
            detail = "Canceled";
            break;
        }
        ssize_t n = read(u->in, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            state = RECEPTOR_STATE_FAILED;
            detail = "cannot read the payload";
            break;
        }
        if (n == 0) break;
        for (ssize_t i = 0; i < n; i++) buf[i] = (unsigned char)toupper(buf[i]);
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(u->out, buf + done, (size_t)(n - done));
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                state = RECEPTOR_STATE_FAILED;
                detail = "cannot write the results";
                goto finish;
            }
            done += w;
        }
    }
finish:
    close(u->in);
    close(u->out);
    report(u, state, detail);
    u->progress.release(u->progress.ctx);
    unit_unref(u);
    return NULL;
}

static ReceptorStatus wt_start(void *work_type, const ReceptorStartRequest *request,
                               const ReceptorProgress *progress, const ReceptorErrorSink *err, void **out_unit) {
    (void)work_type;
    /* The descriptors and the progress reference are ours whatever happens. */
    Unit *u = calloc(1, sizeof *u);
    if (!u) {
        close(request->stdin_fd);
        close(request->stdout_fd);
        progress->release(progress->ctx);
        set_error(err, "out of memory");
        return RECEPTOR_STATUS_ERROR;
    }
    atomic_init(&u->refs, 2);
    atomic_init(&u->cancelled, 0);
    u->in = request->stdin_fd;
    u->out = request->stdout_fd;
    u->progress = *progress;
    report(u, RECEPTOR_STATE_RUNNING, "Running");
    pthread_t thread;
    if (pthread_create(&thread, NULL, run_unit, u) != 0) {
        close(u->in);
        close(u->out);
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
    set_error(err, "uppercase units cannot be resumed after a restart");
    return RECEPTOR_STATUS_ERROR;
}

static ReceptorStatus wt_cancel(void *unit, const ReceptorErrorSink *err) {
    (void)err;
    atomic_store(&((Unit *)unit)->cancelled, 1);
    return RECEPTOR_STATUS_OK;
}

static void wt_free_unit(void *unit) { unit_unref(unit); }

static void wt_destroy(void *work_type) { free(work_type); }

/* ---- the descriptor ---- */

static const ReceptorWorkTypeVtable vtable = {
    sizeof(ReceptorWorkTypeVtable), wt_create, wt_start, wt_reattach, wt_cancel, wt_free_unit, wt_destroy,
};

/* The section's description (ABI 1.2): the node checks it, lists it in --help and
 * takes `--uppercase-worktype NAME` on the command line. */
static const ReceptorFieldDesc fields[] = {
    {sizeof(ReceptorFieldDesc), RECEPTOR_STR("worktype"), RECEPTOR_FIELD_STRING, 0, RECEPTOR_STR("uppercase"),
     RECEPTOR_STR("Name clients submit units to")},
};

static const ReceptorSectionClaim claim = {
    .struct_size = sizeof(ReceptorSectionClaim),
    .section_kind = RECEPTOR_STR(SECTION_KIND),
    .claim_type = RECEPTOR_CLAIM_WORK_TYPE,
    .work_type = &vtable,
    .help = RECEPTOR_STR("Copy the payload to the results in upper case (example C plugin)"),
    .fields = fields,
    .field_count = 1,
    .bare_field = RECEPTOR_STR("worktype"),
};

static const ReceptorSectionClaim *const claims[] = {&claim};

static const ReceptorPluginDescriptor descriptor = {
    sizeof(ReceptorPluginDescriptor),
    RECEPTOR_PLUGIN_ABI_MAJOR,
    RECEPTOR_PLUGIN_ABI_MINOR,
    RECEPTOR_STR("uppercase"),
    RECEPTOR_STR("1.0.0"),
    claims,
    1,
};

RECEPTOR_PLUGIN_EXPORT const ReceptorPluginDescriptor *receptor_plugin_entry_v1(const ReceptorHostApi *h) {
    host = h;
    if (h && h->struct_size >= RECEPTOR_HOST_API_V1_0_SIZE && h->log) {
        h->log(h->ctx, RECEPTOR_LOG_DEBUG, RECEPTOR_STR("uppercase plugin ready"));
    }
    return &descriptor;
}
