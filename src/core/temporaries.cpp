#include "lowbit/core/temporaries.h"

#include <dirent.h>  // struct dirent64: the records getdents64 returns
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

#include "lowbit/core/error.h"

namespace lowbit {
namespace {

// A fixed table, so that the handler reads it without locks or allocation. A slot is claimed
// (kClaimed) while its path is copied in and only then published (kLive): the handler never reads a
// half-written path.
constexpr int kSlots = 256;
enum SlotState : int { kFree = 0, kClaimed = 1, kLive = 2 };

struct Slot {
  std::atomic<int> state{kFree};
  char path[PATH_MAX];
};
Slot g_slots[kSlots];

// Removes `name` under the directory `parent` (a file, or a directory and everything in it) with
// system calls only: async-signal-safe, unlike opendir or std::filesystem.
void remove_tree(int parent, const char* name, int depth) {
  if (::unlinkat(parent, name, 0) == 0 || (errno != EISDIR && errno != EPERM) || depth > 16) return;
  const int fd = ::openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  alignas(8) char buffer[4096];
  // Removing entries while reading the directory may skip some: read it again until it is empty.
  for (int pass = 0; pass < 64; ++pass) {
    bool removed_any = false;
    ::lseek(fd, 0, SEEK_SET);
    for (;;) {
      const long n = ::syscall(SYS_getdents64, fd, buffer, sizeof buffer);
      if (n <= 0) break;
      for (long offset = 0; offset < n;) {
        const auto* entry = reinterpret_cast<const struct dirent64*>(buffer + offset);
        offset += entry->d_reclen;
        if (std::strcmp(entry->d_name, ".") == 0 || std::strcmp(entry->d_name, "..") == 0) continue;
        remove_tree(fd, entry->d_name, depth + 1);
        removed_any = true;
      }
    }
    if (!removed_any) break;
  }
  ::close(fd);
  ::unlinkat(parent, name, AT_REMOVEDIR);
}

void remove_registered_temporaries(int sig) {
  const int saved_errno = errno;
  for (Slot& slot : g_slots)
    if (slot.state.load(std::memory_order_acquire) == kLive) remove_tree(AT_FDCWD, slot.path, 0);
  errno = saved_errno;
  // SA_RESETHAND restored the default action; the signal is blocked until this handler returns,
  // then it ends the process as it would have without lowbit's handler.
  ::raise(sig);
}

// Checked at every registration (three system calls), not once: a signal whose action is the default
// again (a forked child that reset it, say) gets the handler back.
void install_handlers() {
  for (const int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction previous{};
    if (::sigaction(sig, nullptr, &previous) != 0 || previous.sa_handler != SIG_DFL || (previous.sa_flags & SA_SIGINFO)) continue;
    struct sigaction action{};
    action.sa_handler = remove_registered_temporaries;
    action.sa_flags = SA_RESETHAND;
    sigemptyset(&action.sa_mask);
    ::sigaction(sig, &action, nullptr);
  }
}

}  // namespace

TemporaryRegistration::TemporaryRegistration(const std::filesystem::path& path) {
  install_handlers();
  const std::string absolute = std::filesystem::absolute(path).string();
  if (absolute.size() >= PATH_MAX) return;  // cannot be named to the kernel anyway
  for (int i = 0; i < kSlots; ++i) {
    int expected = kFree;
    if (!g_slots[i].state.compare_exchange_strong(expected, kClaimed, std::memory_order_acquire)) continue;
    std::memcpy(g_slots[i].path, absolute.c_str(), absolute.size() + 1);
    g_slots[i].state.store(kLive, std::memory_order_release);
    slot_ = i;
    return;
  }
  // A full table (256 live temporaries) leaves this one to the destructors alone.
}

TemporaryRegistration& TemporaryRegistration::operator=(TemporaryRegistration&& other) noexcept {
  if (this != &other) {
    release();
    slot_ = other.slot_;
    other.slot_ = -1;
  }
  return *this;
}

void TemporaryRegistration::release() {
  if (slot_ >= 0) g_slots[slot_].state.store(kFree, std::memory_order_release);
  slot_ = -1;
}

ScratchDirectory::ScratchDirectory(const std::string& purpose) {
  std::string pattern = (std::filesystem::temp_directory_path() / ("lowbit-" + purpose + "-XXXXXX")).string();
  std::vector<char> name(pattern.begin(), pattern.end());
  name.push_back('\0');
  if (!::mkdtemp(name.data()))
    throw Error(std::string("cannot create a scratch directory: ") + std::strerror(errno), {.file = pattern});
  path_ = name.data();
  registration_ = TemporaryRegistration(path_);
}

ScratchDirectory::~ScratchDirectory() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
  registration_.release();
}

}  // namespace lowbit
