// The iq2 quantizer's search tables, built from the grid points (ggml-quants.c's iq2xs_init_impl builds
// the same maps at run time; here they are built lazily, once per grid).
#include "formats/ggml_iq2_grids.h"

#include <mutex>

namespace lowbit::ggml::iq2 {
namespace {

int level_of(uint32_t key, int j) { return int(key >> (2 * j)) & 3; }

bool is_key_of_levels_0_to_2(uint32_t key) {
  for (int j = 0; j < 8; ++j)
    if (level_of(key, j) == 3) return false;
  return true;
}

// Squared distance between two keys in value units (2l+1): 4 * sum of squared level differences.
int squared_distance(uint32_t a, uint32_t b) {
  int d2 = 0;
  for (int j = 0; j < 8; ++j) {
    const int diff = 2 * (level_of(a, j) - level_of(b, j));
    d2 += diff * diff;
  }
  return d2;
}

// The number of values where every candidate differs from `key`, if it is the same for all and at most
// SearchTables::kMaxDiffering, else 0.
uint32_t common_differing(const SearchTables& t, uint32_t key, const std::vector<uint16_t>& candidates) {
  int common = -1;
  for (const uint16_t candidate : candidates) {
    int differing = 0;
    for (int j = 0; j < 8; ++j) differing += t.levels[candidate][size_t(j)] != level_of(key, j);
    if (common >= 0 && differing != common) return 0;
    common = differing;
  }
  return common > 0 && common <= SearchTables::kMaxDiffering ? uint32_t(common) : 0;
}

void add_list(SearchTables& t, uint32_t list_key, const std::vector<uint16_t>& candidates) {
  const auto count = uint32_t(candidates.size());
  const uint32_t differing = common_differing(t, list_key, candidates);
  t.lists.push_back({uint32_t(t.neighbours.size()), uint32_t(t.lane_levels.size()), count, differing});
  t.neighbours.insert(t.neighbours.end(), candidates.begin(), candidates.end());
  for (const uint16_t candidate : candidates) {
    uint32_t key = 0;
    uint8_t deltas[2 * SearchTables::kMaxDiffering] = {};
    int pairs = 0;
    for (int j = 0; j < 8; ++j) {
      const int level = t.levels[candidate][size_t(j)];
      key |= uint32_t(level) << (2 * j);
      t.neighbour_slots.push_back(uint8_t(3 * j + level));
      if (differing && level != level_of(list_key, j)) {
        deltas[2 * pairs] = uint8_t(3 * j + level);
        deltas[2 * pairs + 1] = uint8_t(3 * j + level_of(list_key, j));
        ++pairs;
      }
    }
    t.neighbour_keys.push_back(key);
    t.neighbour_deltas.insert(t.neighbour_deltas.end(), deltas, deltas + 2 * SearchTables::kMaxDiffering);
  }
  constexpr int kChunk = SearchTables::kLaneChunk;
  const size_t chunks = (count + kChunk - 1) / kChunk;
  const size_t base = t.lane_levels.size();
  t.lane_levels.resize(base + chunks * 8 * kChunk, 0);
  for (uint32_t c = 0; c < count; ++c)
    for (int j = 0; j < 8; ++j)
      t.lane_levels[base + (c / kChunk) * 8 * kChunk + size_t(j) * kChunk + c % kChunk] =
          uint8_t(SearchTables::kLaneByte * t.levels[candidates[c]][size_t(j)]);
}

SearchTables build(std::span<const uint16_t> points, int nearest_levels) {
  SearchTables t;
  t.by_key.assign(kKeyCount, 0);
  t.levels.resize(points.size());
  for (size_t k = 0; k < points.size(); ++k)
    for (int j = 0; j < 8; ++j) t.levels[k][size_t(j)] = int8_t(level_of(points[k], j));
  std::vector<int32_t> grid_index(kKeyCount, -1);
  for (size_t k = 0; k < points.size(); ++k) grid_index[points[k]] = int32_t(k);

  // Distances are 4 * (sum of squared level differences) <= 4 * 32: bucket the grid points by distance,
  // in index order, which is ggml's order (sorted by distance, then index).
  constexpr int kDistances = 4 * 32 + 1;
  std::vector<std::vector<uint16_t>> by_distance(kDistances);
  std::vector<uint16_t> candidates;
  add_list(t, 0, {});  // list 0: empty, for keys holding level 3
  for (uint32_t key = 0; key < uint32_t(kKeyCount); ++key) {
    if (grid_index[key] >= 0) {
      t.by_key[key] = grid_index[key];
      continue;
    }
    if (!is_key_of_levels_0_to_2(key)) {
      t.by_key[key] = -1;
      continue;
    }
    for (auto& bucket : by_distance) bucket.clear();
    for (size_t k = 0; k < points.size(); ++k) by_distance[size_t(squared_distance(key, points[k]))].push_back(uint16_t(k));
    candidates.clear();
    int levels_taken = 0;
    for (const auto& bucket : by_distance) {
      if (bucket.empty()) continue;
      candidates.insert(candidates.end(), bucket.begin(), bucket.end());
      if (++levels_taken == nearest_levels) break;
    }
    t.by_key[key] = -int32_t(t.lists.size()) - 1;
    add_list(t, key, candidates);
  }
  return t;
}

struct Lazy {
  std::once_flag once;
  SearchTables tables;
};

}  // namespace

const SearchTables& search_tables(Grid grid) {
  static Lazy lazy[3];
  Lazy& slot = lazy[int(grid)];
  std::call_once(slot.once, [&] {
    switch (grid) {
      case Grid::Xxs: slot.tables = build(kIq2xxsGridPoints, 2); break;
      case Grid::Xs: slot.tables = build(kIq2xsGridPoints, 2); break;
      case Grid::S: slot.tables = build(kIq2sGridPoints, 1); break;
    }
  });
  return slot.tables;
}

}  // namespace lowbit::ggml::iq2
