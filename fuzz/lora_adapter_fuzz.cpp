// libFuzzer target: adapter_config.json of a PEFT LoRA adapter -> the adapter lowbit merges (ranks,
// alphas, rank_pattern / alpha_pattern read as PEFT's regular expressions, the refusals). The weights
// file is fixed and valid: two modules of rank 2.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/io/lora_adapter.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  static const auto dir = [] {
    const auto d = fuzz::scratch_dir() / "adapter";
    std::filesystem::create_directories(d);
    // lora_A [2, 4] and lora_B [4, 2] of two modules, float32 zeros (32 bytes each).
    std::string header = "{";
    size_t offset = 0;
    for (const char* module : {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"}) {
      for (const char* ab : {"A", "B"}) {
        if (offset) header += ",";
        header += "\"base_model.model." + std::string(module) + ".lora_" + ab + ".weight\":{\"dtype\":\"F32\",\"shape\":" +
                  (ab[0] == 'A' ? "[2,4]" : "[4,2]") + ",\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + 32) + "]}";
        offset += 32;
      }
    }
    header += "}";
    std::string file(8, '\0');
    for (int i = 0; i < 8; ++i) file[size_t(i)] = char((header.size() >> (8 * i)) & 0xff);
    fuzz::write_file(d / "adapter_model.safetensors", file + header + std::string(offset, '\0'));
    return d;
  }();
  fuzz::write_file(dir / "adapter_config.json", data, size);
  try {
    const LoraAdapter adapter(dir);
    for (const auto& m : adapter.modules()) (void)peft_pattern_matches(m.weight, "model.layers.10.mlp.down_proj");
  } catch (const Error&) {
  }
  return 0;
}
