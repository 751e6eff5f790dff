// Human-readable numbers for tables: 8.03B, 4.2 GiB.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <string>

namespace lowbit::cli {

inline std::string human_count(double n) {
  if (n >= 1e9) return fmt::format("{:.2f}B", n / 1e9);
  if (n >= 1e6) return fmt::format("{:.2f}M", n / 1e6);
  if (n >= 1e3) return fmt::format("{:.2f}K", n / 1e3);
  return fmt::format("{}", int64_t(n));
}

inline std::string human_bytes(double b) {
  if (b >= double(1ull << 30)) return fmt::format("{:.2f} GiB", b / double(1ull << 30));
  if (b >= double(1ull << 20)) return fmt::format("{:.2f} MiB", b / double(1ull << 20));
  if (b >= double(1ull << 10)) return fmt::format("{:.2f} KiB", b / double(1ull << 10));
  return fmt::format("{} B", int64_t(b));
}

}  // namespace lowbit::cli
