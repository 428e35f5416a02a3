#version 460
// Groups a step's (token, choice) assignments by expert on the GPU, in one workgroup: counts,
// exclusive prefix sums (offsets), the assignment ids of each expert contiguous in `sorted`,
// the list of experts that received any token (`live`: count, then ids ascending), and after it
// the grids of the two tiled expert dispatches (x: column tiles, y: row tiles of the busiest
// expert, z: live experts), so no workgroup is launched for a tile no expert has.
// The order of assignments inside one expert depends on atomics; nothing downstream depends on
// it, because every result is written at its assignment id.
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

#include "moe_grids.glsl"

shared uint count[MAX_EXPERTS];
shared uint cursor[MAX_EXPERTS];
shared uint block_sum[gl_WorkGroupSize.x];  // one entry per subgroup is used
shared uint block_live[gl_WorkGroupSize.x];
shared uint block_busiest[gl_WorkGroupSize.x];

// Subgroup s scans the experts of block s (contiguous, ascending), a subgroup's active lanes at a
// time. Lanes are ranked among the active ones with subgroup scans, so no subgroup size, lane
// numbering or full subgroup is assumed.
uint group_block_size() { return (p.experts + gl_NumSubgroups - 1u) / gl_NumSubgroups; }

void main() {
  const uint assignments = p.assignments;
  const uint tid = gl_LocalInvocationID.x;
  for (uint e = tid; e < p.experts; e += gl_WorkGroupSize.x) count[e] = 0u;
  barrier();
  for (uint a = tid; a < assignments; a += gl_WorkGroupSize.x) atomicAdd(count[p.ids.v[a]], 1u);
  barrier();

  const uint lane = subgroupExclusiveAdd(1u), lanes = subgroupAdd(1u);
  const uint first = min(gl_SubgroupID * group_block_size(), p.experts);
  const uint end = min(first + group_block_size(), p.experts);
  // Pass 1: the block's totals (assignments, experts with any, the busiest expert's count).
  uint sum = 0u, live = 0u, busiest = 0u;
  for (uint e = first + lane; e < end; e += lanes) {
    sum += count[e];
    live += count[e] > 0u ? 1u : 0u;
    busiest = max(busiest, count[e]);
  }
  sum = subgroupAdd(sum);
  live = subgroupAdd(live);
  busiest = subgroupMax(busiest);
  if (subgroupElect()) {
    block_sum[gl_SubgroupID] = sum;
    block_live[gl_SubgroupID] = live;
    block_busiest[gl_SubgroupID] = busiest;
  }
  barrier();
  uint offset = 0u, live_at = 0u, total = 0u, total_live = 0u;
  busiest = 0u;
  for (uint s = 0u; s < gl_NumSubgroups; ++s) {
    if (s < gl_SubgroupID) {
      offset += block_sum[s];
      live_at += block_live[s];
    }
    total += block_sum[s];
    total_live += block_live[s];
    busiest = max(busiest, block_busiest[s]);
  }
  // Pass 2: exclusive prefix sums (offsets), each expert's cursor, the live list in expert order.
  for (uint base = first; base < end; base += lanes) {
    const uint e = base + lane;
    const uint c = e < end ? count[e] : 0u, is_live = c > 0u ? 1u : 0u;
    const uint before = offset + subgroupExclusiveAdd(c), live_before = live_at + subgroupExclusiveAdd(is_live);
    if (e < end) {
      p.offsets.v[e] = before;
      cursor[e] = before;
      if (is_live != 0u) p.live.v[1u + live_before] = e;
    }
    offset += subgroupAdd(c);
    live_at += subgroupAdd(is_live);
  }
  if (tid == 0u) {
    p.offsets.v[p.experts] = total;
    p.live.v[0] = total_live;
    write_expert_grids((busiest + p.tile_rows - 1u) / p.tile_rows, total_live);
  }
  barrier();
  for (uint a = tid; a < assignments; a += gl_WorkGroupSize.x) p.sorted.v[atomicAdd(cursor[p.ids.v[a]], 1u)] = a;
}

