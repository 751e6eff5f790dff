// The quantizer's view of ggml's iq2 grids (private to src/formats): from the grid points of
// lowbit/formats/ggml_iq2_grids.h, which grid point each rounded subgroup is, or which points are
// nearest when it is none, built once on first use.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "lowbit/formats/ggml_iq2_grids.h"

namespace lowbit::ggml::iq2 {

// ---- the quantizer's view ----

// A rounded subgroup as a search key: level of value j (0..2) at bits 2j, as the grid points.
inline constexpr int kKeyCount = 0xAAAA + 1;  // all levels 2

// What ggml's iq2xs_init_impl builds: for every key (every rounded subgroup, all levels 0..2), the grid
// point it is, or else the grid points nearest to it (squared distance in 2l+1 units), all points of the
// `nearest_levels` smallest distances, nearest first, ties by grid index. The quantizer tries these in
// order and keeps the first with the least weighted error, so the order is part of the format's bytes.
struct SearchTables {
  // A key's neighbour list: `count` grid indices from `first` in `neighbours`; the same candidates'
  // levels lane-major from `lane_first` in `lane_levels` (below).
  struct List {
    uint32_t first;
    uint32_t lane_first;
    uint32_t count;
    // m where every candidate differs from the key in exactly m values, 1 <= m <= kMaxDiffering (all of
    // iq2_s's lists); else 0.
    uint32_t differing;
  };
  static constexpr int kMaxDiffering = 4;
  // By key: the grid index (>= 0), or -(1 + list number) when the key is no grid point. Keys holding a
  // level 3 (never formed) have an empty list.
  std::vector<int32_t> by_key;
  std::vector<List> lists;
  std::vector<uint16_t> neighbours;
  // Each list's candidates in chunks of kLaneChunk: byte [chunk * 8 * kLaneChunk + j * kLaneChunk + c]
  // is the level l of value j of the chunk's candidate c (0 past the list's end), so a vector kernel
  // loads value j of 16 candidates at once. Stored as kLaneByte * l: bits 0, 1 are l (what vpermilps
  // reads; others mask with 3), and the byte is the offset of level l's term vector in the AVX2 search's
  // table (ggml_iq2_search_avx2.cpp), so a candidate's term is one byte load and one vector add.
  static constexpr int kLaneChunk = 16;
  static constexpr int kLaneByte = 65;  // 64 + 1: level l's 32-byte vector at 65 l stays within cache line l
  static constexpr int level_of_lane_byte(uint8_t b) { return b & 3; }
  std::vector<uint8_t> lane_levels;
  // Per entry of `neighbours`: the candidate's key, and its 8 term slots 3j + l (value j at level l),
  // byte 8 * entry + j: what the searches over all trials (trials in the lanes, AVX-512 and AVX2) pick per
  // candidate.
  std::vector<uint32_t> neighbour_keys;
  std::vector<uint8_t> neighbour_slots;
  // Per entry of a list with `differing` m > 0: the term slots of the m values where the candidate
  // differs from the key, as pairs (3j + candidate's level, 3j + key's level) at bytes
  // 2 * kMaxDiffering * entry + 2i, + 1 (0 past m): a candidate's distance minus the key's is the sum of
  // those terms' differences, which the searches over all trials rank the candidates by before they add
  // any in full.
  std::vector<uint8_t> neighbour_deltas;
  // Grid point k's levels, one byte per value.
  std::vector<std::array<int8_t, 8>> levels;

  const List& list_of(int32_t entry) const { return lists[size_t(-entry - 1)]; }
  std::span<const uint16_t> candidates(const List& list) const { return {neighbours.data() + list.first, list.count}; }
};

// Candidate c of a list's lane-major levels (from its lane_first): its level of value j at [j * kLaneChunk].
inline const uint8_t* lane_levels_of(const uint8_t* list_lanes, int c) {
  return list_lanes + (c / SearchTables::kLaneChunk) * 8 * SearchTables::kLaneChunk + c % SearchTables::kLaneChunk;
}

enum class Grid { Xxs, Xs, S };

// Built on first use, once, whichever thread asks first (iq2_xxs and iq2_xs use the 2 nearest distances,
// iq2_s only the nearest, as ggml).
const SearchTables& search_tables(Grid grid);

}  // namespace lowbit::ggml::iq2
