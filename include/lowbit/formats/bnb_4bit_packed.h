// A bitsandbytes 4-bit weight as its checkpoint stores it (bnb_4bit.h defines the format), viewed
// where the bytes already are: what a runtime uploads to multiply by the weight without dequantizing
// it first. A view, not a copy: the memory it points into (a mapped checkpoint) must outlive it.
// The CPU's reading of it is bnb_4bit.h's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "lowbit/core/dtype.h"
#include "lowbit/formats/format.h"

namespace lowbit::bnb {

// The scales are plain (one float32 absmax per block) or double-quantized (one 8-bit code per block
// over bitsandbytes' own nested map, dynamic_map_signed(), in groups of kNestedBlocksize with one
// float32 nested absmax each, plus an offset). Byte spans throughout: a safetensors file need not
// align its floats.
struct Packed4bitView {
  FormatId format = FormatId::nf4;  // nf4 or fp4
  int64_t blocksize = 64;
  DType dtype = DType::bf16;  // the quant state's dtype: what dequantization returns
  std::span<const std::byte> packed;         // ceil(elements / 2) bytes, element 2i in the high nibble
  std::span<const std::byte> absmax;         // float32 per block; double quant: a uint8 code per block
  std::span<const std::byte> nested_absmax;  // double quant: float32 per kNestedBlocksize blocks; else empty
  float nested_offset = 0.0f;                // double quant: added to every recovered scale
  // Empty: the matrix's rows as stored. Else row r of the matrix is stored row row_order[r] (llama.cpp's
  // order of Q/K rows): a reader moves whole rows of codes, and of scales where no block spans two rows.
  std::span<const int32_t> row_order;

  bool double_quant() const { return !nested_absmax.empty(); }
};

// The float32 scale of every block in stored order, as dequantization multiplies by it (nested ones
// recovered exactly as bnb::dequantize_4bit recovers them).
std::vector<float> block_scales(const Packed4bitView& view);

}  // namespace lowbit::bnb
