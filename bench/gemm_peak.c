/* Single-precision GEMM throughput with OpenBLAS: C = A*B, N x N x N, repeated.
 * usage: gemm_peak [N] [min_seconds]     (threads: OPENBLAS_NUM_THREADS)
 * Prints one JSON line: {"threads":T,"gflops":X,...}; gflops is the median over the timed
 * repetitions, gflops_best the fastest one. Built and run by bench/gemm_peak.sh. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern int openblas_get_num_threads(void);
extern char *openblas_get_corename(void);

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 2048;
  double min_s = argc > 2 ? atof(argv[2]) : 2.0;
  if (n <= 0 || min_s <= 0) {
    fprintf(stderr, "usage: %s [N>0] [min_seconds>0]\n", argv[0]);
    return 2;
  }
  size_t nn = (size_t)n * n;
  float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
  if (!a || !b || !c) {
    fprintf(stderr, "gemm_peak: out of memory for N=%d\n", n);
    return 1;
  }
  unsigned s = 12345;
  for (size_t i = 0; i < nn; i++) {
    s = s * 1103515245u + 12345u;
    a[i] = (float)((s >> 8) & 0xffff) / 65536.0f - 0.5f;
    s = s * 1103515245u + 12345u;
    b[i] = (float)((s >> 8) & 0xffff) / 65536.0f - 0.5f;
    c[i] = 0.0f;
  }
  /* warm-up: thread pool start, page faults, caches */
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);

  enum { MAXREP = 1000 };
  static double t[MAXREP];
  int reps = 0;
  double start = now();
  clock_t cpu0 = clock();
  while (reps < MAXREP && (reps < 3 || now() - start < min_s)) {
    double t0 = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    t[reps++] = now() - t0;
  }
  double cpu_per_wall = (double)(clock() - cpu0) / CLOCKS_PER_SEC / (now() - start);
  qsort(t, reps, sizeof t[0], cmp);
  double flop = 2.0 * n * (double)n * n;
  double med = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
  printf("{\"threads\":%d,\"gflops\":%.1f,\"gflops_best\":%.1f,\"n\":%d,\"reps\":%d,"
         "\"core\":\"%s\",\"cpu_per_wall\":%.2f,\"checksum\":%.3f}\n",
         openblas_get_num_threads(), flop / med / 1e9, flop / t[0] / 1e9, n, reps,
         openblas_get_corename(), cpu_per_wall, (double)c[nn / 2]);
  free(a);
  free(b);
  free(c);
  return 0;
}
