#include "lowbit/core/error.h"

#include <fmt/format.h>

namespace lowbit {
namespace {

// "file.gguf: tensor 'blk.0.attn_q.weight': at byte 1234: offset out of range (expected <= 5678)"
std::string compose(const std::string& problem, const ErrorContext& c) {
  std::string out;
  if (!c.file.empty()) out += c.file + ": ";
  if (!c.tensor.empty()) out += fmt::format("tensor '{}': ", c.tensor);
  if (c.offset) out += fmt::format("at byte {}: ", *c.offset);
  out += problem;
  if (!c.expected.empty()) out += fmt::format(" (expected {})", c.expected);
  return out;
}

}  // namespace

Error::Error(std::string problem, ErrorContext context)
    : std::runtime_error(compose(problem, context)), problem_(std::move(problem)), context_(std::move(context)) {}

}  // namespace lowbit
