#include "lowbit/core/atomic_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "lowbit/core/error.h"

namespace lowbit {
namespace {

[[noreturn]] void fail(const std::filesystem::path& dest, const char* what) {
  throw Error(std::string(what) + ": " + std::strerror(errno), {.file = dest.string()});
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path dest) : dest_(std::move(dest)) {
  std::string pattern = dest_.string() + ".tmp.XXXXXX";
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  const int fd = ::mkstemp(name.data());
  if (fd < 0) fail(dest_, "cannot create a temporary file beside the output");
  temp_ = name.data();
  file_ = ::fdopen(fd, "wb");
  if (!file_) {
    ::close(fd);
    std::filesystem::remove(temp_);
    fail(dest_, "cannot open the temporary file");
  }
  ::fchmod(fd, 0644);
}

AtomicFile::~AtomicFile() {
  if (file_) std::fclose(file_);
  if (!committed_) {
    std::error_code ignored;
    std::filesystem::remove(temp_, ignored);
  }
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) fail(dest_, "write failed");
  position_ += bytes.size();
}

void AtomicFile::write_zeros(size_t count) {
  static constexpr std::byte kZeros[4096]{};
  while (count > 0) {
    const size_t n = std::min(count, sizeof(kZeros));
    write({kZeros, n});
    count -= n;
  }
}

void AtomicFile::write_at(uint64_t offset, std::span<const std::byte> bytes) {
  if (std::fseek(file_, long(offset), SEEK_SET) != 0) fail(dest_, "seek failed");
  if (std::fwrite(bytes.data(), 1, bytes.size(), file_) != bytes.size()) fail(dest_, "write failed");
  if (std::fseek(file_, long(position_), SEEK_SET) != 0) fail(dest_, "seek failed");
}

void AtomicFile::commit() {
  if (std::fflush(file_) != 0 || ::fsync(::fileno(file_)) != 0) fail(dest_, "flush failed");
  if (std::fclose(file_) != 0) {
    file_ = nullptr;
    fail(dest_, "close failed");
  }
  file_ = nullptr;
  if (std::rename(temp_.c_str(), dest_.c_str()) != 0) fail(dest_, "cannot rename the finished output into place");
  committed_ = true;
}

}  // namespace lowbit

namespace lowbit {

AtomicDirectory::AtomicDirectory(std::filesystem::path dest) : dest_(std::move(dest)) {
  std::error_code ec;
  if (std::filesystem::exists(dest_, ec) && !(std::filesystem::is_directory(dest_) && std::filesystem::is_empty(dest_)))
    throw Error("output already exists; lowbit does not overwrite it", {.file = dest_.string(), .expected = "a new or empty directory"});
  std::string pattern = dest_.string() + ".tmp.XXXXXX";
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  if (!::mkdtemp(name.data())) fail(dest_, "cannot create a temporary directory beside the output");
  temp_ = name.data();
}

AtomicDirectory::~AtomicDirectory() {
  if (!committed_) {
    std::error_code ignored;
    std::filesystem::remove_all(temp_, ignored);
  }
}

void AtomicDirectory::commit() {
  std::error_code ec;
  if (std::filesystem::is_directory(dest_, ec)) std::filesystem::remove(dest_, ec);  // the empty directory
  if (std::rename(temp_.c_str(), dest_.c_str()) != 0) fail(dest_, "cannot rename the finished output into place");
  committed_ = true;
}

}  // namespace lowbit
