// How long-running library work reports progress. The library never prints: the caller passes a
// Progress (the CLI's draws a bar on a terminal); the default does nothing.
#pragma once

#include <cstdint>
#include <string_view>

namespace lowbit {

class Progress {
 public:
  virtual ~Progress() = default;
  // Work begins: `total_items` (tensors, tokens...) weighing `total_bytes` in all (0 if unknown).
  virtual void begin(std::string_view /*what*/, int64_t /*total_items*/, uint64_t /*total_bytes*/) {}
  // `items` more done (a tensor, or the tokens of a window), weighing `bytes`; `label` names them.
  virtual void advance(std::string_view /*label*/, uint64_t /*bytes*/, int64_t /*items*/ = 1) {}
  virtual void end() {}

  static Progress& none();
};

inline Progress& Progress::none() {
  static Progress silent;
  return silent;
}

}  // namespace lowbit
