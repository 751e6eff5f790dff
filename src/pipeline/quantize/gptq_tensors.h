// quantize --gptq for GGUF outputs: which tensors GPTQ writes (lowbit/formats/gptq.h), with which
// Hessian, and their bytes. A matrix of the layers ("blk.*", two dimensions) bound for a type GPTQ
// supports must have its input in the Hessian file, with as many columns as its rows hold: otherwise
// the file was collected from another model, and the job is refused before anything is written.
// Other tensors are rounded as usual: the token embedding (a lookup, no product), and tensors bound
// for types without a GPTQ path (q2_0), which the report lists. Either way a tensor the
// Hessian file covers has importance weights without an importance matrix: its input's diag(H) / tokens.
#pragma once

#include <list>
#include <optional>
#include <utility>
#include <string>
#include <vector>

#include "lowbit/formats/gptq.h"
#include "lowbit/io/hessian.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/io/model_source.h"

namespace lowbit {

// The input a weight reads, found in `hessian` by the weight's llama.cpp name, and checked to hold `cols`
// columns (the weight's rows); otherwise lowbit::Error naming the Hessian file, `tensor` (the weight as
// the caller names it) and `model` (where the weight is from): the file was collected from another model.
const HessianFile::Input& hessian_input_of(const HessianFile& hessian, std::string_view gguf_name, int64_t cols,
                                           const std::string& tensor, const std::string& model);

// diag(H) / tokens of the input t reads: per column the mean of x² over the calibration tokens, which is
// what llama-imatrix records for the same text (its importance vector). Empty when the file has no input
// for t, or one of other columns.
std::vector<float> hessian_importance(const HessianFile& hessian, const ModelSource::Tensor& t);

// The factors of the last two inputs used, each computed once per layer: q, k and v (gate and up)
// share an input, and in llama-quantize's tensor order attn_output comes between attn_k and attn_q
// (ffn_down between ffn_gate's input and itself; in a safetensors file's sorted order o_proj between
// k_proj and q_proj), so two are enough.
class GptqFactorCache {
 public:
  const GptqFactor& operator()(const HessianFile::Input& input);

 private:
  std::list<std::pair<std::string, GptqFactor>> factors_;  // most recently used first
};

class GptqTensors {
 public:
  // The importance weights for each block's scale fit: the imatrix's entry when one is given, else
  // diag(H) / tokens (which is the importance matrix of the same calibration text).
  GptqTensors(const HessianFile& hessian, const ImportanceMatrix* imatrix) : hessian_(hessian), imatrix_(imatrix) {}

  // The Hessian of t's input, or null for a tensor GPTQ never writes (not a matrix, or outside the
  // layers and not in the file); throws lowbit::Error for a layer matrix the Hessian does not cover or
  // covers with other columns.
  const HessianFile::Input* input_of(const ModelSource::Tensor& t, const std::string& label) const;
  // Whether GPTQ writes `t` as `to` (input_of, and a type with a GPTQ path).
  bool applies(const ModelSource::Tensor& t, GgmlType to, const std::string& label) const {
    return gptq_supports(to) && input_of(t, label);
  }

  // t's finite float values (refused otherwise: GPTQ would spread a NaN over its row) as `to` bytes.
  std::vector<std::byte> encode(const ModelSource::Tensor& t, GgmlType to, const std::vector<float>& values, const std::string& label) {
    return encode_rows(t, to, values.data(), t.ne[1], label);
  }
  // The same for `rows` of t's rows (the planner's sample): each row's codes are those encode gives it.
  std::vector<std::byte> encode_rows(const ModelSource::Tensor& t, GgmlType to, const float* values, int64_t rows, const std::string& label);

 private:
  const HessianFile& hessian_;
  const ImportanceMatrix* imatrix_;
  GptqFactorCache factor_of_;
};

}  // namespace lowbit
