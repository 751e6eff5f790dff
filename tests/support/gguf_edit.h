// Copies of a GGUF file with some metadata changed (tests only): how the tests forge a model whose
// hyper-parameters are out of range while every tensor stays valid.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "lowbit/io/gguf.h"

namespace lowbit::test {

// `from` rewritten to `to` with each key in `changes` set to its value (appended if new), or removed
// where the value is nullopt. Tensors are copied as they are.
inline void copy_gguf_with(const std::filesystem::path& from, const std::filesystem::path& to,
                           const std::map<std::string, std::optional<gguf::Value>>& changes) {
  const gguf::File in(from);
  gguf::Writer out(to);
  for (const auto& kv : in.metadata()) {
    const auto it = changes.find(kv.key);
    if (it == changes.end()) out.set(kv.key, kv.value);
    else if (it->second) out.set(kv.key, *it->second);
  }
  for (const auto& [key, value] : changes)
    if (value && !in.find(key)) out.set(key, *value);
  for (const auto& t : in.tensors()) out.add_tensor(t.name, t.type, t.ne);
  for (const auto& t : in.tensors()) out.write_data(t.name, in.data(t));
  out.finish();
}

}  // namespace lowbit::test
