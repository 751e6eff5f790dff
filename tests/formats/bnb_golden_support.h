// Reading the bitsandbytes golden cases (golden/bnb/manifest.json and its safetensors files).
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "lowbit/io/safetensors.h"
#include "support/paths.h"

namespace lowbit::test {

// One manifest entry; gtest prints it as its file name rather than the whole JSON.
struct BnbGoldenCase {
  nlohmann::json entry;
  const nlohmann::json& operator[](const char* key) const { return entry[key]; }
  friend void PrintTo(const BnbGoldenCase& c, std::ostream* os) { *os << c.entry["file"].get<std::string>(); }
};

// The manifest entries whose "format" is `format`; empty (and a test failure later) if absent.
inline std::vector<BnbGoldenCase> bnb_golden_cases(const std::string& format) {
  std::ifstream in(golden_bnb_dir() / "manifest.json");
  if (!in) return {};
  std::vector<BnbGoldenCase> cases;
  const nlohmann::json manifest = nlohmann::json::parse(in);  // named: a temporary would die before the loop
  for (const auto& entry : manifest["cases"])
    if (entry.value("format", "") == format) cases.push_back({entry});
  return cases;
}

// A gtest-safe name from a case's file: "4bit/nf4_bs32_dq_float32_1000.safetensors" -> "nf4_bs32_dq_float32_1000".
inline std::string bnb_case_name(const BnbGoldenCase& golden_case) {
  std::string name = golden_case["file"].get<std::string>();
  name = name.substr(name.find('/') + 1);
  name = name.substr(0, name.find('.'));
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return name;
}

// Byte equality with the first differing offset in the failure message.
inline ::testing::AssertionResult bytes_equal(std::span<const std::byte> expected, std::span<const std::byte> actual) {
  if (expected.size() != actual.size())
    return ::testing::AssertionFailure() << "sizes differ: expected " << expected.size() << ", got " << actual.size();
  for (size_t i = 0; i < expected.size(); ++i)
    if (expected[i] != actual[i])
      return ::testing::AssertionFailure() << "first difference at byte " << i << ": expected "
                                           << int(expected[i]) << ", got " << int(actual[i]);
  return ::testing::AssertionSuccess();
}

template <class T>
std::span<const std::byte> as_bytes_of(const std::vector<T>& v) { return std::as_bytes(std::span<const T>(v)); }
template <class T, size_t N>
std::span<const std::byte> as_bytes_of(const std::array<T, N>& v) { return std::as_bytes(std::span<const T>(v)); }

}  // namespace lowbit::test
