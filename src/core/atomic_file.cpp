#include "lowbit/core/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <vector>

#include "lowbit/core/error.h"

namespace lowbit {
namespace {

[[noreturn]] void fail(const std::filesystem::path& dest, const char* what) {
  throw Error(std::string(what) + ": " + std::strerror(errno), {.file = dest.string()});
}

// A rename is durable only once the directory holding the new entry is synced.
void sync_parent_directory(const std::filesystem::path& dest) {
  const auto parent = dest.has_parent_path() ? dest.parent_path() : std::filesystem::path(".");
  const int fd = ::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail(dest, "cannot open the output's directory to sync it");
  const int synced = ::fsync(fd);
  ::close(fd);
  if (synced != 0) fail(dest, "cannot sync the output's directory");
}

// Creates "<dest>.tmp.XXXXXX" with `create` (which returns false on EEXIST and throws on other
// failures). With `registration`, the name is registered for signal cleanup *before* it exists: a
// signal between creating and registering would otherwise leave the temporary behind.
template <class Create>
std::filesystem::path create_temporary(const std::filesystem::path& dest, TemporaryRegistration* registration, Create create) {
  static constexpr char kLetters[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string name = dest.string() + ".tmp.";
    for (int i = 0; i < 6; ++i) name += kLetters[rd() % (sizeof(kLetters) - 1)];
    if (registration) *registration = TemporaryRegistration(name);
    if (create(name)) return name;
    if (registration) registration->release();
  }
  errno = EEXIST;
  fail(dest, "cannot create a temporary beside the output");
}

// An empty directory, mode 0777 less the umask (not mkdtemp's 0700): it becomes an output as it is.
bool make_directory(const std::filesystem::path& dest, const std::string& name) {
  if (::mkdir(name.c_str(), 0777) == 0) return true;
  if (errno != EEXIST) fail(dest, "cannot create a temporary directory beside the output");
  return false;
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path dest) : dest_(std::move(dest)) {
  int fd = -1;
  temp_ = create_temporary(dest_, &registration_, [&](const std::string& name) {
    fd = ::open(name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno != EEXIST) fail(dest_, "cannot create a temporary file beside the output");
    return fd >= 0;
  });
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
  registration_.release();
  sync_parent_directory(dest_);
}

AtomicDirectory::AtomicDirectory(std::filesystem::path dest, bool replace_existing) : dest_(std::move(dest)) {
  std::error_code ec;
  if (std::filesystem::exists(dest_, ec) && !std::filesystem::is_directory(dest_, ec))
    throw Error("the output exists and is not a directory", {.file = dest_.string(), .expected = "a directory path"});
  if (!replace_existing && std::filesystem::is_directory(dest_, ec) && !std::filesystem::is_empty(dest_, ec))
    throw Error("the output already exists; lowbit does not overwrite it unless given --force", {.file = dest_.string()});
  temp_ = create_temporary(dest_, &registration_, [&](const std::string& name) { return make_directory(dest_, name); });
}

AtomicDirectory::~AtomicDirectory() {
  if (!committed_) {
    std::error_code ignored;
    std::filesystem::remove_all(temp_, ignored);
  }
}

void AtomicDirectory::commit() {
  // rename(2) replaces only an empty directory: a previous output (the caller checked it may go) is
  // moved aside first and removed once the new one is in place.
  std::error_code ec;
  std::filesystem::path previous;
  if (std::filesystem::is_directory(dest_, ec)) {
    if (std::filesystem::is_empty(dest_, ec)) {
      std::filesystem::remove(dest_, ec);
    } else {
      // The previous output moved aside is the user's: not removed by a signal.
      previous = create_temporary(dest_, nullptr, [&](const std::string& name) { return make_directory(dest_, name); });
      if (std::rename(dest_.c_str(), previous.c_str()) != 0) fail(dest_, "cannot move the previous output aside");
    }
  }
  if (std::rename(temp_.c_str(), dest_.c_str()) != 0) fail(dest_, "cannot rename the finished output into place");
  committed_ = true;
  registration_.release();
  if (!previous.empty()) std::filesystem::remove_all(previous, ec);
  sync_parent_directory(dest_);
}

}  // namespace lowbit
