// The module graph of README's "Layout" section, checked on every #include of the library, the CLI and
// the Python module: a module includes only the public headers (include/lowbit/<module>/) of the
// modules below it, never another module's private headers (src/<module>/...), with one pair as the
// exception: formats and its CPU backend, kernels/cpu (see kBackendOf). Tests, benchmarks and fuzz
// targets may include anything.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

// Which modules each module may include (besides itself). Written once; README states the same graph.
const std::map<std::string, std::set<std::string>> kAllowed = {
    {"core", {}},
    {"formats", {"core"}},
    {"io", {"core", "formats"}},
    {"plan", {"core", "formats"}},
    {"kernels/cpu", {"core", "formats"}},
    {"kernels", {"core", "formats"}},
    {"model", {"core", "formats", "io", "kernels"}},
    {"pipeline", {"core", "formats", "io", "plan", "model", "kernels"}},
    {"cli", {"core", "pipeline"}},
    {"python", {"core", "formats", "pipeline"}},  // lowbit.functional binds the codecs themselves
};

// A module's CPU backend (its SIMD kernels, built into the module's library) and the one header through
// which the module calls it: the dispatch table. The backend sits above the module in the graph and,
// as it implements the module's kernel signatures, may also read the module's private headers; the
// module includes nothing of the backend but the dispatch header.
struct Backend {
  std::string backend, dispatch_header;
};
const std::map<std::string, Backend> kBackendOf = {
    {"formats", {"kernels/cpu", "kernels/cpu/cpu_kernels.h"}},
};

// The edges that break the graph today, each "file -> included header". Remove a line when its edge
// goes; the test fails on a line whose edge no longer exists, so the list only shrinks.
const std::set<std::string> kKnownExceptions = {};

// "kernels/cpu" before "kernels": a path belongs to the first module it starts with.
const std::vector<std::string> kModules = {"core", "formats", "io", "plan", "kernels/cpu", "kernels", "model", "pipeline"};

// The module a source file belongs to, from its path relative to the project root.
std::string module_of_file(const std::string& path) {
  if (path.starts_with("cli/")) return "cli";
  if (path.starts_with("python/src/")) return "python";
  for (const std::string& m : kModules)
    if (path.starts_with("src/" + m + "/") || path.starts_with("include/lowbit/" + m + "/")) return m;
  return {};
}

struct Include {
  std::string module;  // the module the header belongs to; empty for one outside the library
  bool is_private = false;
};

// "lowbit/<m>/x.h" is m's public header; "<m>/x.h" (through -Isrc) a private one; anything else
// ("check.h", "command.h") sits beside the including file.
Include classify(const std::string& header) {
  for (const std::string& m : kModules) {
    if (header.starts_with("lowbit/" + m + "/")) return {m, false};
    if (header.starts_with(m + "/")) return {m, true};
  }
  return {};
}

struct Violation {
  std::string edge, why;
};

std::vector<Violation> scan(std::set<std::string>& edges_seen) {
  const fs::path root = LOWBIT_SOURCE_DIR;
  const std::regex include_line(R"re(^\s*#\s*include\s*"([^"]+)")re");
  const std::set<std::string> extensions = {".h", ".hpp", ".cpp", ".cu", ".cuh", ".inc"};
  std::vector<Violation> violations;
  for (const char* top : {"include", "src", "cli", "python/src"}) {
    if (!fs::exists(root / top)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / top)) {
      if (!entry.is_regular_file() || !extensions.contains(entry.path().extension().string())) continue;
      const std::string file = fs::relative(entry.path(), root).generic_string();
      const std::string from = module_of_file(file);
      if (from.empty()) {
        violations.push_back({file, "is in no module of the graph"});
        continue;
      }
      std::ifstream in(entry.path());
      std::string line;
      std::smatch m;
      while (std::getline(in, line)) {
        if (!std::regex_search(line, m, include_line)) continue;
        const std::string header = m[1];
        const Include to = classify(header);
        if (to.module.empty() || to.module == from) continue;
        const std::string edge = file + " -> " + header;
        edges_seen.insert(edge);
        if (kKnownExceptions.contains(edge)) continue;
        if (const auto b = kBackendOf.find(to.module); b != kBackendOf.end() && b->second.backend == from)
          continue;  // a backend reads the private headers of the module it serves
        if (const auto b = kBackendOf.find(from); b != kBackendOf.end() && b->second.backend == to.module) {
          if (header != b->second.dispatch_header)
            violations.push_back({edge, from + " reaches " + to.module + " only through " + b->second.dispatch_header});
          continue;
        }
        if (to.is_private)
          violations.push_back({edge, "includes a header private to " + to.module});
        else if (!kAllowed.at(from).contains(to.module))
          violations.push_back({edge, from + " may not depend on " + to.module});
      }
    }
  }
  return violations;
}

TEST(Layering, EveryIncludeFollowsTheModuleGraph) {
  std::set<std::string> edges;
  const auto violations = scan(edges);
  EXPECT_GT(edges.size(), 100u);  // the scan found the tree
  for (const auto& v : violations) ADD_FAILURE() << v.edge << ": " << v.why;
}

TEST(Layering, KnownExceptionsStillExist) {
  std::set<std::string> edges;
  scan(edges);
  for (const std::string& e : kKnownExceptions)
    EXPECT_TRUE(edges.contains(e)) << e << " is gone: remove it from kKnownExceptions";
}

// A bitsandbytes checkpoint is read in one place, io's BnbReader (lowbit/io/bnb_checkpoint.h): the
// quant state's key is spelt only there, and its JSON is parsed only in src/io.
TEST(Layering, BitsandbytesCheckpointsHaveOneReader) {
  const fs::path root = LOWBIT_SOURCE_DIR;
  const std::set<std::string> extensions = {".h", ".hpp", ".cpp", ".cu", ".cuh", ".inc"};
  int readers = 0;
  for (const char* top : {"include", "src", "cli", "python/src"}) {
    if (!fs::exists(root / top)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / top)) {
      if (!entry.is_regular_file() || !extensions.contains(entry.path().extension().string())) continue;
      const std::string file = fs::relative(entry.path(), root).generic_string();
      std::ifstream in(entry.path());
      const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (text.find("\".quant_state.bitsandbytes__") != std::string::npos)
        EXPECT_EQ(file, "include/lowbit/io/bnb_checkpoint.h") << file << " spells the quant state's key: use bnb::quant_state_key";
      if (text.find("parse_quant_state(") != std::string::npos && !file.starts_with("src/io/") && !file.starts_with("include/lowbit/io/"))
        ADD_FAILURE() << file << " parses a quant state: read the checkpoint through BnbReader";
      if (text.find("class BnbReader {") != std::string::npos) ++readers;
    }
  }
  EXPECT_EQ(readers, 1);
}

TEST(Layering, TheGraphHasNoCycle) {
  // Depth-first over kAllowed: a module reachable from itself would make "below" meaningless.
  std::map<std::string, int> state;  // 0 unvisited, 1 on the path, 2 done
  std::function<bool(const std::string&)> acyclic = [&](const std::string& m) {
    if (state[m] == 1) return false;
    if (state[m] == 2) return true;
    state[m] = 1;
    for (const std::string& next : kAllowed.at(m))
      if (!acyclic(next)) return false;
    state[m] = 2;
    return true;
  };
  for (const auto& [m, _] : kAllowed) EXPECT_TRUE(acyclic(m)) << m;
}

}  // namespace
