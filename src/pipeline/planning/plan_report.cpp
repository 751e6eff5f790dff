// The plan's report: a heat map of bits per weight by layer (rows) and role (columns), as an SVG, and
// an HTML page with the map and the per-tensor allocation.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <set>

#include "lowbit/core/atomic_file.h"
#include "lowbit/pipeline/plan.h"

namespace lowbit {
namespace {

// 2 bits: blue, 5: green, 8 and more: red.
std::string colour(double bpw) {
  const double x = std::clamp((bpw - 2.0) / 6.0, 0.0, 1.0);
  const int r = int(255 * std::clamp(2 * x - 0.6, 0.0, 1.0)), g = int(255 * (1 - std::abs(2 * x - 1))), b = int(255 * std::clamp(1 - 2 * x, 0.0, 1.0));
  return fmt::format("#{:02x}{:02x}{:02x}", r, g, b);
}

// Text for SVG/HTML: tensor and model names come from files and may hold markup characters.
std::string escaped(std::string_view text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += ch;
    }
  }
  return out;
}

void write_text(const std::filesystem::path& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

}  // namespace

void write_plan_report(const Plan& plan, const std::filesystem::path& svg, const std::filesystem::path& html) {
  // (layer, role) -> bits and parameters: a Hugging Face MoE layer has one tensor per expert and role.
  std::map<std::pair<int, std::string>, std::pair<double, double>> sums;
  std::set<std::string> roles;
  int layers = 0;
  for (const auto& t : plan.tensors) {
    if (!t.quantized) continue;
    const std::string role(role_name(t.role));
    roles.insert(role);
    layers = std::max(layers, t.layer + 1);
    auto& [bits, params] = sums[{t.layer, role}];
    bits += 8.0 * double(t.bytes);
    params += double(t.params);
  }
  std::map<std::pair<int, std::string>, double> cells;  // (layer, role) -> bpw
  for (const auto& [key, sum] : sums) cells[key] = sum.first / sum.second;
  const std::vector<std::string> columns(roles.begin(), roles.end());
  const int cell = 22, left = 70, top = 110;
  const int width = left + cell * int(columns.size()) + 20, height = top + cell * (layers + 1) + 20;
  std::string s = fmt::format(R"(<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">)", width, height);
  s += fmt::format(R"(<text x="4" y="16" font-size="13">bits per weight, target {:.2f}, achieved {:.3f}</text>)", plan.target_bpw, plan.achieved_bpw);
  for (size_t c = 0; c < columns.size(); ++c)
    s += fmt::format(R"svg(<text transform="translate({},{}) rotate(-60)">{}</text>)svg", left + int(c) * cell + cell / 2, top - 6, escaped(columns[c]));
  for (int l = -1; l < layers; ++l) {
    const int y = top + (l + 1) * cell;
    s += fmt::format(R"(<text x="4" y="{}">{}</text>)", y + 15, l < 0 ? "global" : fmt::format("layer {}", l));
    for (size_t c = 0; c < columns.size(); ++c) {
      auto it = cells.find({l, columns[c]});
      if (it == cells.end()) continue;
      s += fmt::format(R"(<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{} {}: {:.3f} bpw</title></rect>)", left + int(c) * cell, y,
                       cell - 1, cell - 1, colour(it->second), l < 0 ? "global" : fmt::format("layer {}", l), columns[c], it->second);
      s += fmt::format(R"(<text x="{}" y="{}" font-size="8">{:.1f}</text>)", left + int(c) * cell + 3, y + 14, it->second);
    }
  }
  s += "</svg>\n";
  write_text(svg, s);

  std::string h = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>lowbit plan</title>"
                  "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}td:first-child{text-align:left}</style></head><body>";
  h += fmt::format("<h1>lowbit plan for {}</h1><p>{} output; target {:.3f} bits per weight, achieved {:.3f}; {} parameters, {} bytes. Losses: {}.</p>",
                   escaped(plan.model), plan.target == PlanTarget::bnb ? "bitsandbytes" : "GGUF", plan.target_bpw, plan.achieved_bpw, plan.params, plan.bytes,
                   escaped(plan_loss_description(plan.loss_measure)));
  h += s;
  h += "<table><tr><th>tensor</th><th>role</th><th>format</th><th>bpw</th><th>predicted loss</th></tr>";
  for (const auto& t : plan.tensors)
    h += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3f}</td><td>{}</td></tr>", escaped(t.name), role_name(t.role), format_label(t.format),
                     8.0 * double(t.bytes) / double(t.params), t.quantized ? fmt::format("{:.3e}", t.loss) : "-");
  h += "</table></body></html>\n";
  write_text(html, h);
}

}  // namespace lowbit
