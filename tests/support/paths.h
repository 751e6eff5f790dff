// Where tests find the team's shared data (../shared beside the project root) and scratch space.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <random>
#include <string>

namespace lowbit::test {

inline std::filesystem::path shared_dir() { return LOWBIT_SHARED_DIR; }
inline std::filesystem::path golden_bnb_dir() { return shared_dir() / "golden" / "bnb"; }
inline std::filesystem::path golden_ggml_dir() { return shared_dir() / "golden" / "ggml"; }
inline std::filesystem::path shared_data_dir() { return shared_dir() / "data"; }

// A fresh directory removed when the test ends.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("lowbit-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace lowbit::test
