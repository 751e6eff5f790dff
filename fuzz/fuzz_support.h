// What the file-level fuzz targets share: the parsers under test open paths (a config.json inside a
// model directory, a plan.json ...), so each input is written to a scratch directory of this process
// first. Every target must reject malformed input with lowbit::Error only: any other exception, a
// crash, a sanitizer report, a hang or an allocation of what the input merely claims is a finding.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

namespace lowbit::fuzz {

// A scratch directory for this process, removed at exit.
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("lowbit-fuzz-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    std::atexit([] { std::error_code ec; std::filesystem::remove_all(scratch_dir(), ec); });
    return d;
  }();
  return dir;
}

inline void write_file(const std::filesystem::path& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

inline void write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  write_file(path, std::string_view(reinterpret_cast<const char*>(data), size));
}

}  // namespace lowbit::fuzz
