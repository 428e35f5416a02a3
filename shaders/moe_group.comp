#version 460
// Groups a step's (token, choice) assignments by expert (moe_group.glsl).
#include "common.glsl"

layout(constant_id = 3) const uint MAX_EXPERTS = 512;

layout(push_constant) uniform Push {
  U32Buf ids;      // [assignments] expert of each (token, choice)
  U32Buf offsets;  // [experts + 1]
  U32Buf sorted;   // [assignments]
  U32Buf live;     // [1 + experts + 6]
  uint assignments;
  uint experts;
  uint tile_rows;     // rows per tile of the expert kernels
  uint gate_up_columns, down_columns;  // column tiles of the two products
} p;

#define EXPERT_OF(a) p.ids.v[a]
#include "moe_group.glsl"

void main() { group_assignments(p.assignments); }
