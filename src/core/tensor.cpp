#include "lowbit/core/tensor.h"

#include <fmt/format.h>

#include <cstdlib>
#include <limits>
#include <new>

#include "lowbit/core/error.h"

namespace lowbit {

int64_t shape_elements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw Error(fmt::format("negative dimension in shape {}", shape_to_string(shape)));
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d)
      throw Error(fmt::format("shape {} overflows 64-bit element count", shape_to_string(shape)));
    n *= d;
  }
  return n;
}

std::string shape_to_string(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

TensorView TensorView::make(DType dtype, Shape shape, std::span<const std::byte> bytes) {
  const int64_t n = shape_elements(shape);
  const uint64_t want = uint64_t(n) * dtype_size(dtype);
  if (n > 0 && want / dtype_size(dtype) != uint64_t(n))
    throw Error(fmt::format("shape {} of {} overflows a byte count", shape_to_string(shape), dtype_name(dtype)));
  if (bytes.size() != want)
    throw Error(fmt::format("{} bytes for shape {} of {}", bytes.size(), shape_to_string(shape), dtype_name(dtype)),
                {.expected = fmt::format("{} bytes", want)});
  return {dtype, std::move(shape), bytes};
}

void Buffer::Free::operator()(std::byte* p) const { std::free(p); }

Buffer::Buffer(size_t size) : size_(size) {
  const size_t rounded = (size + 63) / 64 * 64;
  if (rounded == 0) return;
  auto* p = static_cast<std::byte*>(std::aligned_alloc(64, rounded));
  if (!p) throw std::bad_alloc();
  data_.reset(p);
}

Tensor::Tensor(DType dtype_, Shape shape_)
    : dtype(dtype_), shape(std::move(shape_)), buffer(size_t(shape_elements(shape)) * dtype_size(dtype)) {}

}  // namespace lowbit
