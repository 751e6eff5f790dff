// A progress line on stderr for a terminal: items done, MB/s, ETA. Silent when --quiet or when
// stderr is not a TTY (pipes and CI logs stay clean).
#pragma once

#include <chrono>
#include <string>

#include "lowbit/core/progress.h"

namespace lowbit::cli {

class TerminalProgress : public Progress {
 public:
  explicit TerminalProgress(bool quiet);
  void begin(std::string_view what, int64_t total_items, uint64_t total_bytes) override;
  void advance(std::string_view label, uint64_t bytes) override;
  void end() override;

 private:
  void draw(std::string_view label);

  bool enabled_;
  std::string what_;
  int64_t total_items_ = 0, done_items_ = 0;
  uint64_t total_bytes_ = 0, done_bytes_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace lowbit::cli
