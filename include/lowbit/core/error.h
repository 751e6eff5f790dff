// Errors with context. The library never prints or aborts on bad input: it throws lowbit::Error,
// whose message names the file, the tensor, the byte offset and what was expected.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace lowbit {

struct ErrorContext {
  std::string file;                    // path of the file being read or written
  std::string tensor;                  // tensor (or metadata key) concerned
  std::optional<uint64_t> offset;      // byte offset in the file
  std::string expected;                // what a valid input would have had
};

class Error : public std::runtime_error {
 public:
  Error(std::string problem, ErrorContext context = {});

  const std::string& problem() const { return problem_; }
  const ErrorContext& context() const { return context_; }

 private:
  std::string problem_;
  ErrorContext context_;
};

}  // namespace lowbit
