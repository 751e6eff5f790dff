// quantize --gptq for GGUF outputs: which tensors GPTQ writes (lowbit/formats/gptq.h), with which
// Hessian, and their bytes. A matrix of the layers ("blk.*", two dimensions) bound for a type GPTQ
// supports must have its input in the Hessian file, with as many columns as its rows hold: otherwise
// the file was collected from another model, and the job is refused before anything is written.
// Other tensors are rounded as usual: the token embedding (a lookup, no product), and tensors bound
// for types without a GPTQ path (the i-quants, the ternary types, mxfp4), which the report lists.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "lowbit/formats/gptq.h"
#include "lowbit/io/hessian.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/pipeline/model_source.h"

namespace lowbit {

class GptqTensors {
 public:
  // The importance weights for each block's scale fit: the imatrix's entry when one is given, else
  // diag(H) / tokens (which is the importance matrix of the same calibration text).
  GptqTensors(const HessianFile& hessian, const ImportanceMatrix* imatrix) : hessian_(hessian), imatrix_(imatrix) {}

  // Whether GPTQ writes `t` as `to`; throws lowbit::Error for a layer matrix the Hessian does not
  // cover or covers with other columns.
  bool applies(const ModelSource::Tensor& t, GgmlType to, const std::string& label) const;

  // t's finite float values (refused otherwise: GPTQ would spread a NaN over its row) as `to` bytes.
  std::vector<std::byte> encode(const ModelSource::Tensor& t, GgmlType to, const std::vector<float>& values, const std::string& label);

 private:
  const HessianFile& hessian_;
  const ImportanceMatrix* imatrix_;
  // q, k and v (gate and up) share an input and come one after another: its factor is kept.
  std::string factor_input_;
  std::optional<GptqFactor> factor_;
};

}  // namespace lowbit
