/* MLCapsule C API: run a licensed model capsule on this machine from any language with a C FFI.
 * Link with libmlcapsule.so; the trusted core runs in its own confined process (the software
 * TEE, `mlcapsule-core`), so nothing this library holds is a key or a weight.
 *
 *   mlc_options options;
 *   mlc_options_init(&options);
 *   options.state_dir = "state/";                      // one directory per capsule
 *   mlc_client* client = NULL;
 *   if (mlc_client_open("model.capsule", &options, &client) != MLC_OK) {
 *     fprintf(stderr, "open: %s\n", mlc_last_error());
 *     return 1;
 *   }
 *   mlc_state state;
 *   mlc_client_state(client, &state);
 *   if (state == MLC_STATE_NEEDS_LEASE) {
 *     // send mlc_client_evidence_request() bytes to the provider, install the lease it answers
 *     mlc_client_install_lease(client, lease_bytes, lease_size);
 *   }
 *   float image[1 * 784] = {0};
 *   mlc_tensor input = {MLC_DTYPE_FLOAT32, 2, {1, 784}, image, sizeof(image), NULL};
 *   mlc_tensor* outputs = NULL;
 *   size_t output_count = 0;
 *   if (mlc_client_infer(client, &input, 1, &outputs, &output_count) != MLC_OK)
 *     fprintf(stderr, "infer: %s\n", mlc_last_error());   // e.g. MLC_ERR_RESOURCE_EXHAUSTED
 *   else
 *     use((const float*)outputs[0].data);
 *   mlc_tensors_free(outputs);
 *   mlc_client_close(client);
 *
 * Conventions (every function):
 *  - Functions that can fail return an mlc_status; MLC_OK is 0. On failure mlc_last_error()
 *    returns a message that names the value at fault ("capsule 'x.capsule': No such file...").
 *  - Every pointer argument is checked: NULL where an object is required is
 *    MLC_ERR_INVALID_ARGUMENT, never a crash. Output parameters are cleared on failure.
 *  - Memory this library returns is freed with the matching *_free function; memory the caller
 *    passes in is only read during the call and never kept.
 *  - One mlc_client may be used from several threads; its calls run one at a time. Several clients
 *    (different capsules or state directories) run independently. mlc_client_close must be the
 *    last call on a client, made when no other thread uses it.
 *  - No C++ exception ever leaves this library.
 *
 * The header is C99 and versioned: MLCAPSULE_API_VERSION grows when functions or struct fields are
 * added (old programs keep working); mlc_api_version() says what the loaded library provides.
 */
#ifndef MLCAPSULE_MLCAPSULE_H_
#define MLCAPSULE_MLCAPSULE_H_

#include <stddef.h>
#include <stdint.h>

#define MLCAPSULE_API_VERSION 1

#if defined(MLCAPSULE_BUILDING_LIBRARY)
#define MLC_API __attribute__((visibility("default")))
#else
#define MLC_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes. They mirror the library's internal StatusCode one to one. */
typedef enum mlc_status {
  MLC_OK = 0,
  MLC_ERR_INVALID_ARGUMENT = 1,    /* malformed or out-of-range input (also NULL pointers) */
  MLC_ERR_UNSUPPORTED = 2,         /* well-formed but uses a feature not implemented */
  MLC_ERR_NOT_FOUND = 3,           /* a file or object that does not exist */
  MLC_ERR_DATA_LOSS = 4,           /* truncated or corrupted bytes (capsule, lease, state) */
  MLC_ERR_RESOURCE_EXHAUSTED = 5,  /* the lease's query quota is used up, or a rate limit */
  MLC_ERR_FAILED_PRECONDITION = 6, /* wrong state: no lease installed yet, lease expired, ... */
  MLC_ERR_PERMISSION_DENIED = 7,   /* refused by the capsule's policy or a defense */
  MLC_ERR_IO = 8,                  /* reading or writing a file, talking to the core process */
  MLC_ERR_INTERNAL = 9,            /* a bug, or out of memory */
  MLC_ERR_ALREADY_EXISTS = 10,     /* (server side; not returned by this API today) */
  MLC_ERR_UNAUTHENTICATED = 11,    /* (server side; not returned by this API today) */
  MLC_ERR_UNAVAILABLE = 12,        /* a device the TEE needs is gone (the TPM went away) */
  MLC_ERR_ABORTED = 13             /* a concurrent change interfered; a retry may succeed */
} mlc_status;

/* "ok", "invalid argument", ...; "unknown" for a value outside the enum. Never NULL. */
MLC_API const char* mlc_status_name(mlc_status status);

/* The message of the last failed call on this thread ("" when the last call succeeded). The
 * pointer stays valid until this thread's next call into the library. Never NULL. */
MLC_API const char* mlc_last_error(void);

/* MLCAPSULE_API_VERSION of the loaded library (may be newer than the header you compiled with). */
MLC_API int mlc_api_version(void);
/* "0.1.0": the MLCapsule release the library belongs to. */
MLC_API const char* mlc_version_string(void);

/* Element types; the codes equal ONNX TensorProto.DataType. */
typedef enum mlc_dtype { MLC_DTYPE_FLOAT32 = 1, MLC_DTYPE_INT64 = 7 } mlc_dtype;

/* Bytes per element: 4, 8; 0 for an unknown code. */
MLC_API size_t mlc_dtype_size(mlc_dtype dtype);
/* "float32", "int64"; "unknown" otherwise. Never NULL. */
MLC_API const char* mlc_dtype_name(mlc_dtype dtype);

#define MLC_MAX_RANK 8
#define MLC_CAPSULE_ID_BYTES 16
#define MLC_NONCE_BYTES 32

typedef struct mlc_options {
  /* sizeof(mlc_options) as compiled by the caller; set by mlc_options_init. Lets a newer library
   * read an older program's smaller struct. */
  size_t struct_size;
  /* Required: the directory holding this capsule's sealed state and TEE files (created when
   * missing). One directory per capsule; a second client on the same directory is refused. */
  const char* state_dir;
  /* Threads the core uses for inference: 1..256 (default 1). */
  int threads;
  /* Path of the mlcapsule-core executable; NULL or "": the one beside libmlcapsule.so, else the
   * installed one (the bin directory beside the library's lib directory, e.g. /usr/bin for
   * /usr/lib), else the one beside the running program. */
  const char* core_binary;
} mlc_options;

/* Fills `options` with the defaults (state_dir NULL: the caller must set it). */
MLC_API void mlc_options_init(mlc_options* options);

/* A client of one capsule: opaque. */
typedef struct mlc_client mlc_client;

/* Opens `capsule_path`: verifies the provider's signature, starts the trusted core and restores
 * the sealed state kept in options->state_dir. On success *out is a new client (free it with
 * mlc_client_close); on failure *out is NULL. */
MLC_API mlc_status mlc_client_open(const char* capsule_path, const mlc_options* options,
                                   mlc_client** out);

/* Seals the core's state, stops the core and frees the client, on every path (the return value
 * only reports whether the final seal and shutdown succeeded). NULL is allowed and returns MLC_OK.
 */
MLC_API mlc_status mlc_client_close(mlc_client* client);

typedef enum mlc_state {
  MLC_STATE_NEEDS_LEASE = 1, /* no usable lease: ask the provider for one */
  MLC_STATE_READY = 2        /* a lease is installed; mlc_client_infer answers */
} mlc_state;

MLC_API mlc_status mlc_client_state(mlc_client* client, mlc_state* out);

/* The current lease's numbers, as the trusted core reports them. */
typedef struct mlc_quota {
  uint64_t queries_used;  /* under the current lease */
  uint64_t query_quota;   /* granted by the current lease (0 without one) */
  uint64_t queries_left;  /* query_quota - queries_used */
  int64_t expires_at;     /* unix seconds; 0 without a lease */
  uint64_t total_queries; /* over every lease of this state directory */
} mlc_quota;

MLC_API mlc_status mlc_client_quota(mlc_client* client, mlc_quota* out);

/* Strings owned by the client. Each pointer stays valid until mlc_client_install_lease or
 * mlc_client_close on the same client. */
/* The capsule id as 32 lowercase hex digits. */
MLC_API mlc_status mlc_client_capsule_id(mlc_client* client, const char** out);
MLC_API mlc_status mlc_client_model_name(mlc_client* client, const char** out);
/* The license of the installed lease; "" without one. */
MLC_API mlc_status mlc_client_license_id(mlc_client* client, const char** out);
/* The capsule's policy (canonical JSON, public: it is part of the signed header). */
MLC_API mlc_status mlc_client_policy_json(mlc_client* client, const char** out);
/* Which core runs the capsule: "software (pid 1234, memfd_secret)", ... */
MLC_API mlc_status mlc_client_backend(mlc_client* client, const char** out);

/* The declared type and shape of a model input or output (what the output policy returns).
 * A dimension whose bit is set in batch_mask is dims[i] * N, where N is the batch size the
 * caller chooses at inference time (usually dims[0] == 1 with bit 0 set: "N"). */
typedef struct mlc_tensor_info {
  const char* name; /* owned by the client, valid as the strings above */
  mlc_dtype dtype;
  size_t rank;
  int64_t dims[MLC_MAX_RANK];
  uint32_t batch_mask;
} mlc_tensor_info;

MLC_API mlc_status mlc_client_input_count(mlc_client* client, size_t* out);
MLC_API mlc_status mlc_client_input_info(mlc_client* client, size_t index, mlc_tensor_info* out);
MLC_API mlc_status mlc_client_output_count(mlc_client* client, size_t* out);
MLC_API mlc_status mlc_client_output_info(mlc_client* client, size_t index, mlc_tensor_info* out);

/* A byte buffer returned by the library; free it with mlc_buffer_free. */
typedef struct mlc_buffer {
  uint8_t* data;
  size_t size;
} mlc_buffer;

/* Frees buffer->data and sets the buffer to {NULL, 0}. NULL and empty buffers are allowed. */
MLC_API void mlc_buffer_free(mlc_buffer* buffer);

/* The evidence request to send to the provider or its license server, bound to the server's
 * 32-byte `nonce`. With attach_report != 0 the latest signed usage report travels with it
 * (renewals). */
MLC_API mlc_status mlc_client_evidence_request(mlc_client* client, const uint8_t* nonce,
                                               int attach_report, mlc_buffer* out);

/* Installs the lease the provider answered with. The core checks its signature against the
 * capsule's pinned license-server key, its capsule, its core keys and its dates. */
MLC_API mlc_status mlc_client_install_lease(mlc_client* client, const uint8_t* lease, size_t size);

/* A dense, row-major (C order) tensor. As an input, `data` points to the caller's memory, which
 * is only read. As an output, every field is owned by the library (see mlc_tensors_free). */
typedef struct mlc_tensor {
  mlc_dtype dtype;
  size_t rank;
  int64_t dims[MLC_MAX_RANK];
  const void* data;
  size_t byte_size; /* must equal the element count times mlc_dtype_size(dtype) */
  const char* name; /* outputs: the output's name; ignored for inputs (they go in order) */
} mlc_tensor;

/* Runs the model on `inputs` (in the order of mlc_client_input_info). Every example of the batch
 * counts one query against the lease (a batch of N costs N). On success *outputs is
 * an array of *output_count tensors, what the capsule's output policy allows; free it with
 * mlc_tensors_free. On failure both are cleared. MLC_ERR_FAILED_PRECONDITION: no lease;
 * MLC_ERR_RESOURCE_EXHAUSTED: the quota is used up. */
MLC_API mlc_status mlc_client_infer(mlc_client* client, const mlc_tensor* inputs,
                                    size_t input_count, mlc_tensor** outputs, size_t* output_count);

/* Frees an array from mlc_client_infer (NULL is allowed). Any other pointer is ignored and
 * reported through mlc_last_error. */
MLC_API void mlc_tensors_free(mlc_tensor* tensors);

/* The core's signed usage report (counters, usage-chain head, defense alerts) to send to the
 * provider. The bytes are inspectable: they say nothing about the inputs. */
MLC_API mlc_status mlc_client_usage_report(mlc_client* client, mlc_buffer* out);

#ifdef __cplusplus
}
#endif

#endif /* MLCAPSULE_MLCAPSULE_H_ */
