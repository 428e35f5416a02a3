// Groups the (token, choice) assignments by expert on the GPU, in one workgroup: counts,
// exclusive prefix sums (offsets), the assignment ids of each expert contiguous in `sorted`,
// the list of experts that received any token (`live`: count, then ids ascending), and after it
// the grids of the two tiled expert dispatches (x: column tiles, y: row tiles of the busiest
// expert, z: live experts), so no workgroup is launched for a tile no expert has.
// The order of assignments inside one expert depends on atomics; nothing downstream depends on
// it, because every result is written at its assignment id.
// Shared by moe_group.comp and moe_route_group.comp; the includer declares MAX_EXPERTS and a push
// block `p` with offsets, sorted, live, experts, tile_rows, gate_up_columns, down_columns.

shared uint count[MAX_EXPERTS];
shared uint cursor[MAX_EXPERTS];
shared uint block_sum[gl_WorkGroupSize.x];  // one entry per subgroup is used
shared uint block_live[gl_WorkGroupSize.x];
shared uint block_busiest[gl_WorkGroupSize.x];

// Subgroup s scans the experts of block s (contiguous, ascending), a subgroup's active lanes at a
// time. Lanes are ranked among the active ones with subgroup scans, so no subgroup size, lane
// numbering or full subgroup is assumed.
uint group_block_size() { return (p.experts + gl_NumSubgroups - 1u) / gl_NumSubgroups; }

// Every invocation of the workgroup calls it; EXPERT_OF(a) (defined by the includer) is the
// expert of assignment a.
void group_assignments(uint assignments) {
  const uint tid = gl_LocalInvocationID.x;
  for (uint e = tid; e < p.experts; e += gl_WorkGroupSize.x) count[e] = 0u;
  barrier();
  for (uint a = tid; a < assignments; a += gl_WorkGroupSize.x) atomicAdd(count[EXPERT_OF(a)], 1u);
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
    const uint grid = 1u + p.experts, row_tiles = (busiest + p.tile_rows - 1u) / p.tile_rows;
    p.live.v[grid] = p.gate_up_columns;
    p.live.v[grid + 1u] = row_tiles;
    p.live.v[grid + 2u] = total_live;
    p.live.v[grid + 3u] = p.down_columns;
    p.live.v[grid + 4u] = row_tiles;
    p.live.v[grid + 5u] = total_live;
  }
  barrier();
  for (uint a = tid; a < assignments; a += gl_WorkGroupSize.x) p.sorted.v[atomicAdd(cursor[EXPERT_OF(a)], 1u)] = a;
}
