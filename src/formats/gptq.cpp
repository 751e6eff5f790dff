#include "lowbit/formats/gptq.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>

#include "formats/bnb_4bit_blocks.h"
#include "formats/ggml_block_grid.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/ggml_codecs.h"

namespace lowbit {
namespace {

// In place: the lower Cholesky factor L of the n × n row-major a (L Lᵀ = a; only a's lower triangle is
// read). False when a pivot is not positive: a is not positive definite in double precision.
bool cholesky_lower(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double* aj = a.data() + j * n;
    double pivot = aj[j];
    for (int64_t k = 0; k < j; ++k) pivot -= aj[k] * aj[k];
    if (!(pivot > 0)) return false;
    aj[j] = std::sqrt(pivot);
    parallel_for(n - j - 1, 64, [&](int64_t begin, int64_t end) {
      for (int64_t i = j + 1 + begin; i < j + 1 + end; ++i) {
        double* ai = a.data() + i * n;
        double s = ai[j];
        for (int64_t k = 0; k < j; ++k) s -= ai[k] * aj[k];
        ai[j] = s / aj[j];
      }
    });
  }
  return true;
}

// (L Lᵀ)⁻¹ from the lower factor L (row-major, n × n): with M = L⁻¹, the inverse is Mᵀ M. Column c of
// M solves L y = e_c; it is kept as row c of Mᵀ, so both steps read contiguous rows.
std::vector<double> inverse_from_cholesky(const std::vector<double>& l, int64_t n) {
  std::vector<double> mt(size_t(n * n), 0.0);  // Mᵀ: upper triangular
  parallel_for(n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double* y = mt.data() + c * n;  // y[i] = M[i][c], zero for i < c
      for (int64_t i = c; i < n; ++i) {
        const double* li = l.data() + i * n;
        double s = i == c ? 1.0 : 0.0;
        for (int64_t k = c; k < i; ++k) s -= li[k] * y[k];
        y[i] = s / li[i];
      }
    }
  });
  std::vector<double> inv(size_t(n * n));
  parallel_for(n, 8, [&](int64_t begin, int64_t end) {
    for (int64_t a = begin; a < end; ++a)
      for (int64_t b = a; b < n; ++b) {
        const double* ra = mt.data() + a * n;
        const double* rb = mt.data() + b * n;
        double s = 0;
        for (int64_t k = b; k < n; ++k) s += ra[k] * rb[k];  // rows of Mᵀ are zero left of their index
        inv[size_t(a * n + b)] = s;
        inv[size_t(b * n + a)] = s;
      }
  });
  return inv;
}

// GPTQ's sweep over n rows held in w (n × cols, updated in place), in lazy batches of `batch` columns
// (GPTQ's "lazy block updates"): within a batch each column's error reaches the batch's later columns at
// once; the columns after it get the whole batch's errors in one pass at its end. For every row r and
// column j in order, quantize(r, j, wr) codes wr[j] (wr: row r's error-updated values) and returns the
// value its code stands for. A batch holds whole format blocks, so a block is up to date when the sweep
// reaches its first column, and the first column of each row in a batch starts a block.
template <class Quantize>
void sweep_rows(float* w, int64_t n, int64_t cols, int64_t batch, const GptqFactor& factor, Quantize&& quantize) {
  std::vector<float> err(size_t(n * batch));
  for (int64_t i1 = 0; i1 < cols; i1 += batch) {
    const int64_t i2 = std::min(cols, i1 + batch);
    for (int64_t r = 0; r < n; ++r) {
      float* wr = w + r * cols;
      for (int64_t j = i1; j < i2; ++j) {
        const float* u = factor.row(j);
        const float scaled_error = (wr[j] - quantize(r, j, wr)) / u[j];
        err[size_t(r * batch + (j - i1))] = scaled_error;
        for (int64_t k = j + 1; k < i2; ++k) wr[k] -= scaled_error * u[k];
      }
    }
    for (int64_t r = 0; r < n; ++r) {
      float* wr = w + r * cols;
      for (int64_t k = i1; k < i2; ++k) {
        const float scaled_error = err[size_t(r * batch + (k - i1))];
        if (scaled_error == 0) continue;
        const float* u = factor.row(k);
        for (int64_t c = i2; c < cols; ++c) wr[c] -= scaled_error * u[c];
      }
    }
  }
}

}  // namespace

GptqFactor::GptqFactor(std::span<const float> hessian, int64_t cols, float damp) : cols_(cols) {
  if (cols < 1 || hessian.size() != size_t(cols * cols))
    throw Error(fmt::format("a Hessian of {} values for {} columns", hessian.size(), cols), {.expected = "columns × columns values"});
  std::vector<double> h(hessian.begin(), hessian.end());
  double mean_diag = 0;
  for (int64_t i = 0; i < cols; ++i) {
    double& d = h[size_t(i * cols + i)];
    if (d == 0) d = 1;  // a dead input: its row and column are zero, so it couples to nothing
    mean_diag += d / double(cols);
  }
  for (int attempt = 0; attempt < 5; ++attempt, damp *= 10) {
    std::vector<double> l = h;
    for (int64_t i = 0; i < cols; ++i) l[size_t(i * cols + i)] += double(damp) * mean_diag;
    if (!cholesky_lower(l, cols)) continue;
    // U = the transposed lower factor of (H + λI)⁻¹.
    std::vector<double> inv = inverse_from_cholesky(l, cols);
    if (!cholesky_lower(inv, cols)) continue;
    upper_.assign(size_t(cols * cols), 0.0f);
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j <= i; ++j) upper_[size_t(j * cols + i)] = float(inv[size_t(i * cols + j)]);
    damp_used_ = damp;
    return;
  }
  throw Error(fmt::format("the Hessian is not positive definite, even with dampening {} of its mean diagonal", damp / 10),
              {.expected = "XᵀX of real activations"});
}

bool gptq_supports(GgmlType type) { return ggml::block_grid_codec(type) != nullptr; }

void gptq_quantize_rows(GgmlType type, const float* weights, int64_t rows, int64_t cols, const GptqFactor& factor,
                        const float* importance, void* dst, cpu::CpuTarget target) {
  const ggml::BlockGridCodec* grid = ggml::block_grid_codec(type);
  const GgmlCodec* codec = ggml_codec(type);
  if (!grid || !codec || !codec->quantize_row) throw Error(fmt::format("GPTQ cannot write {}", ggml_type_name(type)));
  if (factor.cols() != cols) throw Error(fmt::format("a Hessian factor of {} columns for rows of {}", factor.cols(), cols));
  const size_t row_bytes = ggml_row_bytes(type, cols);
  const int block_values = grid->block_values;
  const size_t block_bytes = ggml_type_info(type).block_bytes;
  const int64_t batch = std::max<int64_t>(block_values, 128);
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> w(weights + r0 * cols, weights + r1 * cols);  // the rows, error-updated as we go
    const int group_values = grid->group_values;
    std::vector<ggml::ValueGrid> grids(grid->grids ? size_t(block_values) : 0);
    std::vector<float> chosen(static_cast<size_t>(group_values)), weight(static_cast<size_t>(group_values));
    sweep_rows(w.data(), r1 - r0, cols, batch, factor, [&](int64_t r, int64_t j, const float* wr) {
      const int e = int(j % block_values);
      void* block = static_cast<std::byte*>(dst) + size_t(r0 + r) * row_bytes + size_t(j / block_values) * block_bytes;
      if (e == 0) {  // the format fits the block's scales from the updated values
        codec->quantize_row(wr + j, block, block_values, importance ? importance + j : nullptr, target);
        if (grid->grids) grid->grids(block, grids.data());
      }
      if (group_values > 1) {
        // A group codebook: at the group's first column its code is chosen for the group's current
        // values, each weighed by GPTQ's cost of an error there (1 / U_jj²); the later columns of the
        // group then take their chosen values, and their own updated values make the error fed forward.
        if (e % group_values == 0) {
          for (int k = 0; k < group_values; ++k) {
            const float u = factor.row(j + k)[j + k];
            weight[size_t(k)] = 1 / (u * u);
          }
          grid->set_group(block, e, wr + j, weight.data(), chosen.data());
        }
        return chosen[size_t(e % group_values)];
      }
      // A zero step (a block or sub-block scale stored as 0) keeps the code the quantizer chose.
      const ggml::ValueGrid& g = grids[size_t(e)];
      int q = grid->code(block, e);
      if (g.step != 0) {
        q = g.nearest(wr[j]);
        grid->set_code(block, e, q);
      }
      return g.value(q);
    });
  });
}

bnb::Int8RowwiseQuantized gptq_quantize_int8_rows(const TensorView& weight, const GptqFactor& factor,
                                                  std::string_view tensor_name, cpu::CpuTarget target) {
  const std::string name(tensor_name);
  if (weight.shape.size() != 2) throw Error("GPTQ writes 2-D weights", {.tensor = name});
  // The plain quantization gives the row scales (and checks the dtype and the values); the sweep then
  // chooses the codes under them.
  bnb::Int8RowwiseQuantized q = bnb::quantize_int8_rowwise(weight, 0.0f, tensor_name, target);
  const int64_t rows = q.rows, cols = q.cols;
  if (factor.cols() != cols) throw Error(fmt::format("a Hessian factor of {} columns for rows of {}", factor.cols(), cols), {.tensor = name});
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    std::vector<float> w(size_t((r1 - r0) * cols));
    convert_to_f32(weight.dtype, weight.bytes.data() + size_t(r0 * cols) * dtype_size(weight.dtype), w.data(), w.size());
    sweep_rows(w.data(), r1 - r0, cols, 128, factor, [&](int64_t r, int64_t j, const float* wr) {
      const float scb = q.scb[size_t(r0 + r)];
      const float v = gpu::mul_ftz(gpu::flush_subnormal(wr[j]), gpu::div_approx_ftz(127.0f, scb));  // NaN for a zero row: code 0, as bitsandbytes
      int8_t& code = q.cb[size_t((r0 + r) * cols + j)];
      code = std::isnan(v) ? int8_t(0) : int8_t(std::clamp(std::nearbyint(v), -127.0f, 127.0f));
      return bnb::int8_value(code, scb);
    });
  });
  return q;
}

bnb::Bnb4bitQuantized gptq_quantize_4bit(const TensorView& weight, const bnb::Bnb4bitOptions& options, const GptqFactor& factor,
                                         std::string_view tensor_name) {
  const std::string name(tensor_name);
  if (weight.shape.size() != 2) throw Error("GPTQ writes 2-D weights", {.tensor = name});
  if (weight.dtype != DType::f32 && weight.dtype != DType::f16 && weight.dtype != DType::bf16)
    throw Error(fmt::format("GPTQ cannot read {} values", dtype_name(weight.dtype)), {.tensor = name, .expected = "f32, f16 or bf16"});
  bnb::check_blocksize_4bit(options.blocksize, tensor_name);
  const int64_t rows = weight.shape[0], cols = weight.shape[1], bs = options.blocksize;
  if (factor.cols() != cols) throw Error(fmt::format("a Hessian factor of {} columns for rows of {}", factor.cols(), cols), {.tensor = name});
  if (cols % bs != 0)
    throw Error(fmt::format("GPTQ needs the 4-bit blocks within rows: {} columns are not a multiple of blocksize {}", cols, bs),
                {.tensor = name});
  bnb::Bnb4bitQuantized result;
  bnb::Bnb4bitState& state = result.state;
  state.quant_type = options.quant_type;
  state.blocksize = bs;
  state.dtype = weight.dtype;
  state.shape = weight.shape;
  state.code = bnb::code_map(options.quant_type);
  result.packed.assign(size_t(state.packed_bytes()), 0);
  state.absmax.assign(size_t(state.blocks()), 0.0f);
  // What dequantization multiplies a code by (bnb_4bit.cpp's kernel LUT: FP4's code 8 is -0.0).
  const std::array<float, 16>& lut = options.quant_type == bnb::QuantType::nf4 ? bnb::tables::kNf4Code : bnb::tables::kFp4KernelLut;
  const int64_t batch = std::max<int64_t>(bs, 128);  // whole blocks: a block is up to date when its absmax is taken
  std::atomic<int64_t> first_bad{-1};
  parallel_for(rows, 16, [&](int64_t r0, int64_t r1) {
    const int64_t n = r1 - r0;
    std::vector<float> w(size_t(n * cols));
    for (int64_t r = 0; r < n; ++r)
      if (const int64_t bad = bnb::detail::load_block_f32(weight, (r0 + r) * cols, cols, w.data() + r * cols); bad >= 0) {
        int64_t seen = first_bad.load();
        while ((seen < 0 || (r0 + r) * cols + bad < seen) && !first_bad.compare_exchange_weak(seen, (r0 + r) * cols + bad)) {}
        return;
      }
    float absmax = 0, scale = 0;  // of the block the sweep is in
    sweep_rows(w.data(), n, cols, batch, factor, [&](int64_t r, int64_t j, const float* wr) {
      const int64_t element = (r0 + r) * cols + j;  // in the flat tensor, whose blocks bitsandbytes counts
      if (j % bs == 0) {
        absmax = state.absmax[size_t(element / bs)] = bnb::detail::block_absmax_of(wr + j, bs);
        scale = gpu::rcp_approx_ftz(absmax);
      }
      const uint8_t code = bnb::detail::quantize_4bit_value(options.quant_type, gpu::flush_subnormal(wr[j]), scale);
      uint8_t& byte = result.packed[size_t(element / 2)];
      byte = uint8_t(element % 2 == 0 ? (byte & 0x0f) | code << 4 : (byte & 0xf0) | code);
      return gpu::mul_ftz(lut[code], absmax);
    });
  });
  if (first_bad.load() >= 0)
    throw Error(fmt::format("GPTQ {}: element {} is not finite", bnb::quant_type_name(options.quant_type), first_bad.load()),
                {.tensor = name, .expected = "finite values"});
  if (options.double_quant) {
    state.nested = bnb::quantize_absmax_nested(state.absmax, options.nested_offset, options.target);
    state.absmax.clear();
  }
  return result;
}

}  // namespace lowbit
