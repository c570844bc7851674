/*
 * receptor_plugin.h - the C ABI of receptor plugins, version 1.2.
 *
 * A plugin is a shared library exporting
 *
 *     const ReceptorPluginDescriptor *receptor_plugin_entry_v1(const ReceptorHostApi *host);
 *
 * (declared below with RECEPTOR_PLUGIN_EXPORT, so that it stays visible when the plugin
 * is built with -fvisibility=hidden and keeps C linkage in C++). The header compiles as
 * C11 and as C++17.
 *
 * The host calls it once after each load; the returned descriptor (and everything it
 * points to) must stay valid while the library is loaded. Return NULL to refuse to
 * initialise. A plugin from which a backend or work type was created is never unloaded;
 * one found on the default search path that claims no section of the configuration is
 * unloaded right after its entry point returned and loaded again if a later configuration
 * needs it, so the entry point must not start threads or register anything that outlives
 * the library.
 *
 * Rules (the same as the Rust definitions in receptor-plugin-sdk's `abi` module, which a
 * test checks field by field against this header):
 *  - Every struct starts with struct_size, its size as known to whoever filled it in,
 *    and only grows at the end within a major version. Read a field only if struct_size
 *    covers it; in an out-struct, write only the fields covered by the struct_size the
 *    host set. The RECEPTOR_*_V1_n_SIZE constants are each struct's frozen size at
 *    minor n (field ends, never sizeof): compare struct_size with them.
 *  - ReceptorStr is borrowed UTF-8 {ptr, len} (not NUL-terminated), valid for the call.
 *  - Whoever allocates frees. Plugin handles are freed by the plugin when the host calls
 *    stop / free_unit / destroy; host contexts (ReceptorBackendHost.ctx,
 *    ReceptorProgress.ctx) by the host when the plugin calls their release() exactly once.
 *  - Errors: call err->set(err->ctx, message) and return a non-zero status.
 *  - Nothing may unwind or throw across these functions.
 *  - The plugin owns its threads; host callbacks are thread-safe. Vtable functions return
 *    promptly.
 *  - File descriptors passed across change owner: the receiver closes them, even when it
 *    refuses them or the call fails.
 */
#ifndef RECEPTOR_PLUGIN_H
#define RECEPTOR_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RECEPTOR_PLUGIN_ABI_MAJOR 1
/* 1.1: ReceptorBackendHost.connection_tls.
 * 1.2: self-describing sections (ReceptorSectionClaim.flags, help, fields, bare_field,
 *      v2_key; ReceptorFieldDesc) and the typed configuration accessors of
 *      ReceptorHostApi (config_string ... config_list_item). */
#define RECEPTOR_PLUGIN_ABI_MINOR 2
#define RECEPTOR_PLUGIN_ENTRY_V1 "receptor_plugin_entry_v1"

/* Makes the entry point visible (and of C linkage in C++) whatever the default
 * visibility of the build. */
#if defined(__cplusplus)
#define RECEPTOR_EXTERN_C extern "C"
#else
#define RECEPTOR_EXTERN_C
#endif
#if defined(_WIN32)
#define RECEPTOR_PLUGIN_EXPORT RECEPTOR_EXTERN_C __declspec(dllexport)
#else
#define RECEPTOR_PLUGIN_EXPORT RECEPTOR_EXTERN_C __attribute__((visibility("default")))
#endif

/* The end of a field: its offset plus its size. The frozen sizes below are field ends. */
#define RECEPTOR_FIELD_END(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

typedef int32_t ReceptorStatus;
#define RECEPTOR_STATUS_OK 0
#define RECEPTOR_STATUS_ERROR 1
#define RECEPTOR_STATUS_PANIC 2
#define RECEPTOR_STATUS_ABSENT 3 /* since 1.2, config accessors: no such key (not an error) */

/* Framing of a connection handed to the host. */
#define RECEPTOR_FRAMING_LEN16LE 1  /* byte stream, u16 little-endian length prefix (TCP) */
#define RECEPTOR_FRAMING_DATAGRAM 2 /* one message per datagram (UDP, SOCK_SEQPACKET) */

/* ReceptorSectionClaim.claim_type */
#define RECEPTOR_CLAIM_BACKEND 1
#define RECEPTOR_CLAIM_WORK_TYPE 2

/* ReceptorSectionClaim.flags (since 1.2) */
#define RECEPTOR_CLAIM_FLAG_OWN_TLS 1u /* the backend runs TLS itself; it gets "tlsconfig" */

/* ReceptorFieldDesc.field_type (since 1.2) */
#define RECEPTOR_FIELD_STRING 1
#define RECEPTOR_FIELD_INT 2
#define RECEPTOR_FIELD_BOOL 3
#define RECEPTOR_FIELD_DURATION 4
#define RECEPTOR_FIELD_LIST 5
#define RECEPTOR_FIELD_FLOAT 6
#define RECEPTOR_FIELD_ANY 7

/* ReceptorFieldDesc.flags (since 1.2) */
#define RECEPTOR_FIELD_REQUIRED 1u

/* ReceptorWorkTypeInfo.flags */
#define RECEPTOR_WORK_TYPE_VERIFY_SIGNATURE 1u
#define RECEPTOR_WORK_TYPE_ALLOW_RUNTIME_PARAMS 2u

/* Unit states (the numbers in receptor's status files). */
#define RECEPTOR_STATE_PENDING 0
#define RECEPTOR_STATE_RUNNING 1
#define RECEPTOR_STATE_SUCCEEDED 2
#define RECEPTOR_STATE_FAILED 3
#define RECEPTOR_STATE_CANCELED 4

/* Log levels. */
#define RECEPTOR_LOG_ERROR 1
#define RECEPTOR_LOG_WARN 2
#define RECEPTOR_LOG_INFO 3
#define RECEPTOR_LOG_DEBUG 4
#define RECEPTOR_LOG_TRACE 5

/* A borrowed UTF-8 string; len == 0 is the empty string whatever ptr is. */
typedef struct ReceptorStr {
    const uint8_t *ptr;
    size_t len;
} ReceptorStr;

/* Where a plugin reports why a call failed; borrowed for the call. */
typedef struct ReceptorErrorSink {
    size_t struct_size;
    void *ctx;
    /* Records the message (copied; the last call wins). */
    void (*set)(void *ctx, ReceptorStr message);
} ReceptorErrorSink;

/* Given to the entry point; valid at least as long as the library is loaded. */
typedef struct ReceptorHostApi {
    size_t struct_size;
    uint32_t abi_major;
    uint32_t abi_minor;
    void *ctx;
    /* Logs a message at a RECEPTOR_LOG_* level. Thread-safe. */
    void (*log)(void *ctx, uint32_t level, ReceptorStr message);
    /* Since 1.2 (use them only if struct_size >= RECEPTOR_HOST_API_V1_2_SIZE): typed
     * reads of the plugin's own section, config_json as passed to create()/start(); pass
     * host->ctx and the call's err sink. Keys match without regard to case. Each returns
     * RECEPTOR_STATUS_OK, RECEPTOR_STATUS_ABSENT (no such key; err untouched) or
     * RECEPTOR_STATUS_ERROR (wrong type; err names the key and the expected type).
     * Strings: at most cap bytes are copied to buf and the full length is stored in
     * *out_len (call again with a larger buffer if it exceeds cap); not NUL-terminated. */
    ReceptorStatus (*config_string)(void *ctx, ReceptorStr config_json, ReceptorStr key, uint8_t *buf,
                                    size_t cap, size_t *out_len, const ReceptorErrorSink *err);
    ReceptorStatus (*config_int)(void *ctx, ReceptorStr config_json, ReceptorStr key, int64_t *out,
                                 const ReceptorErrorSink *err);
    /* *out = 1 or 0; true/false, yes/no, on/off. */
    ReceptorStatus (*config_bool)(void *ctx, ReceptorStr config_json, ReceptorStr key, uint32_t *out,
                                  const ReceptorErrorSink *err);
    /* Go's form (1m30s, 250ms); a bare number is seconds. */
    ReceptorStatus (*config_duration_ms)(void *ctx, ReceptorStr config_json, ReceptorStr key, uint64_t *out,
                                         const ReceptorErrorSink *err);
    /* A list of strings (or one comma-separated string). */
    ReceptorStatus (*config_list_len)(void *ctx, ReceptorStr config_json, ReceptorStr key, size_t *out,
                                      const ReceptorErrorSink *err);
    ReceptorStatus (*config_list_item)(void *ctx, ReceptorStr config_json, ReceptorStr key, size_t index,
                                       uint8_t *buf, size_t cap, size_t *out_len, const ReceptorErrorSink *err);
} ReceptorHostApi;

#define RECEPTOR_HOST_API_V1_0_SIZE RECEPTOR_FIELD_END(ReceptorHostApi, log)
#define RECEPTOR_HOST_API_V1_1_SIZE RECEPTOR_FIELD_END(ReceptorHostApi, log)
#define RECEPTOR_HOST_API_V1_2_SIZE RECEPTOR_FIELD_END(ReceptorHostApi, config_list_item)

/* The host side of a running backend instance. The struct is borrowed for start() (copy
 * it); ctx stays valid until the plugin calls release(ctx), exactly once, also when
 * start() fails. */
typedef struct ReceptorBackendHost {
    size_t struct_size;
    void *ctx;
    /* Hands over a connected fd (the host owns it in every case) with its framing, a peer
     * description for logs and inbound = 1 if accepted, 0 if dialed. Returns the session
     * token (never 0), or 0 if the host refused the connection (backend stopping). May
     * block while the host has no room; thread-safe. */
    uint64_t (*connection)(void *ctx, int fd, uint32_t framing, ReceptorStr peer, uint32_t inbound);
    void (*release)(void *ctx);
    /* Since ABI 1.1: use it only if struct_size >= RECEPTOR_BACKEND_HOST_V1_1_SIZE, else
     * call connection(). As connection(), for a connection on which the plugin ran TLS
     * itself, with the DER of the peer's leaf certificate (peer_cert_len bytes, borrowed
     * for the call; 0 if the peer presented none). The host then requires the node ID
     * the peer announces to be one of the certificate's ReceptorNames, unless the
     * backend's TLS configuration sets skipreceptornamescheck. */
    uint64_t (*connection_tls)(void *ctx, int fd, uint32_t framing, ReceptorStr peer, uint32_t inbound,
                               const uint8_t *peer_cert, size_t peer_cert_len);
} ReceptorBackendHost;

/* The least a host passes (ABI 1.0: up to release), and the size with connection_tls. */
#define RECEPTOR_BACKEND_HOST_V1_0_SIZE RECEPTOR_FIELD_END(ReceptorBackendHost, release)
#define RECEPTOR_BACKEND_HOST_V1_1_SIZE RECEPTOR_FIELD_END(ReceptorBackendHost, connection_tls)
#define RECEPTOR_BACKEND_HOST_V1_2_SIZE RECEPTOR_FIELD_END(ReceptorBackendHost, connection_tls)

typedef struct ReceptorBackendVtable {
    size_t struct_size;
    /* Validates config_json (the section as a JSON object, keys lower case), starts
     * dialing/accepting on the plugin's threads and stores the instance. */
    ReceptorStatus (*start)(void *claim_ctx, ReceptorStr config_json, const ReceptorBackendHost *host,
                            const ReceptorErrorSink *err, void **out_instance);
    /* The session with this token ended (a dialer may redial). */
    void (*session_closed)(void *instance, uint64_t token);
    /* Stops and frees the instance; it is not used afterwards. */
    void (*stop)(void *instance);
} ReceptorBackendVtable;

/* Properties of a configured work type, written by create(). */
typedef struct ReceptorWorkTypeInfo {
    size_t struct_size;    /* set by the host */
    ReceptorStr name;      /* owned by the plugin while the work type lives; the host copies it */
    uint32_t flags;        /* RECEPTOR_WORK_TYPE_* bits */
    uint32_t reserved;     /* 0 */
} ReceptorWorkTypeInfo;

/* How a unit reports progress. The struct is borrowed for the call (copy it); ctx stays
 * valid until the plugin calls release(ctx), exactly once, also when the call fails. */
typedef struct ReceptorProgress {
    size_t struct_size;
    void *ctx;
    /* Replaces state (RECEPTOR_STATE_*), detail and extra data (JSON text, empty = null).
     * Thread-safe, never blocks; the latest report wins. */
    void (*report)(void *ctx, uint32_t state, ReceptorStr detail, ReceptorStr extra_json);
    void (*release)(void *ctx);
} ReceptorProgress;

/* Borrowed for start(); the fds belong to the plugin in every case. */
typedef struct ReceptorStartRequest {
    size_t struct_size;
    ReceptorStr unit_id;
    ReceptorStr unit_dir;
    int stdin_fd;   /* the payload, open for reading */
    int stdout_fd;  /* the results file, open for appending */
    ReceptorStr params;            /* runtime params, empty if none */
    ReceptorStr extra_params_json; /* other submit params, a JSON object of strings */
} ReceptorStartRequest;

/* Borrowed for reattach(). */
typedef struct ReceptorReattachRequest {
    size_t struct_size;
    ReceptorStr unit_id;
    ReceptorStr unit_dir;
    ReceptorStr extra_json; /* ExtraData as last saved, empty = null */
} ReceptorReattachRequest;

typedef struct ReceptorWorkTypeVtable {
    size_t struct_size;
    ReceptorStatus (*create)(void *claim_ctx, ReceptorStr config_json, const ReceptorErrorSink *err,
                             ReceptorWorkTypeInfo *out_info, void **out_work_type);
    ReceptorStatus (*start)(void *work_type, const ReceptorStartRequest *request,
                            const ReceptorProgress *progress, const ReceptorErrorSink *err, void **out_unit);
    /* An error means the unit cannot be followed; the host marks it failed. */
    ReceptorStatus (*reattach)(void *work_type, const ReceptorReattachRequest *request,
                               const ReceptorProgress *progress, const ReceptorErrorSink *err,
                               void **out_unit);
    /* Asks the unit to stop; it then reports Canceled (or a final state reached first). */
    ReceptorStatus (*cancel)(void *unit, const ReceptorErrorSink *err);
    /* Frees a unit handle (the unit may still be finishing and reporting). */
    void (*free_unit)(void *unit);
    /* Frees a work type; only after all of its unit handles were freed. */
    void (*destroy)(void *work_type);
} ReceptorWorkTypeVtable;

/* Since 1.2: one field of a section, for --help, the command line, the version-2 form
 * and type checks. Valid as long as its claim. */
typedef struct ReceptorFieldDesc {
    size_t struct_size;
    ReceptorStr name;          /* the key, lower case */
    uint32_t field_type;       /* RECEPTOR_FIELD_STRING ... */
    uint32_t flags;            /* RECEPTOR_FIELD_REQUIRED */
    ReceptorStr default_value; /* shown in --help; empty: none */
    ReceptorStr help;          /* one line */
} ReceptorFieldDesc;

#define RECEPTOR_FIELD_DESC_V1_2_SIZE RECEPTOR_FIELD_END(ReceptorFieldDesc, help)

/* One config section kind the plugin claims. */
typedef struct ReceptorSectionClaim {
    size_t struct_size;
    ReceptorStr section_kind; /* as written in the config, lower case, e.g. "tcp-listener" */
    uint32_t claim_type;      /* RECEPTOR_CLAIM_* */
    uint32_t flags;           /* RECEPTOR_CLAIM_FLAG_* (since 1.2; was reserved, 0) */
    void *claim_ctx;          /* passed back to start()/create() */
    const ReceptorBackendVtable *backend;    /* for RECEPTOR_CLAIM_BACKEND, else NULL */
    const ReceptorWorkTypeVtable *work_type; /* for RECEPTOR_CLAIM_WORK_TYPE, else NULL */
    /* Since 1.2 (a claim of RECEPTOR_SECTION_CLAIM_V1_0_SIZE has none of these): */
    ReceptorStr help;                /* one line for --help; empty: none */
    const ReceptorFieldDesc *fields; /* NULL with 0: not described, any keys accepted */
    size_t field_count;
    ReceptorStr bare_field;          /* the field --kind value sets; empty: none */
    ReceptorStr v2_key;              /* its map's key in the version-2 form; empty: none */
} ReceptorSectionClaim;

#define RECEPTOR_SECTION_CLAIM_V1_0_SIZE RECEPTOR_FIELD_END(ReceptorSectionClaim, work_type)
#define RECEPTOR_SECTION_CLAIM_V1_1_SIZE RECEPTOR_FIELD_END(ReceptorSectionClaim, work_type)
#define RECEPTOR_SECTION_CLAIM_V1_2_SIZE RECEPTOR_FIELD_END(ReceptorSectionClaim, v2_key)

typedef struct ReceptorPluginDescriptor {
    size_t struct_size;
    uint32_t abi_major; /* RECEPTOR_PLUGIN_ABI_MAJOR */
    uint32_t abi_minor; /* RECEPTOR_PLUGIN_ABI_MINOR */
    ReceptorStr name;
    ReceptorStr version;
    const ReceptorSectionClaim *const *claims;
    size_t claim_count;
} ReceptorPluginDescriptor;

typedef const ReceptorPluginDescriptor *(*ReceptorPluginEntryV1)(const ReceptorHostApi *host);

/* The entry point a plugin defines. */
RECEPTOR_PLUGIN_EXPORT const ReceptorPluginDescriptor *receptor_plugin_entry_v1(const ReceptorHostApi *host);

/* Marks a plugin that must run isolated in a plugin host process (it may abort): a node
 * refuses to load it into its own process and asks for `isolation: process` in its
 * `plugins:` entry. Write `RECEPTOR_PLUGIN_REQUIRES_ISOLATION;` once at file scope. */
#define RECEPTOR_PLUGIN_REQUIRES_ISOLATION \
    RECEPTOR_PLUGIN_EXPORT const uint32_t receptor_plugin_requires_isolation = 1

/* Builds a ReceptorStr from a string literal (C and C++). */
#if defined(__cplusplus)
#define RECEPTOR_STR(literal) (ReceptorStr{reinterpret_cast<const uint8_t *>(literal), sizeof(literal) - 1})
#else
#define RECEPTOR_STR(literal) ((ReceptorStr){(const uint8_t *)(literal), sizeof(literal) - 1})
#endif

#ifdef __cplusplus
}
#endif

#endif /* RECEPTOR_PLUGIN_H */
