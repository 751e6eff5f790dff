#include "terminal_progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>

namespace lowbit::cli {

TerminalProgress::TerminalProgress(bool quiet) : enabled_(!quiet && ::isatty(STDERR_FILENO)) {}

void TerminalProgress::begin(std::string_view what, int64_t total_items, uint64_t total_bytes) {
  what_ = what;
  total_items_ = total_items;
  total_bytes_ = total_bytes;
  done_items_ = 0;
  done_bytes_ = 0;
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

void TerminalProgress::advance(std::string_view label, uint64_t bytes, int64_t items) {
  done_items_ += items;
  done_bytes_ += bytes;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ > std::chrono::milliseconds(100) || done_items_ == total_items_) {
    last_draw_ = now;
    draw(label);
  }
}

void TerminalProgress::draw(std::string_view label) {
  if (!enabled_) return;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double fraction = total_bytes_ ? double(done_bytes_) / double(total_bytes_)
                                       : total_items_ ? double(done_items_) / double(total_items_) : 0;
  const double eta = fraction > 0 ? seconds * (1 - fraction) / fraction : 0;
  // Work measured in bytes shows MB/s; work without bytes (tokens scored) shows items per second.
  const std::string rate = seconds <= 0 ? "" : total_bytes_ ? fmt::format("{:7.1f} MB/s", double(done_bytes_) / seconds / 1e6)
                                                            : fmt::format("{:7.1f} {}/s", double(done_items_) / seconds, unit_);
  std::string line = fmt::format("\r{} {}/{} {:5.1f}% {} ETA {:4.0f}s  {}", what_, done_items_, total_items_, 100 * fraction, rate, eta,
                                 label.substr(0, 40));
  std::fprintf(stderr, "%s\033[K", line.c_str());
  std::fflush(stderr);
}

void TerminalProgress::end() {
  if (enabled_) std::fprintf(stderr, "\r\033[K");
}

}  // namespace lowbit::cli
