#include "lowbit/core/output_path.h"

#include <sys/stat.h>

#include <optional>

#include "lowbit/core/error.h"

namespace lowbit {
namespace {

struct FileId {
  dev_t device;
  ino_t inode;
  bool directory;
  bool operator==(const FileId& o) const { return device == o.device && inode == o.inode; }
};

std::optional<FileId> identify(const std::filesystem::path& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino, S_ISDIR(st.st_mode)};
}

// Is `directory` one of the directories above `path` (symlinks and ".." resolved)?
bool lies_inside(const std::filesystem::path& path, const FileId& directory) {
  std::error_code ec;
  auto p = std::filesystem::weakly_canonical(std::filesystem::absolute(path), ec);
  if (ec) return false;
  while (p.has_relative_path()) {
    p = p.parent_path();
    if (const auto id = identify(p); id && *id == directory) return true;
  }
  return false;
}

}  // namespace

void check_output_path(const std::filesystem::path& output, const std::vector<std::filesystem::path>& inputs, bool overwrite) {
  const std::string out = output.string();
  const auto out_id = identify(output);
  for (const auto& input : inputs) {
    if (input.empty()) continue;
    const auto in_id = identify(input);
    if (!in_id) continue;
    if (out_id && *out_id == *in_id)
      throw Error("the output is the input " + input.string() + "; lowbit never writes over its input", {.file = out});
    if (in_id->directory && lies_inside(output, *in_id))
      throw Error("the output lies inside the input directory " + input.string() + "; lowbit never writes into its input",
                  {.file = out});
    if (out_id && out_id->directory && lies_inside(input, *out_id))
      throw Error("the input " + input.string() + " lies inside the output directory; replacing it would lose the input",
                  {.file = out});
  }
  std::error_code ec;
  const bool empty_directory = out_id && out_id->directory && std::filesystem::is_empty(output, ec);
  if (out_id && !empty_directory && !overwrite)
    throw Error("the output already exists; lowbit does not overwrite it unless given --force", {.file = out});
}

}  // namespace lowbit
