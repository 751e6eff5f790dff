// Placeholder until the vectorised kernel lands: no fast path, the reference is used.
#include "formats/bnb_4bit_blocks.h"

namespace lowbit::bnb::detail {
QuantizeBlocksFn fast_quantize_4bit_blocks() { return nullptr; }
}  // namespace lowbit::bnb::detail
