#include "runtime/spirv_reflect.h"

#include <algorithm>
#include <map>
#include <vector>

#include "runtime/error.h"

namespace q3n {

namespace {
// Opcodes, decorations and storage classes used below (SPIR-V specification, section 3).
constexpr uint32_t kOpTypeBool = 20, kOpTypeInt = 21, kOpTypeFloat = 22, kOpTypeVector = 23, kOpTypeArray = 28,
                   kOpTypeStruct = 30, kOpTypePointer = 32, kOpConstant = 43, kOpVariable = 59, kOpMemberDecorate = 72;
constexpr uint32_t kDecorationOffset = 35;
constexpr uint32_t kStoragePushConstant = 9, kStoragePhysicalStorageBuffer = 5349;

struct Module {
  std::map<uint32_t, std::vector<uint32_t>> types;            // result id -> the instruction's words
  std::map<uint32_t, uint32_t> constants;                     // result id -> first literal word
  std::map<std::pair<uint32_t, uint32_t>, uint32_t> offsets;  // (struct, member) -> Offset
  std::optional<uint32_t> push_pointer_type;

  uint32_t size_of(uint32_t id, int depth = 0) const {
    if (depth > 16) throw Error("internal: SPIR-V type nesting too deep");
    const auto it = types.find(id);
    if (it == types.end()) throw Error("internal: SPIR-V type %" + std::to_string(id) + " not found");
    const std::vector<uint32_t>& w = it->second;
    switch (w[0] & 0xFFFFu) {
      case kOpTypeBool:
        return 4;
      case kOpTypeInt:
      case kOpTypeFloat:
        return w.at(2) / 8;
      case kOpTypeVector:
        return w.at(3) * size_of(w.at(2), depth + 1);
      case kOpTypeArray:
        return constants.at(w.at(3)) * size_of(w.at(2), depth + 1);
      case kOpTypePointer:
        if (w.at(2) == kStoragePhysicalStorageBuffer) return 8;  // buffer reference: a 64-bit address
        break;
      case kOpTypeStruct: {
        uint32_t end = 0;
        for (uint32_t m = 0; m + 2 < w.size(); ++m) {
          const auto offset = offsets.find({id, m});
          if (offset == offsets.end()) throw Error("internal: SPIR-V struct member without an Offset");
          end = std::max(end, offset->second + size_of(w[m + 2], depth + 1));
        }
        return end;
      }
    }
    throw Error("internal: unexpected SPIR-V type in a push-constant block (opcode " + std::to_string(w[0] & 0xFFFFu) +
                ")");
  }
};
}  // namespace

std::optional<uint32_t> push_constant_bytes(std::span<const uint32_t> spirv) {
  if (spirv.size() < 5 || spirv[0] != 0x07230203u) throw Error("internal: not a SPIR-V module");
  Module m;
  for (size_t at = 5; at < spirv.size();) {
    const uint32_t count = spirv[at] >> 16, op = spirv[at] & 0xFFFFu;
    if (count == 0 || at + count > spirv.size()) throw Error("internal: truncated SPIR-V instruction");
    const std::span<const uint32_t> w = spirv.subspan(at, count);
    if ((op == kOpTypeBool || op == kOpTypeInt || op == kOpTypeFloat || op == kOpTypeVector || op == kOpTypeArray ||
         op == kOpTypeStruct || op == kOpTypePointer) &&
        count >= 2)
      m.types[w[1]] = std::vector<uint32_t>(w.begin(), w.end());
    else if (op == kOpConstant && count >= 4)
      m.constants[w[2]] = w[3];
    else if (op == kOpMemberDecorate && count >= 5 && w[3] == kDecorationOffset)
      m.offsets[{w[1], w[2]}] = w[4];
    else if (op == kOpVariable && count >= 4 && w[3] == kStoragePushConstant)
      m.push_pointer_type = w[1];
    at += count;
  }
  if (!m.push_pointer_type) return std::nullopt;
  const std::vector<uint32_t>& pointer = m.types.at(*m.push_pointer_type);
  return m.size_of(pointer.at(3));
}

}  // namespace q3n
