// A read-only memory map of a whole file: tensors are served as zero-copy views into it.
#pragma once

#include <cstddef>
#include <filesystem>
#include <span>
#include <string>

namespace lowbit {

class MappedFile {
 public:
  // Maps `path` read-only; throws lowbit::Error naming the path if it cannot be opened or mapped.
  explicit MappedFile(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

}  // namespace lowbit
