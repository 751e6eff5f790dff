// Non-owning views of contiguous row-major tensors, and a small owning buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lowbit/core/dtype.h"

namespace lowbit {

using Shape = std::vector<int64_t>;

// Product of the dimensions; throws lowbit::Error on a negative dimension or int64 overflow.
int64_t shape_elements(const Shape& shape);
std::string shape_to_string(const Shape& shape);  // "[4096, 14336]"

// A read-only view: dtype, logical shape, and exactly elements * dtype_size bytes.
struct TensorView {
  DType dtype = DType::f32;
  Shape shape;
  std::span<const std::byte> bytes;

  // Checks that bytes.size() matches shape and dtype; throws lowbit::Error otherwise.
  static TensorView make(DType dtype, Shape shape, std::span<const std::byte> bytes);
  int64_t elements() const { return shape_elements(shape); }
  template <class T>
  std::span<const T> as() const {
    return {reinterpret_cast<const T*>(bytes.data()), bytes.size() / sizeof(T)};
  }
};

// 64-byte aligned heap storage, the owner behind views that do not come from a mapped file.
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(size_t size);
  std::byte* data() { return data_.get(); }
  const std::byte* data() const { return data_.get(); }
  size_t size() const { return size_; }
  std::span<std::byte> span() { return {data(), size_}; }
  std::span<const std::byte> span() const { return {data(), size_}; }

 private:
  struct Free { void operator()(std::byte* p) const; };
  std::unique_ptr<std::byte, Free> data_;
  size_t size_ = 0;
};

// A tensor that owns its bytes.
struct Tensor {
  DType dtype = DType::f32;
  Shape shape;
  Buffer buffer;

  Tensor() = default;
  Tensor(DType dtype, Shape shape);
  TensorView view() const { return {dtype, shape, buffer.span()}; }
  template <class T>
  std::span<T> as() {
    return {reinterpret_cast<T*>(buffer.data()), buffer.size() / sizeof(T)};
  }
};

}  // namespace lowbit
