// ggml's i-quant quantizers against lowbit's in one process (docs/benchmarks.md, "iq1_s's split search in
// two passes"): the heavy matrix of bench/ggml_quantize_bench.cpp (its first 256 rows and the importance
// weights), quantized on one thread by ggml_quantize_chunk (libggml-base) and by lowbit's row quantizer,
// alternately, round after round, so both sides meet the same load. Each timing repeats until it has run
// 0.5 s of the thread's CPU time; every round also compares the two sides' bytes. Not built by lowbit's
// CMake (it needs a ggml build); from the repository root, with ggml d99724f2 built as
// scripts/ggml-quantize-speed.sh builds it in GGML:
//
//   g++ -O2 -std=c++20 -I GGML/include -I include -I src bench/ggml_reference/ggml_iq_race.cpp
//       build/liblowbit_formats.a build/liblowbit_core.a -lfmt -lhwy -lpthread
//       -L GGML/build/src -lggml-base -Wl,-rpath,GGML/build/src -o ggml_iq_race     (one line)
//   ./ggml_iq_race ROUNDS TARGET TYPE...     (TARGET: best, avx512, avx2 or scalar; TYPE: iq1_s ... iq3_s)
//
// Prints each round's rates (million values per second) and ratio, then per type and mode the best
// round of each side, their ratio and the median (range) of the per-round ratios.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

extern "C" {
#include "ggml.h"
}
#include "lowbit/formats/cpu_target.h"
#include "lowbit/formats/ggml_iq1.h"
#include "lowbit/formats/ggml_iq2.h"
#include "lowbit/formats/ggml_iq3.h"

namespace {

constexpr int kRows = 4096, kCols = 4096, kTimedRows = 256;

// splitmix64 and the golden README's uniform / Gaussian draws (as bench/ggml_quantize_bench.cpp).
uint64_t rng_state = 103;
uint64_t next_u64() {
  rng_state += 0x9E3779B97F4A7C15ull;
  uint64_t z = rng_state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
double uniform() { return (double(next_u64() >> 11) + 0.5) / 9007199254740992.0; }
double gaussian() {
  const double u1 = uniform(), u2 = uniform();
  return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
}

double thread_cpu_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

using lowbit::cpu::CpuTarget;
using RowQuantizer = void (*)(const float*, void*, int64_t, const float*, CpuTarget);
struct IqType {
  const char* name;
  ggml_type type;
  RowQuantizer lowbit;
  bool requires_weights;
};
const IqType kTypes[] = {
    {"iq1_s", GGML_TYPE_IQ1_S, lowbit::ggml::quantize_row_iq1_s, true},
    {"iq1_m", GGML_TYPE_IQ1_M, lowbit::ggml::quantize_row_iq1_m, false},
    {"iq2_xxs", GGML_TYPE_IQ2_XXS, lowbit::ggml::quantize_row_iq2_xxs, true},
    {"iq2_xs", GGML_TYPE_IQ2_XS, lowbit::ggml::quantize_row_iq2_xs, true},
    {"iq2_s", GGML_TYPE_IQ2_S, lowbit::ggml::quantize_row_iq2_s, false},
    {"iq3_xxs", GGML_TYPE_IQ3_XXS, lowbit::ggml::quantize_row_iq3_xxs, false},
    {"iq3_s", GGML_TYPE_IQ3_S, lowbit::ggml::quantize_row_iq3_s, false},
};

struct Mode {
  const IqType* type;
  bool weighted;
  std::vector<double> ggml, lowbit;  // million values per second, one per round
};

// Calls `quantize` until it has run 0.5 s of CPU time; million values per second.
template <typename F>
double rate(F quantize) {
  double spent = 0;
  int calls = 0;
  while (spent < 0.5) {
    const double start = thread_cpu_seconds();
    quantize();
    spent += thread_cpu_seconds() - start;
    ++calls;
  }
  return calls * double(kTimedRows) * kCols / spent / 1e6;
}

// The CPU target named on the command line; "best" (or any other name): the fastest this CPU runs.
CpuTarget target_named(const std::string& name) {
  for (const CpuTarget t : {CpuTarget::scalar, CpuTarget::avx2, CpuTarget::avx512})
    if (name == lowbit::cpu::cpu_target_name(t)) return t;
  return lowbit::cpu::best_cpu_target();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: ggml_iq_race ROUNDS best|avx512|avx2|scalar TYPE...\n");
    return 2;
  }
  const int rounds = std::atoi(argv[1]);
  const std::string target = argv[2];
  const CpuTarget cpu_target = target_named(target);
  if (!lowbit::cpu::cpu_supports(cpu_target)) {
    std::fprintf(stderr, "this CPU cannot run the %s kernels\n", target.c_str());
    return 2;
  }

  std::vector<float> x(size_t(kRows) * kCols), weights(kCols);
  for (int r = 0; r < kRows; ++r)
    for (int c = 0; c < kCols; ++c) {
      const double z = gaussian();
      double chi = 0;
      for (int k = 0; k < 4; ++k) chi += std::pow(gaussian(), 2);
      double v = 0.02 * (0.5 + 0.5 * double(r % 3)) * z / std::max(std::sqrt(chi / 4), 0.05);
      if (uniform() < 0.001) v *= 20;
      x[size_t(r) * kCols + c] = float(v);
    }
  for (float& w : weights) w = float(3 * std::pow(0.1 + uniform(), 2));

  std::vector<Mode> modes;
  for (int a = 3; a < argc; ++a)
    for (const IqType& t : kTypes)
      if (!std::strcmp(argv[a], t.name)) {
        ggml_quantize_init(t.type);  // ggml's search tables, outside the timing (lowbit's: first call below)
        if (!t.requires_weights) modes.push_back({&t, false, {}, {}});
        modes.push_back({&t, true, {}, {}});
      }
  int differing = 0;
  for (int round = 0; round < rounds; ++round)
    for (Mode& m : modes) {
      const size_t row_bytes = ggml_row_size(m.type->type, kCols);
      std::vector<uint8_t> theirs(row_bytes * kTimedRows), ours(row_bytes * kTimedRows);
      const float* w = m.weighted ? weights.data() : nullptr;
      m.ggml.push_back(rate([&] { ggml_quantize_chunk(m.type->type, x.data(), theirs.data(), 0, kTimedRows, kCols, w); }));
      m.type->lowbit(x.data(), ours.data(), kCols, w, cpu_target);
      m.lowbit.push_back(rate([&] {
        for (int r = 0; r < kTimedRows; ++r)
          m.type->lowbit(x.data() + size_t(r) * kCols, ours.data() + r * row_bytes, kCols, w, cpu_target);
      }));
      if (theirs != ours) {
        ++differing;
        std::printf("BYTES DIFFER %s w=%d\n", m.type->name, int(m.weighted));
      }
      std::printf("round %d %-8s w=%d ggml %7.3f lowbit %7.3f ratio %5.2f\n", round, m.type->name, int(m.weighted),
                  m.ggml.back(), m.lowbit.back(), m.lowbit.back() / m.ggml.back());
      std::fflush(stdout);
    }
  for (const Mode& m : modes) {
    std::vector<double> ratios;
    for (size_t i = 0; i < m.ggml.size(); ++i) ratios.push_back(m.lowbit[i] / m.ggml[i]);
    std::sort(ratios.begin(), ratios.end());
    const double ggml_best = *std::max_element(m.ggml.begin(), m.ggml.end());
    const double lowbit_best = *std::max_element(m.lowbit.begin(), m.lowbit.end());
    std::printf("%-8s w=%d target=%s: ggml best %.3f, lowbit best %.3f, best/best %.2fx, per-round median %.2fx (%.2f-%.2f)\n",
                m.type->name, int(m.weighted), target.c_str(), ggml_best, lowbit_best, lowbit_best / ggml_best,
                ratios[ratios.size() / 2], ratios.front(), ratios.back());
  }
  std::printf(differing ? "BYTES DIFFER\n" : "bytes identical to ggml's\n");
  return differing != 0;
}
