// The check every command that writes makes before any work, in one place: the output must not be
// an input, lie inside an input directory or hold an input inside it (compared by device and inode,
// so symlinks, hard links and ".." are seen through), and must not exist unless the user allowed
// overwriting it (--force). An empty directory counts as free: nothing would be lost.
#pragma once

#include <filesystem>
#include <vector>

namespace lowbit {

// Throws lowbit::Error naming the output (and the input it collides with). Empty paths in `inputs`
// are skipped; inputs that do not exist are left to the job to report.
void check_output_path(const std::filesystem::path& output, const std::vector<std::filesystem::path>& inputs, bool overwrite);

}  // namespace lowbit
