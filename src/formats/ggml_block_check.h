// Row-length check shared by the ggml codecs: a row is a whole number of blocks, or it is rejected.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "lowbit/core/error.h"

namespace lowbit::ggml {

inline void require_whole_blocks(std::string_view type_name, int64_t n, int64_t block_values) {
  if (n < 0 || n % block_values != 0)
    throw Error("a " + std::string(type_name) + " row of " + std::to_string(n) + " values is not a whole number of " +
                    std::to_string(block_values) + "-value blocks",
                {.expected = "a row length that is a multiple of " + std::to_string(block_values)});
}

}  // namespace lowbit::ggml
