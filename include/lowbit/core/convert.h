// Bulk conversion between float dtypes (f32, f16, bf16, f64) and float32.
#pragma once

#include <cstddef>
#include <span>

#include "lowbit/core/dtype.h"

namespace lowbit {

// Converts `count` elements of `src_dtype` at `src` into float32. Throws for non-float dtypes.
void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t count);
// Converts float32 into `dst_dtype`, rounding to nearest even. Throws for non-float dtypes.
void convert_from_f32(const float* src, DType dst_dtype, void* dst, size_t count);

}  // namespace lowbit
