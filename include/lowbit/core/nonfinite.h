// lowbit's NaN/Inf policy, shared by every job that writes weights: a value its destination cannot
// hold (NaN, ±Inf, a finite value beyond an f16/bf16 output's range, a non-finite scale of a quantized
// source or a bitsandbytes statistic) is an Error naming the file, the tensor, the element and the
// reason. With `allow` (--allow-nonfinite) such values are reported, counted and kept where the format
// can store them (f32/f16/bf16 values); block formats cannot, and a non-finite block scale is never
// written, whatever the policy.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace lowbit {

struct NonfinitePolicy {
  bool allow = false;
  // With allow: called once per tensor holding misfits, with a one-line description.
  std::function<void(const std::string&)> report;
};

// What a job let through under --allow-nonfinite.
struct NonfiniteCount {
  int64_t values = 0;   // misfit values (and non-finite source scales) kept
  int64_t tensors = 0;  // tensors holding them
};

}  // namespace lowbit
