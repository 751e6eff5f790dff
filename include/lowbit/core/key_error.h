// Errors about a key of a metadata table or a JSON document (GGUF "llama.block_count", config.json
// "rope_scaling.factor"): "<file>: key '<key>': <problem> (expected <expected>)".
#pragma once

#include <fmt/format.h>

#include <string>
#include <string_view>

#include "lowbit/core/error.h"

namespace lowbit {

inline Error key_error(std::string file, std::string_view key, std::string_view problem, std::string expected = {}) {
  return Error(fmt::format("key '{}': {}", key, problem), {.file = std::move(file), .expected = std::move(expected)});
}

}  // namespace lowbit
