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
  // What the items are called in the rate shown when the work has no byte total ("tokens").
  void set_unit(std::string unit) { unit_ = std::move(unit); }
  void advance(std::string_view label, uint64_t bytes, int64_t items = 1) override;
  void end() override;

 private:
  void draw(std::string_view label);

  bool enabled_;
  std::string what_;
  std::string unit_ = "items";
  int64_t total_items_ = 0, done_items_ = 0;
  uint64_t total_bytes_ = 0, done_bytes_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace lowbit::cli
