// The GPU codecs give the CPU codecs' bytes: every kernel of include/lowbit/kernels/cuda/codecs.h on
// fresh heavy-tailed random data (a new seed each run, printed), outputs poisoned with 0xFF before
// every launch, compared bit for bit. Skips on machines without a GPU (CI); run on the device
// machine by scripts/device-check.sh.
#include <gtest/gtest.h>

#ifdef LOWBIT_HAVE_CUDA
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/core/tensor.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_int8.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/kernels/cuda/codecs.h"
#include "lowbit/kernels/cuda/device.h"
#include "lowbit/kernels/cuda/matmul.h"
#include "cuda_test_support.h"
#include "kernels/cuda/ggml_kernel_table.h"

namespace lowbit {
namespace {

constexpr DType kFloatTypes[] = {DType::f32, DType::f16, DType::bf16};

// ---- bitsandbytes 4-bit ----

struct Bnb4bitCase {
  int64_t n, blocksize;
};
// Odd lengths, tails shorter than a block, blocks wider than a thread block, several nested blocks.
constexpr Bnb4bitCase kBnb4bitCases[] = {{1, 64},     {7, 32},       {1001, 64},      {20483, 128},
                                         {65537, 4096}, {300001, 256}, {1 << 20, 64}, {262144 + 40, 2048}};

TEST(CudaCodecs, Bnb4bitQuantizeMatchesCpu) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const auto& c : kBnb4bitCases)
    for (bnb::QuantType type : {bnb::QuantType::nf4, bnb::QuantType::fp4})
      for (DType dtype : kFloatTypes) {
        const std::string what = std::string(bnb::quant_type_name(type)) + " " + std::string(dtype_name(dtype)) +
                                 " n=" + std::to_string(c.n) + " blocksize=" + std::to_string(c.blocksize);
        std::vector<float> x = heavy_tailed(size_t(c.n));
        if (c.n > 3 * c.blocksize) std::fill_n(x.begin() + c.blocksize, c.blocksize, 0.0f);  // one all-zero block
        const Tensor input = as_dtype(x, dtype);
        const int64_t blocks = (c.n + c.blocksize - 1) / c.blocksize, bytes = (c.n + 1) / 2;
        DeviceBytes d_in{input.buffer.size()}, d_packed{size_t(bytes)}, d_absmax{size_t(blocks) * 4};
        DeviceBytes d_codes{size_t(blocks)}, d_nested{size_t((blocks + 255) / 256) * 4}, d_offset{4};
        d_in.upload(input.buffer.data(), input.buffer.size());
        const cuda::Quantized4bitBuffers out{d_packed.as<uint8_t>(), d_absmax.as<float>(), d_codes.as<uint8_t>(),
                                             d_nested.as<float>(), d_offset.as<float>()};
        cuda::quantize_4bit(type, dtype, d_in.ptr, c.n, c.blocksize, true, out, nullptr);
        float gpu_offset = 0.0f;
        std::memcpy(&gpu_offset, d_offset.download(4).data(), 4);

        const bnb::Bnb4bitQuantized cpu =
            bnb::quantize_4bit(input.view(), {.quant_type = type, .blocksize = c.blocksize, .double_quant = false});
        EXPECT_SAME_BYTES(bytes_of(cpu.packed.data(), cpu.packed.size()), d_packed.download(size_t(bytes)), 1,
                          what + " packed");
        EXPECT_SAME_BYTES(bytes_of(cpu.state.absmax.data(), cpu.state.absmax.size()), d_absmax.download(size_t(blocks) * 4),
                          4, what + " absmax");
        // The offset: the float nearest the mean on both sides (see quantize_4bit in codecs.h);
        // the nested codes are compared given the GPU's offset.
        EXPECT_EQ(gpu_offset, bnb::mean_to_nearest_float(cpu.state.absmax)) << what << " offset";
        const bnb::NestedAbsmax nested = bnb::quantize_absmax_nested(cpu.state.absmax, gpu_offset);
        EXPECT_SAME_BYTES(bytes_of(nested.codes.data(), nested.codes.size()), d_codes.download(size_t(blocks)), 1,
                          what + " nested codes");
        EXPECT_SAME_BYTES(bytes_of(nested.nested_absmax.data(), nested.nested_absmax.size()),
                          d_nested.download(nested.nested_absmax.size() * 4), 4, what + " nested absmax");
      }
}

TEST(CudaCodecs, Bnb4bitDequantizeMatchesCpu) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const auto& c : kBnb4bitCases)
    for (bnb::QuantType type : {bnb::QuantType::nf4, bnb::QuantType::fp4})
      for (bool double_quant : {false, true}) {
        const Tensor input = as_dtype(heavy_tailed(size_t(c.n)), DType::f32);
        const bnb::Bnb4bitQuantized q = bnb::quantize_4bit(
            input.view(), {.quant_type = type, .blocksize = c.blocksize, .double_quant = double_quant});
        DeviceBytes d_packed(q.packed.size()), d_absmax(q.state.absmax.size() * 4 + 4), d_codes{size_t(q.state.blocks())};
        DeviceBytes d_nested(double_quant ? q.state.nested->nested_absmax.size() * 4 : 4), d_offset(4);
        d_packed.upload(q.packed.data(), q.packed.size());
        if (double_quant) {
          d_codes.upload(q.state.nested->codes.data(), q.state.nested->codes.size());
          d_nested.upload(q.state.nested->nested_absmax.data(), d_nested.size);
          d_offset.upload(&q.state.nested->offset, 4);
        } else {
          d_absmax.upload(q.state.absmax.data(), q.state.absmax.size() * 4);
        }
        for (DType out_dtype : kFloatTypes)
          for (size_t misalign : {size_t(0), dtype_size(out_dtype)}) {  // one element off: the scalar path
            if (misalign && c.n > 100000) continue;
            const std::string what = std::string(bnb::quant_type_name(type)) + (double_quant ? "+dq" : "") + " -> " +
                                     std::string(dtype_name(out_dtype)) + " n=" + std::to_string(c.n) +
                                     " blocksize=" + std::to_string(c.blocksize) + (misalign ? " unaligned" : "");
            const Tensor cpu = bnb::dequantize_4bit(q.packed, q.state, out_dtype);
            DeviceBytes d_out(cpu.buffer.size() + misalign);
            void* out = d_out.as<std::byte>(misalign);
            if (double_quant)
              cuda::dequantize_4bit(type, d_packed.as<uint8_t>(),
                                    cuda::NestedScales{d_codes.as<uint8_t>(), d_nested.as<float>(), d_offset.as<float>()},
                                    c.n, c.blocksize, out_dtype, out, nullptr);
            else
              cuda::dequantize_4bit(type, d_packed.as<uint8_t>(), d_absmax.as<float>(), c.n, c.blocksize, out_dtype, out,
                                    nullptr);
            EXPECT_SAME_BYTES(bytes_of(cpu.buffer.data(), cpu.buffer.size()), d_out.download(cpu.buffer.size(), misalign),
                              dtype_size(out_dtype), what);
            // Nothing written past the end: the 0xFF guard bytes are intact.
            const auto guard = d_out.download(16, cpu.buffer.size() + misalign);
            EXPECT_EQ(guard, std::vector<std::byte>(16, std::byte{0xFF})) << what << " wrote past the end";
          }
      }
}

// ---- bitsandbytes int8 row-wise ----

TEST(CudaCodecs, Int8RowwiseMatchesCpu) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  struct Shape2 { int64_t rows, cols; };
  for (const Shape2 s : {Shape2{1, 1}, Shape2{3, 17}, Shape2{5, 64}, Shape2{129, 1000}, Shape2{64, 4096}, Shape2{300, 2056}})
    for (DType dtype : kFloatTypes) {
      const std::string what = std::string(dtype_name(dtype)) + " " + std::to_string(s.rows) + "x" + std::to_string(s.cols);
      std::vector<float> x = heavy_tailed(size_t(s.rows * s.cols));
      if (s.rows > 2) std::fill_n(x.begin() + s.cols, s.cols, 0.0f);  // a zero row: codes 0, SCB 0
      Tensor input = as_dtype(x, dtype);
      input.shape = {s.rows, s.cols};
      const bnb::Int8RowwiseQuantized cpu = bnb::quantize_int8_rowwise(input.view(), 0.0f);
      DeviceBytes d_in{input.buffer.size()}, d_cb{size_t(s.rows * s.cols)}, d_scb{size_t(s.rows) * 4};
      d_in.upload(input.buffer.data(), input.buffer.size());
      cuda::quantize_int8_rowwise(dtype, d_in.ptr, s.rows, s.cols, d_cb.as<int8_t>(), d_scb.as<float>(), nullptr);
      EXPECT_SAME_BYTES(bytes_of(cpu.cb.data(), cpu.cb.size()), d_cb.download(cpu.cb.size()), 1, what + " CB");
      EXPECT_SAME_BYTES(bytes_of(cpu.scb.data(), cpu.scb.size()), d_scb.download(cpu.scb.size() * 4), 4, what + " SCB");

      const Tensor cpu_f32 = bnb::dequantize_int8_rowwise(cpu);
      for (DType out_dtype : kFloatTypes) {
        std::vector<std::byte> expected(cpu_f32.buffer.size() / 4 * dtype_size(out_dtype));
        convert_from_f32(reinterpret_cast<const float*>(cpu_f32.buffer.data()), out_dtype, expected.data(),
                         size_t(s.rows * s.cols));
        DeviceBytes d_out(expected.size());
        cuda::dequantize_int8_rowwise(d_cb.as<int8_t>(), d_scb.as<float>(), s.rows, s.cols, out_dtype, d_out.ptr,
                                      nullptr);
        EXPECT_SAME_BYTES(expected, d_out.download(expected.size()), dtype_size(out_dtype),
                          what + " dequantize -> " + std::string(dtype_name(out_dtype)));
      }
    }
}

// ---- ggml ----

// Byte offsets of each type's fp16 fields, made finite in random blocks (NaN payloads would differ).
std::vector<int> half_fields(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_1: case GgmlType::Q5_1: case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, 2};
    case GgmlType::Q2_K: return {80, 82};
    case GgmlType::Q3_K: return {108};
    case GgmlType::Q6_K: return {208};
    case GgmlType::TQ1_0: return {52};
    case GgmlType::TQ2_0: return {64};
    case GgmlType::IQ1_M: return {};  // d's bits are spread over the scales: see finite_iq1_m_scale
    case GgmlType::MXFP4: case GgmlType::NVFP4: return {};  // 8-bit scales, all finite
    default: return {0};
  }
}

// iq1_m's d takes its top nibble from bits 12-15 of the last scale word (bytes 54-55): clearing bit 14
// of d (bit 6 of byte 55) keeps its exponent below 31.
void finite_iq1_m_scale(uint8_t* block) { block[55] &= uint8_t(~0x40); }

// Every quantized ggml type lowbit writes: the GPU must decode each of them.
std::vector<GgmlType> quantized_ggml_types() {
  std::vector<GgmlType> types;
  for (const FormatInfo& f : kFormats)
    if (f.ggml && f.quantized && ggml_codec(*f.ggml)) types.push_back(*f.ggml);
  return types;
}

// ggml quantizes iq1_s, iq2_xxs and iq2_xs only with importance weights; the others get them for the
// shapes of odd row counts, so both of their quantizer paths feed the decoder.
std::vector<float> importance_weights(int64_t cols) {
  std::uniform_real_distribution<float> u(0.01f, 4.0f);
  std::vector<float> w(static_cast<size_t>(cols));
  for (float& v : w) v = u(rng());
  return w;
}

TEST(CudaCodecs, GgmlDequantizeMatchesCpu) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  struct Shape2 { int64_t rows, cols; };
  for (GgmlType type : quantized_ggml_types()) {
    ASSERT_TRUE(cuda::has_ggml_dequantize(type));
    const FormatInfo& info = ggml_type_info(type);
    for (const Shape2 s : {Shape2{1, 256}, Shape2{3, 768}, Shape2{17, 4096}, Shape2{256, 2816}})
      for (bool random_bytes : {false, true}) {  // blocks from the CPU quantizer, or any bit pattern
        const size_t row_bytes = ggml_row_bytes(type, s.cols), total = row_bytes * size_t(s.rows);
        std::vector<uint8_t> blocks(total);
        if (random_bytes) {
          for (uint8_t& b : blocks) b = uint8_t(rng()());
          for (size_t block = 0; block < total / info.block_bytes; ++block) {
            for (int field : half_fields(type)) {
              uint8_t& high = blocks[block * info.block_bytes + size_t(field) + 1];
              if ((high & 0x7c) == 0x7c) high &= uint8_t(~0x04);  // exponent 31 (Inf/NaN) -> 30
            }
            if (type == GgmlType::IQ1_M) finite_iq1_m_scale(&blocks[block * info.block_bytes]);
          }
        } else {
          const std::vector<float> x = heavy_tailed(size_t(s.rows * s.cols));
          const std::vector<float> weights = importance_weights(s.cols);
          const bool weighted = ggml_requires_imatrix(type) || s.rows % 2 == 1;
          quantize_rows(type, x.data(), s.rows, s.cols, weighted ? weights.data() : nullptr, blocks.data());
        }
        std::vector<float> cpu(size_t(s.rows * s.cols));
        dequantize_rows(type, blocks.data(), s.rows, s.cols, cpu.data());
        DeviceBytes d_blocks(total);
        d_blocks.upload(blocks.data(), total);
        for (DType out_dtype : kFloatTypes)
          for (size_t misalign : {size_t(0), dtype_size(out_dtype)}) {  // one element off: the scalar path
            const std::string what = std::string(info.name) + " -> " + std::string(dtype_name(out_dtype)) + " " +
                                     std::to_string(s.rows) + "x" + std::to_string(s.cols) +
                                     (random_bytes ? " random bytes" : " quantized") + (misalign ? " unaligned" : "");
            std::vector<std::byte> expected(cpu.size() * dtype_size(out_dtype));
            convert_from_f32(cpu.data(), out_dtype, expected.data(), cpu.size());
            DeviceBytes d_out(expected.size() + misalign);
            cuda::dequantize_ggml(type, d_blocks.ptr, s.rows, s.cols, out_dtype, d_out.as<std::byte>(misalign), nullptr);
            EXPECT_SAME_BYTES(expected, d_out.download(expected.size(), misalign), dtype_size(out_dtype), what);
          }
      }
  }
}

// The CUDA backend claims every format lowbit writes to a GGUF (every registry format with a ggml codec,
// the float types included): each has exactly one row of its kernel table, and the table names no
// other. A lookup, so it runs without a GPU.
TEST(CudaCodecs, KernelTableHasARowForEveryWrittenFormat) {
  std::set<FormatId> written;
  for (const FormatInfo& info : kFormats)
    if (info.ggml && ggml_codec(*info.ggml) != nullptr) written.insert(info.id);
  std::set<FormatId> rows;
  for (const cuda::detail::CudaFormatKernels* row : cuda::detail::all_format_kernels()) {
    EXPECT_TRUE(rows.insert(row->format).second) << "two rows for " << format_name(row->format);
    EXPECT_NE(row->dequantize, nullptr) << format_name(row->format);
    EXPECT_NE(row->matvec, nullptr) << format_name(row->format);
    EXPECT_EQ(cuda::detail::find_format_kernels(row->format), row) << format_name(row->format);
  }
  for (FormatId id : written) EXPECT_TRUE(rows.contains(id)) << format_name(id) << " has no CUDA kernels";
  for (FormatId id : rows) EXPECT_TRUE(written.contains(id)) << format_name(id) << " has CUDA kernels but no codec";
  for (const FormatInfo& info : kFormats)
    if (info.ggml) {
      EXPECT_EQ(cuda::has_ggml_dequantize(*info.ggml), rows.contains(info.id)) << info.name;
    }
  EXPECT_FALSE(cuda::has_ggml_dequantize(GgmlType(9999)));  // an id ggml does not define
}

// A format without kernels is refused by name, before anything is launched.
TEST(CudaCodecs, FormatWithoutKernelsIsNamed) {
  try {
    cuda::dequantize_ggml(GgmlType::Q8_1, nullptr, 1, 32, DType::f32, nullptr, nullptr);
    FAIL() << "q8_1 has no CUDA kernels";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q8_1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda::matvec_ggml(GgmlType::Q8_K, nullptr, 1, 256, nullptr, 1, nullptr, false, nullptr), Error);
}

TEST(CudaCodecs, RejectsBadArguments) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  EXPECT_THROW(cuda::dequantize_ggml(GgmlType::Q4_K, nullptr, 1, 100, DType::f32, nullptr, nullptr), Error);
  EXPECT_THROW(cuda::dequantize_ggml(GgmlType::Q8_K, nullptr, 1, 256, DType::f32, nullptr, nullptr), Error);  // ggml's dot-product type
  EXPECT_FALSE(cuda::has_ggml_dequantize(GgmlType::Q8_1));
  EXPECT_THROW(cuda::dequantize_4bit(bnb::QuantType::nf4, nullptr, static_cast<const float*>(nullptr), 64, 48,
                                     DType::f32, nullptr, nullptr),
               Error);
  EXPECT_THROW(cuda::quantize_4bit(bnb::QuantType::nf4, DType::i8, nullptr, 64, 64, nullptr, nullptr, nullptr), Error);
}

}  // namespace
}  // namespace lowbit
#else
TEST(CudaCodecs, NotBuilt) { GTEST_SKIP() << "lowbit was built without CUDA (LOWBIT_CUDA=OFF)"; }
#endif
