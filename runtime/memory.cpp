#include "runtime/memory.h"

#include <algorithm>
#include <cstdio>

#include "runtime/error.h"

namespace q3n {

namespace {
constexpr VkDeviceSize kDefaultBlock = 256ull << 20;
VkDeviceSize align_up(VkDeviceSize v, VkDeviceSize a) { return (v + a - 1) / a * a; }
}  // namespace

std::string format_bytes(VkDeviceSize bytes) {
  char buf[64];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024)
    std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024)
    std::snprintf(buf, sizeof buf, "%.1f MiB", b / (1024.0 * 1024));
  else if (b >= 1024.0)
    std::snprintf(buf, sizeof buf, "%.1f KiB", b / 1024.0);
  else
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  return buf;
}

Allocation::~Allocation() {
  if (owner_) owner_->release(block_, range_.offset, range_.size);
}

Allocation::Allocation(Allocation&& o) noexcept
    : owner_(std::exchange(o.owner_, nullptr)), block_(o.block_), range_(o.range_), mapped_(o.mapped_) {}

Allocation& Allocation::operator=(Allocation&& o) noexcept {
  if (this != &o) {
    if (owner_) owner_->release(block_, range_.offset, range_.size);
    owner_ = std::exchange(o.owner_, nullptr);
    block_ = o.block_;
    range_ = o.range_;
    mapped_ = o.mapped_;
  }
  return *this;
}

Allocator::Allocator(const Device& device) : device_(device) {
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(device.physical(), &props);
  alignment_ =
      std::max<VkDeviceSize>({256, props.limits.minStorageBufferOffsetAlignment, props.limits.nonCoherentAtomSize});
  block_size_ = std::min({kDefaultBlock, device.info().max_allocation, device.info().max_buffer_size});
}

Allocator::~Allocator() {
  for (auto& b : blocks_)
    if (b->mapped) vkUnmapMemory(device_.get(), b->memory);
}

uint32_t Allocator::memory_type(MemoryKind kind, uint32_t type_bits) const {
  VkPhysicalDeviceMemoryProperties mem;
  vkGetPhysicalDeviceMemoryProperties(device_.physical(), &mem);
  std::vector<VkMemoryPropertyFlags> wanted;
  switch (kind) {
    case MemoryKind::Device:
      wanted = {VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0};
      break;
    case MemoryKind::Upload:
      wanted = {VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT};
      break;
    case MemoryKind::Readback:
      wanted = {VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT |
                    VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
                VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT};
      break;
  }
  for (VkMemoryPropertyFlags flags : wanted)
    for (uint32_t i = 0; i < mem.memoryTypeCount; ++i)
      if ((type_bits & (1u << i)) && (mem.memoryTypes[i].propertyFlags & flags) == flags) return i;
  throw Error("device " + device_.info().name + " has no suitable memory type for " +
              (kind == MemoryKind::Device ? "device-local tensors" : "host staging buffers"));
}

size_t Allocator::create_block(VkDeviceSize bytes, MemoryKind kind, const std::string& what) {
  const auto& info = device_.info();
  const VkDeviceSize limit = std::min(info.max_allocation, info.max_buffer_size);
  if (bytes > limit)
    throw Error(what + " needs one allocation of " + format_bytes(bytes) + " but device " + info.name +
                " allows at most " + format_bytes(limit) + " per allocation");
  if (kind == MemoryKind::Device && info.memory_budget) {
    const VkDeviceSize free = device_.free_device_memory();
    if (bytes > free)
      throw Error("out of GPU memory allocating " + what + ": it needs " + format_bytes(bytes) + " more but only " +
                  format_bytes(free) + " is free on " + info.name +
                  " (use a smaller model, quantised weights, a shorter context or a smaller batch)");
  }

  auto block = std::make_unique<Block>();
  block->kind = kind;
  block->size = bytes;
  VkDevice dev = device_.get();

  VkBufferCreateInfo buffer_info{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  buffer_info.size = bytes;
  // Indirect: shaders write the grid of later dispatches (moe_group.comp).
  buffer_info.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                      VK_BUFFER_USAGE_TRANSFER_DST_BIT | VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT |
                      VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT;
  if (device_.texel_reads()) buffer_info.usage |= VK_BUFFER_USAGE_UNIFORM_TEXEL_BUFFER_BIT;
  buffer_info.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VkBuffer buffer;
  VK_CHECK(vkCreateBuffer(dev, &buffer_info, nullptr, &buffer));
  block->buffer = OwnedBuffer(dev, buffer);

  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(dev, buffer, &req);
  VkMemoryAllocateFlagsInfo flags{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO};
  flags.flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT;
  VkMemoryAllocateInfo alloc{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  alloc.pNext = &flags;
  alloc.allocationSize = req.size;
  alloc.memoryTypeIndex = memory_type(kind, req.memoryTypeBits);
  VkDeviceMemory memory;
  VkResult r = vkAllocateMemory(dev, &alloc, nullptr, &memory);
  if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
    throw Error("out of GPU memory allocating " + what + " (" + format_bytes(bytes) +
                " block): use a smaller "
                "model, quantised weights, a shorter context or a smaller batch");
  vk_check(r, "vkAllocateMemory");
  block->memory = OwnedMemory(dev, memory);
  VK_CHECK(vkBindBufferMemory(dev, buffer, memory, 0));
  if (kind != MemoryKind::Device) VK_CHECK(vkMapMemory(dev, memory, 0, VK_WHOLE_SIZE, 0, &block->mapped));

  VkBufferDeviceAddressInfo addr{VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO};
  addr.buffer = buffer;
  block->address = vkGetBufferDeviceAddress(dev, &addr);
  block->free[0] = bytes;
  create_texel_views(*block);
  blocks_.push_back(std::move(block));
  return blocks_.size() - 1;
}

void Allocator::create_texel_views(Block& block) {
  const DeviceInfo& info = device_.info();
  if (!device_.texel_reads() || info.max_texel_buffer_elements == 0) return;
  VkDevice dev = device_.get();
  auto view = [&](VkFormat format, VkDeviceSize texel_bytes, VkDeviceSize* end) {
    // Whole texels only, and no more than the device's limit.
    const VkDeviceSize bytes =
        std::min(block.size / texel_bytes, VkDeviceSize(info.max_texel_buffer_elements)) * texel_bytes;
    *end = bytes;
    VkBufferViewCreateInfo view_info{VK_STRUCTURE_TYPE_BUFFER_VIEW_CREATE_INFO};
    view_info.buffer = block.buffer.get();
    view_info.format = format;
    view_info.offset = 0;
    view_info.range = bytes;
    VkBufferView handle;
    VK_CHECK(vkCreateBufferView(dev, &view_info, nullptr, &handle));
    return OwnedBufferView(dev, handle);
  };
  if (block.size < 16) return;
  block.words = view(VK_FORMAT_R32_UINT, 4, &block.texels.words_end);
  block.quads = view(VK_FORMAT_R32G32B32A32_UINT, 16, &block.texels.quads_end);
  VkDeviceSize floats_end = 0;
  block.floats = view(VK_FORMAT_R32G32B32A32_SFLOAT, 16, &floats_end);
  block.texels.words = block.words.get();
  block.texels.quads = block.quads.get();
  block.texels.floats = block.floats.get();
}

bool Allocator::carve(Block& block, VkDeviceSize bytes, VkDeviceSize* offset) {
  for (auto it = block.free.begin(); it != block.free.end(); ++it) {
    if (it->second < bytes) continue;
    *offset = it->first;
    const VkDeviceSize rest = it->second - bytes;
    block.free.erase(it);
    if (rest) block.free[*offset + bytes] = rest;
    return true;
  }
  return false;
}

Allocation Allocator::allocate(VkDeviceSize bytes, MemoryKind kind, const std::string& what) {
  if (bytes == 0) bytes = 1;
  const VkDeviceSize size = align_up(bytes, alignment_);
  size_t index = blocks_.size();
  VkDeviceSize offset = 0;
  for (size_t i = 0; i < blocks_.size(); ++i)
    if (blocks_[i]->kind == kind && carve(*blocks_[i], size, &offset)) {
      index = i;
      break;
    }
  if (index == blocks_.size()) {
    index = create_block(std::max(size, block_size_), kind, what);
    carve(*blocks_[index], size, &offset);
  }
  Block& block = *blocks_[index];
  Allocation a;
  a.owner_ = this;
  a.block_ = index;
  a.range_ = {block.buffer.get(), offset, size, block.address + offset, block.texels.words ? &block.texels : nullptr};
  a.mapped_ = block.mapped ? static_cast<char*>(block.mapped) + offset : nullptr;
  used_[static_cast<int>(kind)] += size;
  return a;
}

void Allocator::release(size_t index, VkDeviceSize offset, VkDeviceSize bytes) {
  Block& block = *blocks_[index];
  used_[static_cast<int>(block.kind)] -= bytes;
  auto [it, inserted] = block.free.emplace(offset, bytes);
  // Coalesce with the following and the preceding free range.
  auto next = std::next(it);
  if (next != block.free.end() && it->first + it->second == next->first) {
    it->second += next->second;
    block.free.erase(next);
  }
  if (it != block.free.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second == it->first) {
      prev->second += it->second;
      block.free.erase(it);
    }
  }
}

VkDeviceSize Allocator::reserved_bytes(MemoryKind kind) const {
  VkDeviceSize total = 0;
  for (const auto& b : blocks_)
    if (b->kind == kind) total += b->size;
  return total;
}

VkDeviceSize Allocator::used_bytes(MemoryKind kind) const { return used_[static_cast<int>(kind)]; }

}  // namespace q3n
