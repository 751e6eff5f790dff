// The planner's rules: the built-in floors, the rules file, and whether a rule lets a tensor take a format.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/io/json_file.h"
#include "lowbit/plan/llama_cpp_mix.h"
#include "pipeline/planning/plan_internal.h"

namespace lowbit {
namespace {

// "A-B", "A-" (A and every later layer) or "A".
std::pair<int, int> parse_layers(const std::string& text, const std::string& file, const std::string& rule) {
  auto number = [&](std::string_view s, int& out) {
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && ptr == s.data() + s.size() && out >= 0;
  };
  const auto dash = text.find('-');
  int first = 0, last = 0;
  bool ok = false;
  if (dash == std::string::npos) {
    ok = number(text, first);
    last = first;
  } else {
    ok = number(std::string_view(text).substr(0, dash), first);
    const std::string_view tail = std::string_view(text).substr(dash + 1);
    if (tail.empty()) last = std::numeric_limits<int>::max();
    else ok = ok && number(tail, last);
  }
  if (!ok || last < first)
    throw Error(fmt::format("\"layers\": '{}' is not a layer range", text), {.file = file, .tensor = rule, .expected = "\"0-2\", \"6-\" or \"3\""});
  return {first, last};
}

// The plan format of that name ("Q4_K" and "q4_K" alike), or nullopt when no format a plan gives has it.
std::optional<FormatId> plan_format_named(const std::string& name) {
  const auto id = parse_format_id(name);
  if (!id || !plan_format_of(*id)) return std::nullopt;
  return id;
}

std::vector<PlanRule> parse_rules(const nlohmann::json& j, const std::string& file) {
  if (!j.is_object() || !j.contains("rules") || !j["rules"].is_array()) throw Error("no \"rules\" list", {.file = file});
  for (const auto& [key, value] : j.items())
    if (key != "rules" && key != "description") throw Error(fmt::format("unknown key \"{}\"", key), {.file = file, .expected = "\"rules\", \"description\""});
  std::vector<PlanRule> rules;
  for (const auto& r : j["rules"]) {
    if (!r.is_object() || !r.contains("match") || !r["match"].is_string()) throw Error("a rule has no \"match\" glob", {.file = file});
    PlanRule rule{.match = r["match"].get<std::string>()};
    for (const auto& [key, value] : r.items()) {
      if (key == "match" || key == "note") continue;
      if (key == "layers" && value.is_string()) {
        rule.layers = parse_layers(value.get<std::string>(), file, rule.match);
      } else if ((key == "allow" || key == "deny") && value.is_array()) {
        for (const auto& name : value) {
          const auto known = name.is_string() ? plan_format_named(name.get<std::string>()) : std::nullopt;
          if (!known) throw Error(fmt::format("unknown format {}", name.dump()), {.file = file, .tensor = rule.match, .expected = "a ggml type, nf4 or fp4"});
          (key == "allow" ? rule.allow : rule.deny).push_back(*known);
        }
      } else if ((key == "min_bpw" || key == "max_bpw") && value.is_number()) {
        (key == "min_bpw" ? rule.min_bpw : rule.max_bpw) = value.get<double>();
      } else {
        // A misspelt key would silently bound nothing: refuse it.
        throw Error(fmt::format("\"{}\": {} is not a rule field", key, value.dump()),
                    {.file = file, .tensor = rule.match, .expected = "match, layers (string), allow, deny (lists), min_bpw, max_bpw (numbers), note"});
      }
    }
    rules.push_back(std::move(rule));
  }
  return rules;
}

}  // namespace

std::vector<PlanRule> default_plan_rules() {
  return {{.match = "token_embd.weight", .min_bpw = 4.5}, {.match = "output.weight", .min_bpw = 4.5}};
}

std::vector<PlanRule> load_plan_rules(const std::filesystem::path& path) {
  return parse_rules(read_json_file(path), path.string());
}

namespace planning {

bool rules_allow(const std::vector<PlanRule>& rules, std::span<const std::string> names, int layer, const FormatSpec& format, double bpw) {
  for (const auto& r : rules) {
    if (!std::ranges::any_of(names, [&](const std::string& name) { return glob_match(r.match, name); })) continue;
    if (r.layers && (layer < r.layers->first || layer > r.layers->second)) continue;
    if (!r.allow.empty() && std::ranges::find(r.allow, format.id) == r.allow.end()) return false;
    if (std::ranges::find(r.deny, format.id) != r.deny.end()) return false;
    if (r.min_bpw && bpw < *r.min_bpw - 1e-9) return false;
    if (r.max_bpw && bpw > *r.max_bpw + 1e-9) return false;
  }
  return true;
}

}  // namespace planning
}  // namespace lowbit
