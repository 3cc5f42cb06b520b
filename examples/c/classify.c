/* classify: run a licensed MLCapsule classifier on one input, from C.
 *
 *   classify MODEL.capsule STATE_DIR INPUT [LEASE]
 *
 * Opens the capsule with its state directory and prints the state and quota. Without a usable
 * lease it writes an evidence request (evidence-request.bin, send it to the provider) unless a
 * LEASE file is given, which it installs. Then it reads INPUT (a NumPy .npy of float32 or int64,
 * or a raw little-endian float32 file shaped like the model's first input), runs the model and
 * prints the top class of the first output. Links only libmlcapsule.so.
 */
#include <mlcapsule/mlcapsule.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES ((size_t)1 << 30)

/* Reads a whole file into malloc'ed memory; NULL (with a message) on failure. */
static uint8_t* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    return NULL;
  }
  uint8_t* data = NULL;
  size_t used = 0, capacity = 0;
  for (;;) {
    if (used == capacity) {
      capacity = capacity ? capacity * 2 : 65536;
      if (capacity > MAX_FILE_BYTES) {
        fprintf(stderr, "%s: larger than %zu bytes\n", path, MAX_FILE_BYTES);
        break;
      }
      uint8_t* grown = realloc(data, capacity);
      if (grown == NULL) break;
      data = grown;
    }
    size_t n = fread(data + used, 1, capacity - used, f);
    used += n;
    if (n == 0) {
      if (ferror(f)) break;
      fclose(f);
      *size = used;
      return data;
    }
  }
  fclose(f);
  free(data);
  fprintf(stderr, "%s: could not be read\n", path);
  return NULL;
}

static int write_file(const char* path, const uint8_t* data, size_t size) {
  FILE* f = fopen(path, "wb");
  if (f == NULL || fwrite(data, 1, size, f) != size) {
    perror(path);
    if (f != NULL) fclose(f);
    return -1;
  }
  return fclose(f) == 0 ? 0 : -1;
}

/* Parses a NumPy .npy file (version 1-3, little-endian '<f4' or '<i8', C order) into `input`,
 * whose data then points into `file`. Returns 0 on success. */
static int parse_npy(const uint8_t* file, size_t size, mlc_tensor* input) {
  if (size < 10 || memcmp(file, "\x93NUMPY", 6) != 0) return -1;
  size_t header_len, offset;
  if (file[6] == 1) {
    header_len = (size_t)file[8] | ((size_t)file[9] << 8);
    offset = 10;
  } else {
    if (size < 12) return -1;
    header_len = (size_t)file[8] | ((size_t)file[9] << 8) | ((size_t)file[10] << 16) |
                 ((size_t)file[11] << 24);
    offset = 12;
  }
  if (header_len > size - offset || header_len > 65536) return -1;
  char header[65537];
  memcpy(header, file + offset, header_len);
  header[header_len] = '\0';
  if (strstr(header, "'fortran_order': True") != NULL) {
    fprintf(stderr, "npy: Fortran order is not supported\n");
    return -1;
  }
  if (strstr(header, "'<f4'") != NULL) {
    input->dtype = MLC_DTYPE_FLOAT32;
  } else if (strstr(header, "'<i8'") != NULL) {
    input->dtype = MLC_DTYPE_INT64;
  } else {
    fprintf(stderr, "npy: only '<f4' and '<i8' are supported (header %s)\n", header);
    return -1;
  }
  const char* shape = strstr(header, "'shape':");
  if (shape == NULL || (shape = strchr(shape, '(')) == NULL) return -1;
  ++shape;
  input->rank = 0;
  size_t elements = 1;
  for (;;) {
    while (*shape == ' ' || *shape == ',') ++shape;
    if (*shape == ')') break;
    char* end = NULL;
    long long dim = strtoll(shape, &end, 10);
    if (end == shape || dim < 0 || input->rank == MLC_MAX_RANK) return -1;
    input->dims[input->rank++] = dim;
    elements *= (size_t)dim;
    shape = end;
  }
  input->data = file + offset + header_len;
  input->byte_size = size - offset - header_len;
  if (input->byte_size != elements * mlc_dtype_size(input->dtype)) {
    fprintf(stderr, "npy: %zu data bytes for %zu elements\n", input->byte_size, elements);
    return -1;
  }
  return 0;
}

/* A raw float32 file: the shape is the model's first input with the batch size that fits. */
static int shape_raw(mlc_client* client, size_t size, mlc_tensor* input) {
  mlc_tensor_info info;
  if (mlc_client_input_info(client, 0, &info) != MLC_OK) return -1;
  if (info.dtype != MLC_DTYPE_FLOAT32 || size % sizeof(float) != 0) {
    fprintf(stderr, "a raw input file holds float32 values; the model takes %s\n",
            mlc_dtype_name(info.dtype));
    return -1;
  }
  size_t per_example = 1;
  for (size_t i = 0; i < info.rank; ++i) per_example *= (size_t)info.dims[i];
  const size_t values = size / sizeof(float);
  if (per_example == 0 || values % per_example != 0) {
    fprintf(stderr, "%zu floats do not fill whole examples of %zu values\n", values, per_example);
    return -1;
  }
  const int64_t batch = (int64_t)(values / per_example);
  input->dtype = MLC_DTYPE_FLOAT32;
  input->rank = info.rank;
  for (size_t i = 0; i < info.rank; ++i)
    input->dims[i] = (info.batch_mask >> i) & 1u ? info.dims[i] * batch : info.dims[i];
  input->byte_size = size;
  return 0;
}

static void print_status(mlc_client* client) {
  mlc_state state;
  mlc_quota quota;
  const char* id = "";
  const char* license = "";
  if (mlc_client_state(client, &state) != MLC_OK || mlc_client_quota(client, &quota) != MLC_OK ||
      mlc_client_capsule_id(client, &id) != MLC_OK ||
      mlc_client_license_id(client, &license) != MLC_OK) {
    fprintf(stderr, "status: %s\n", mlc_last_error());
    return;
  }
  printf("capsule %s: %s", id, state == MLC_STATE_READY ? "ready" : "needs a lease");
  if (state == MLC_STATE_READY)
    printf(", license %s, %llu of %llu queries left, expires at %lld", license,
           (unsigned long long)quota.queries_left, (unsigned long long)quota.query_quota,
           (long long)quota.expires_at);
  printf("\n");
}

/* Writes an evidence request bound to a fresh random nonce. */
static int write_evidence_request(mlc_client* client, const char* path) {
  uint8_t nonce[MLC_NONCE_BYTES];
  FILE* random = fopen("/dev/urandom", "rb");
  if (random == NULL || fread(nonce, 1, sizeof(nonce), random) != sizeof(nonce)) {
    fprintf(stderr, "cannot read /dev/urandom\n");
    if (random != NULL) fclose(random);
    return -1;
  }
  fclose(random);
  mlc_buffer request = {NULL, 0};
  if (mlc_client_evidence_request(client, nonce, 0, &request) != MLC_OK) {
    fprintf(stderr, "evidence request: %s\n", mlc_last_error());
    return -1;
  }
  int result = write_file(path, request.data, request.size);
  mlc_buffer_free(&request);
  if (result == 0)
    printf("wrote %s: send it to the provider and run again with the lease it answers\n", path);
  return result;
}

static void print_top(const mlc_tensor* output) {
  size_t elements = output->byte_size / mlc_dtype_size(output->dtype);
  if (output->dtype == MLC_DTYPE_INT64) { /* label-only policies answer the class itself */
    const int64_t* labels = (const int64_t*)output->data;
    if (elements > 0) printf("%s: class %lld\n", output->name, (long long)labels[0]);
    return;
  }
  /* The first example's scores: the last dimension. */
  size_t classes = output->rank > 0 ? (size_t)output->dims[output->rank - 1] : elements;
  if (classes == 0 || classes > elements) return;
  const float* scores = (const float*)output->data;
  size_t best = 0;
  for (size_t i = 1; i < classes; ++i)
    if (scores[i] > scores[best]) best = i;
  printf("%s: top class %zu (score %g of %zu classes)\n", output->name, best, scores[best],
         classes);
}

int main(int argc, char** argv) {
  if (argc < 4 || argc > 5) {
    fprintf(stderr, "usage: %s MODEL.capsule STATE_DIR INPUT(.npy|raw float32) [LEASE]\n", argv[0]);
    return 2;
  }
  const char* capsule_path = argv[1];
  const char* lease_path = argc == 5 ? argv[4] : NULL;
  int exit_code = 1;
  uint8_t* input_file = NULL;
  mlc_tensor* outputs = NULL;
  size_t output_count = 0;

  mlc_options options;
  mlc_options_init(&options);
  options.state_dir = argv[2];
  mlc_client* client = NULL;
  if (mlc_client_open(capsule_path, &options, &client) != MLC_OK) {
    fprintf(stderr, "open: %s\n", mlc_last_error());
    return 1;
  }
  const char* backend = "";
  if (mlc_client_backend(client, &backend) == MLC_OK) printf("trusted core: %s\n", backend);
  print_status(client);

  if (lease_path != NULL) {
    size_t lease_size = 0;
    uint8_t* lease = read_file(lease_path, &lease_size);
    if (lease == NULL) goto done;
    mlc_status status = mlc_client_install_lease(client, lease, lease_size);
    free(lease);
    if (status != MLC_OK) {
      fprintf(stderr, "install lease: %s\n", mlc_last_error());
      goto done;
    }
    printf("installed lease %s\n", lease_path);
    print_status(client);
  }
  mlc_state state;
  if (mlc_client_state(client, &state) != MLC_OK) goto done;
  if (state == MLC_STATE_NEEDS_LEASE) {
    if (write_evidence_request(client, "evidence-request.bin") == 0) exit_code = 3;
    goto done;
  }

  size_t input_size = 0;
  input_file = read_file(argv[3], &input_size);
  if (input_file == NULL) goto done;
  mlc_tensor input;
  memset(&input, 0, sizeof(input));
  if (input_size >= 6 && memcmp(input_file, "\x93NUMPY", 6) == 0) {
    if (parse_npy(input_file, input_size, &input) != 0) {
      fprintf(stderr, "%s: not a supported .npy file\n", argv[3]);
      goto done;
    }
  } else {
    if (shape_raw(client, input_size, &input) != 0) goto done;
    input.data = input_file;
  }

  mlc_status status = mlc_client_infer(client, &input, 1, &outputs, &output_count);
  if (status != MLC_OK) {
    /* MLC_ERR_RESOURCE_EXHAUSTED: the quota is used up; report usage and get a new lease. */
    fprintf(stderr, "infer: %s: %s\n", mlc_status_name(status), mlc_last_error());
    goto done;
  }
  for (size_t i = 0; i < output_count; ++i) print_top(&outputs[i]);
  print_status(client);
  exit_code = 0;

done:
  mlc_tensors_free(outputs);
  free(input_file);
  if (mlc_client_close(client) != MLC_OK) {
    fprintf(stderr, "close: %s\n", mlc_last_error());
    exit_code = 1;
  }
  return exit_code;
}
