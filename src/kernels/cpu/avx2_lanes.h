// What the AVX2 search kernels share (included inside their x86-64 sections, whose functions carry
// target("avx2")): the sequential scan's choice among the lanes of one vector of candidates.
#pragma once

#include <immintrin.h>

namespace lowbit::cpu::avx2 {

// A vector of 8 lanes from 8 mask bits (all ones where the bit is set), and a lane mask back to bits.
__attribute__((target("avx2"))) inline __m256 lanes_of(unsigned bits) {
  const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(int(bits)), lane_bit), lane_bit));
}
__attribute__((target("avx2"))) inline unsigned bits_of(__m256 lanes) { return unsigned(_mm256_movemask_ps(lanes)); }
__attribute__((target("avx2"))) inline unsigned bits_of(__m256i lanes) { return bits_of(_mm256_castsi256_ps(lanes)); }

// Candidates first .. first + 7 have distances d2; `better` marks those in the list that compared
// below best_d2. The first lane holding their least distance replaces the best so far: the candidate a
// scan in list order keeps (a tie goes to the lower index, a NaN never wins).
__attribute__((target("avx2"))) inline void keep_first_least(__m256 d2, unsigned better, int first, float& best_d2, int& best) {
  if (!better) return;  // the common case: nothing stored
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, d2);
  for (; better; better &= better - 1) {
    const int lane = __builtin_ctz(better);
    if (lanes[lane] < best_d2) best_d2 = lanes[lane], best = first + lane;
  }
}

}  // namespace lowbit::cpu::avx2
