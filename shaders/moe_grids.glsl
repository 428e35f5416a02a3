// The grids of the two tiled expert dispatches, written after the live-expert list in `live`
// (two VkDispatchIndirectCommand: x column tiles, y row tiles of the busiest expert, z live
// experts), so that no workgroup is launched for a tile no expert has. Shared by moe_group.comp
// and moe_route_group.comp; the includer's push block `p` has live, experts, gate_up_columns,
// down_columns.
void write_expert_grids(uint row_tiles, uint live_experts) {
  const uint grid = 1u + p.experts;
  p.live.v[grid] = p.gate_up_columns;
  p.live.v[grid + 1u] = row_tiles;
  p.live.v[grid + 2u] = live_experts;
  p.live.v[grid + 3u] = p.down_columns;
  p.live.v[grid + 4u] = row_tiles;
  p.live.v[grid + 5u] = live_experts;
}
