// ggml's side of the single-thread quantize / dequantize comparison (docs/benchmarks.md, "GGML
// quantization, single thread"): the same heavy 4096x4096 matrix and importance weights as
// bench/ggml_quantize_bench.cpp, quantized with ggml_quantize_chunk and dequantized with the type's
// to_float, on one thread. Built against ggml by scripts/ggml-quantize-speed.sh, never by lowbit's CMake.
//
//   ggml_quantize_time TYPE...   (ggml type names: iq2_xxs iq3_s ...)
//
// Prints one line per type and mode, million values per second of the calling thread's CPU time
// (CLOCK_THREAD_CPUTIME_ID, which other processes on the machine inflate less than wall time), each mode
// repeated until it has run for at least 0.5 s, as Google Benchmark's MinTime(0.5) does on lowbit's side.
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml.h"

enum { kRows = 4096, kCols = 4096, kSlowRows = 256 };

// splitmix64 and the golden README's uniform / Gaussian draws (the same as the C++ benchmark's).
static uint64_t rng_state = 103;
static uint64_t next_u64(void) {
  rng_state += 0x9E3779B97F4A7C15ull;
  uint64_t z = rng_state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static double uniform(void) { return ((double)(next_u64() >> 11) + 0.5) / 9007199254740992.0; }
static double gaussian(void) {
  const double u1 = uniform(), u2 = uniform();
  return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static double cpu_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float* values;
static float importance[kCols];

static void draw_matrix(void) {
  values = malloc(sizeof(float) * (size_t)kRows * kCols);
  for (int64_t r = 0; r < kRows; ++r)
    for (int64_t c = 0; c < kCols; ++c) {
      const double z = gaussian();
      double chi = 0;
      for (int k = 0; k < 4; ++k) chi += pow(gaussian(), 2);
      const double spread = sqrt(chi / 4) > 0.05 ? sqrt(chi / 4) : 0.05;
      double v = 0.02 * (0.5 + 0.5 * (double)(r % 3)) * z / spread;
      if (uniform() < 0.001) v *= 20;
      values[r * kCols + c] = (float)v;
    }
  for (int c = 0; c < kCols; ++c) importance[c] = (float)(3 * pow(0.1 + uniform(), 2));
}

static int is_grid_search_type(enum ggml_type t) {
  return t == GGML_TYPE_IQ2_XXS || t == GGML_TYPE_IQ2_XS || t == GGML_TYPE_IQ2_S || t == GGML_TYPE_IQ3_XXS ||
         t == GGML_TYPE_IQ3_S || t == GGML_TYPE_IQ1_S || t == GGML_TYPE_IQ1_M;
}

static enum ggml_type type_named(const char* name) {
  for (int t = 0; t < GGML_TYPE_COUNT; ++t) {
    const char* n = ggml_type_name((enum ggml_type)t);
    if (n && strcmp(n, name) == 0) return (enum ggml_type)t;
  }
  fprintf(stderr, "unknown ggml type %s\n", name);
  exit(2);
}

static void time_quantize(enum ggml_type type, int with_weights, void* dst) {
  const int64_t rows = is_grid_search_type(type) ? kSlowRows : kRows;
  const float* w = with_weights ? importance : NULL;
  double spent = 0;
  int calls = 0;
  while (spent < 0.5) {
    const double start = cpu_seconds();
    ggml_quantize_chunk(type, values, dst, 0, rows, kCols, w);
    spent += cpu_seconds() - start;
    ++calls;
  }
  printf("quantize%s/%s %.3f Mvalues/s\n", with_weights ? "_weighted" : "", ggml_type_name(type),
         (double)calls * (double)(rows * kCols) / spent / 1e6);
}

static void time_dequantize(enum ggml_type type, int to_row_buffer, const uint8_t* blocks, float* out) {
  const ggml_to_float_t to_float = ggml_get_type_traits(type)->to_float;
  const size_t row_bytes = ggml_row_size(type, kCols);
  double spent = 0;
  int calls = 0;
  while (spent < 0.5) {
    const double start = cpu_seconds();
    for (int64_t r = 0; r < kRows; ++r) to_float(blocks + (size_t)r * row_bytes, out + (to_row_buffer ? 0 : r * kCols), kCols);
    spent += cpu_seconds() - start;
    ++calls;
  }
  printf("dequantize%s/%s %.1f Mvalues/s\n", to_row_buffer ? "_to_row_buffer" : "", ggml_type_name(type),
         (double)calls * (double)kRows * kCols / spent / 1e6);
}

int main(int argc, char** argv) {
  draw_matrix();
  float* out = malloc(sizeof(float) * (size_t)kRows * kCols);
  for (int a = 1; a < argc; ++a) {
    const enum ggml_type type = type_named(argv[a]);
    ggml_quantize_init(type);  // the search tables: built once, outside the timing
    const size_t row_bytes = ggml_row_size(type, kCols);
    uint8_t* blocks = malloc(row_bytes * kRows);
    if (!ggml_quantize_requires_imatrix(type)) time_quantize(type, 0, blocks);
    time_quantize(type, 1, blocks);
    ggml_quantize_chunk(type, values, blocks, 0, kRows, kCols, ggml_quantize_requires_imatrix(type) ? importance : NULL);
    time_dequantize(type, 0, blocks, out);
    time_dequantize(type, 1, blocks, out);
    free(blocks);
    fflush(stdout);
  }
  return 0;
}
