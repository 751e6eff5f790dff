#include "pipeline/sources/bnb_reader.h"

#include "lowbit/core/convert.h"
#include "lowbit/formats/bnb_int8.h"

namespace lowbit {
namespace {

// A 4-bit weight's statistics: the code map and every block's scale (nested ones dequantized) must
// be finite, and the scales within `out`'s range (the block's largest value is ±scale exactly).
void check_4bit_state(const bnb::Bnb4bitState& state, DType out, const ValueSite& site, ValueGuard& guard) {
  guard.statistics(site, "quant_map", state.code, ValueRange::finite);
  if (state.nested) {
    guard.statistics(site, "nested_quant_map", state.nested->code, ValueRange::finite);
    guard.statistics(site, "nested_absmax", state.nested->nested_absmax, ValueRange::finite);
    guard.statistics(site, "nested offset", std::span(&state.nested->offset, 1), ValueRange::finite);
  }
  guard.statistics(site, "absmax", state.block_scales(), value_range_of(out));
}

}  // namespace

Tensor convert_checked(const TensorView& v, DType to, const ValueSite& site, ValueGuard& guard) {
  Tensor out(to, v.shape);
  std::vector<float> f32(size_t(v.elements()));
  convert_to_f32(v.dtype, v.bytes.data(), f32.data(), f32.size());
  guard.values(site, f32.data(), int64_t(f32.size()), value_range_of(to), dtype_name(to));
  convert_from_f32(f32.data(), to, out.buffer.data(), f32.size());
  return out;
}

bool BnbReader::quantized(const std::string& weight) const {
  if (quant_state(weight)) return true;
  const auto* e = find(weight);
  return e && e->info->dtype == DType::i8 && scb(weight);
}

Shape BnbReader::logical_shape(const std::string& weight) const {
  if (quant_state(weight)) return state_4bit(weight).shape;
  return find(weight)->info->shape;
}

DType BnbReader::recorded_dtype(const std::string& weight) const {
  return quant_state(weight) ? state_4bit(weight).dtype : int8_dtype_;
}

Tensor BnbReader::dequantize(const std::string& weight, std::optional<DType> to, ValueGuard& guard) const {
  const auto& e = *find(weight);
  const TensorView v = view(e);
  const ValueSite site{e.shard->label(), weight, v.shape.size() >= 2 ? v.shape.back() : 0};
  try {
    if (quant_state(weight)) {
      const auto state = state_4bit(weight);
      check_4bit_state(state, to.value_or(state.dtype), site, guard);
      const std::span<const uint8_t> packed(reinterpret_cast<const uint8_t*>(v.bytes.data()), v.bytes.size());
      return bnb::dequantize_4bit(packed, state, to.value_or(state.dtype), weight);
    }
    if (v.shape.size() != 2) throw Error("int8 weight is not 2-D", {.file = e.shard->label(), .tensor = weight});
    bnb::Int8RowwiseQuantized q{.rows = v.shape[0], .cols = v.shape[1]};
    q.cb.resize(v.bytes.size());
    std::memcpy(q.cb.data(), v.bytes.data(), v.bytes.size());
    const auto* scb_entry = scb(weight);
    const TensorView scb_view = view(*scb_entry);
    if (scb_view.dtype != DType::f32 || scb_view.elements() != q.rows)
      throw Error("SCB must hold one float32 per row", {.file = e.shard->label(), .tensor = scb_entry->info->name});
    q.scb.resize(size_t(q.rows));
    std::memcpy(q.scb.data(), scb_view.bytes.data(), scb_view.bytes.size());
    // SCB is the largest |w| of a float16 row: beyond f16 it was never written by bitsandbytes.
    guard.statistics({e.shard->label(), scb_entry->info->name, 0}, "SCB", q.scb, ValueRange::f16);
    Tensor f32 = bnb::dequantize_int8_rowwise(q);
    const DType out = to.value_or(int8_dtype_);
    if (out == DType::f32) return f32;
    return convert_checked(f32.view(), out, site, guard);
  } catch (const Error& error) {  // the codecs name the tensor; the user needs the file too
    if (!error.context().file.empty()) throw;
    ErrorContext c = error.context();
    c.file = e.shard->label();
    throw Error(error.problem(), c);
  }
}

}  // namespace lowbit
