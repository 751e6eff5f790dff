// Outputs are written to a temporary file beside the destination and renamed over it only when
// complete, so a failed or interrupted run leaves no half-written output and the destination
// untouched. The temporary is registered for removal on SIGINT/SIGTERM/SIGHUP (temporaries.h).
// Whether an existing destination may be replaced is decided before any work, by
// check_output_path (output_path.h): these classes replace what they are told to.
#pragma once

#include <cstdio>
#include <filesystem>
#include <span>
#include <string>

#include "lowbit/core/temporaries.h"

namespace lowbit {

class AtomicFile {
 public:
  // Creates "<dest>.tmp.XXXXXX" in dest's directory. Throws lowbit::Error naming dest on failure.
  explicit AtomicFile(std::filesystem::path dest);
  // Not committed: the temporary file is removed.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  void write(std::span<const std::byte> bytes);
  void write(const void* data, size_t size) { write({static_cast<const std::byte*>(data), size}); }
  void write_zeros(size_t count);
  // Overwrites bytes already written (e.g. a header whose sizes were unknown at first).
  void write_at(uint64_t offset, std::span<const std::byte> bytes);
  uint64_t position() const { return position_; }

  // Flushes, fsyncs, renames over the destination and fsyncs the directory, so the rename itself
  // survives a crash.
  void commit();

  const std::filesystem::path& destination() const { return dest_; }
  const std::filesystem::path& temporary() const { return temp_; }

 private:
  std::filesystem::path dest_;
  std::filesystem::path temp_;
  TemporaryRegistration registration_;
  std::FILE* file_ = nullptr;
  uint64_t position_ = 0;
  bool committed_ = false;
};

// The same for an output directory (a sharded checkpoint): files are written into
// "<dest>.tmp.XXXXXX" beside it (mode 0777 less the umask, as mkdir gives), which commit() renames
// to dest; uncommitted, it is removed with its contents. dest must not exist or be an empty
// directory, unless `replace_existing` (the user's --force): then an existing directory is replaced
// at commit.
class AtomicDirectory {
 public:
  explicit AtomicDirectory(std::filesystem::path dest, bool replace_existing = false);
  ~AtomicDirectory();
  AtomicDirectory(const AtomicDirectory&) = delete;
  AtomicDirectory& operator=(const AtomicDirectory&) = delete;

  // Where to write the directory's files until commit().
  const std::filesystem::path& path() const { return temp_; }
  void commit();

 private:
  std::filesystem::path dest_;
  std::filesystem::path temp_;
  TemporaryRegistration registration_;
  bool committed_ = false;
};

}  // namespace lowbit
