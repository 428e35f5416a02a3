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

// Every invocation of the workgroup calls it; EXPERT_OF(a) (defined by the includer) is the
// expert of assignment a.
void group_assignments(uint assignments) {
  const uint tid = gl_LocalInvocationID.x;
  for (uint e = tid; e < p.experts; e += gl_WorkGroupSize.x) count[e] = 0u;
  barrier();
  for (uint a = tid; a < assignments; a += gl_WorkGroupSize.x) atomicAdd(count[EXPERT_OF(a)], 1u);
  barrier();
  if (tid == 0u) {
    uint running = 0u, live = 0u, busiest = 0u;
    for (uint e = 0; e < p.experts; ++e) {
      p.offsets.v[e] = running;
      cursor[e] = running;
      running += count[e];
      busiest = max(busiest, count[e]);
      if (count[e] > 0u) p.live.v[1u + live++] = e;
    }
    p.offsets.v[p.experts] = running;
    p.live.v[0] = live;
    const uint grid = 1u + p.experts, row_tiles = (busiest + p.tile_rows - 1u) / p.tile_rows;
    p.live.v[grid] = p.gate_up_columns;
    p.live.v[grid + 1u] = row_tiles;
    p.live.v[grid + 2u] = live;
    p.live.v[grid + 3u] = p.down_columns;
    p.live.v[grid + 4u] = row_tiles;
    p.live.v[grid + 5u] = live;
  }
  barrier();
  for (uint a = tid; a < assignments; a += gl_WorkGroupSize.x) p.sorted.v[atomicAdd(cursor[EXPERT_OF(a)], 1u)] = a;
}
