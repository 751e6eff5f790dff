// Temporary files and directories must not outlive the job that made them, however it ends. Each
// one is registered while it exists (AtomicFile, AtomicDirectory and ScratchDirectory do it); an
// exception unwinds through their destructors, and on SIGINT, SIGTERM or SIGHUP an async-signal-safe
// handler removes every registered path and re-raises the signal, so the process still dies of it.
#pragma once

#include <filesystem>
#include <string>

namespace lowbit {

// Keeps `path` on the list the signal handler removes, until destroyed or released. Registering
// installs the handler for each signal whose action is the default: a program that ignores SIGHUP,
// or handles SIGINT itself, keeps its own.
class TemporaryRegistration {
 public:
  TemporaryRegistration() = default;
  explicit TemporaryRegistration(const std::filesystem::path& path);  // a file or a directory
  ~TemporaryRegistration() { release(); }
  TemporaryRegistration(TemporaryRegistration&& other) noexcept : slot_(other.slot_) { other.slot_ = -1; }
  TemporaryRegistration& operator=(TemporaryRegistration&& other) noexcept;
  TemporaryRegistration(const TemporaryRegistration&) = delete;
  TemporaryRegistration& operator=(const TemporaryRegistration&) = delete;

  // The path no longer needs removing (it was renamed into place, or removed already).
  void release();

 private:
  int slot_ = -1;
};

// A fresh directory under $TMPDIR ("lowbit-<purpose>-XXXXXX", mode 0700) for a job's scratch files,
// removed with everything in it when the object goes, or by the signal handler.
class ScratchDirectory {
 public:
  explicit ScratchDirectory(const std::string& purpose);
  ~ScratchDirectory();
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
  TemporaryRegistration registration_;
};

}  // namespace lowbit
