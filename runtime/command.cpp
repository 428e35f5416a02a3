#include "runtime/command.h"

#include <vector>

#include <cstdlib>
#include <string>
#include <utility>

#include "runtime/error.h"
#include "runtime/profiler.h"

namespace q3n {

CommandBuffer::CommandBuffer(const Device& device, VkCommandPool pool)
    : device_(device.get()), owner_(&device), pool_(pool) {
  for (int i = 0; i < 3; ++i) max_groups_[i] = device.info().max_workgroup_count[i];
  VkCommandBufferAllocateInfo info{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  info.commandPool = pool;
  info.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  info.commandBufferCount = 1;
  VK_CHECK(vkAllocateCommandBuffers(device_, &info, &buffer_));
}

CommandBuffer::~CommandBuffer() {
  if (buffer_ != VK_NULL_HANDLE) vkFreeCommandBuffers(device_, pool_, 1, &buffer_);
}

CommandBuffer::CommandBuffer(CommandBuffer&& o) noexcept
    : device_(o.device_),
      owner_(o.owner_),
      max_groups_{o.max_groups_[0], o.max_groups_[1], o.max_groups_[2]},
      pool_(o.pool_),
      buffer_(std::exchange(o.buffer_, VK_NULL_HANDLE)),
      barriers_(o.barriers_),
      dispatches_(o.dispatches_) {}

void CommandBuffer::begin(bool reusable) {
  VK_CHECK(vkResetCommandBuffer(buffer_, 0));
  VkCommandBufferBeginInfo info{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  info.flags = reusable ? 0 : VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  VK_CHECK(vkBeginCommandBuffer(buffer_, &info));
  barriers_ = dispatches_ = 0;
}

void CommandBuffer::end() { VK_CHECK(vkEndCommandBuffer(buffer_)); }

void CommandBuffer::bind(const Pipeline& pipeline, const void* push, uint32_t push_bytes) {
  if (push_bytes != pipeline.key().push_bytes)
    throw Error("internal: push constants for " + pipeline.key().shader + " are " + std::to_string(push_bytes) +
                " bytes, the pipeline expects " + std::to_string(pipeline.key().push_bytes));
  vkCmdBindPipeline(buffer_, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.get());
  if (push_bytes) vkCmdPushConstants(buffer_, pipeline.layout(), VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes, push);
}

void CommandBuffer::dispatch(const Pipeline& pipeline, const void* push, uint32_t push_bytes, uint32_t gx, uint32_t gy,
                             uint32_t gz) {
  if (gx > max_groups_[0] || gy > max_groups_[1] || gz > max_groups_[2])
    throw Error(pipeline.key().shader + ": a dispatch of " + std::to_string(gx) + " x " + std::to_string(gy) + " x " +
                std::to_string(gz) + " workgroups exceeds this device's maxComputeWorkGroupCount (" +
                std::to_string(max_groups_[0]) + " x " + std::to_string(max_groups_[1]) + " x " +
                std::to_string(max_groups_[2]) + "); a smaller --chunk or fewer sequences per step stay within it");
  bind(pipeline, push, push_bytes);
  vkCmdDispatch(buffer_, gx, gy, gz);
  dispatches_++;
}

void CommandBuffer::push_texel_views(const Pipeline& pipeline, std::span<const VkBufferView> views) {
  if (views.size() != pipeline.key().texel_views)
    throw Error("internal: " + pipeline.key().shader + " takes " + std::to_string(pipeline.key().texel_views) +
                " texel views, not " + std::to_string(views.size()));
  owner_->push_texel_views(buffer_, pipeline.layout(), views.data(), static_cast<uint32_t>(views.size()));
}

void CommandBuffer::dispatch_indirect(const Pipeline& pipeline, const void* push, uint32_t push_bytes,
                                      const BufferRange& grid) {
  if (grid.size < 12 || grid.offset % 4) throw Error("internal: an indirect grid is three aligned u32");
  bind(pipeline, push, push_bytes);
  vkCmdDispatchIndirect(buffer_, grid.buffer, grid.offset);
  dispatches_++;
}

void CommandBuffer::memory_barrier(VkPipelineStageFlags extra_stages, VkAccessFlags extra_access) {
  VkMemoryBarrier b{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  b.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  b.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                    VK_ACCESS_TRANSFER_WRITE_BIT | extra_access;
  const VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(buffer_, stages, stages | extra_stages, 0, 1, &b, 0, nullptr, 0, nullptr);
  barriers_++;
}

void CommandBuffer::barrier() { memory_barrier(0, 0); }

void CommandBuffer::barrier_with_indirect() {
  memory_barrier(VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT, VK_ACCESS_INDIRECT_COMMAND_READ_BIT);
}

void CommandBuffer::barrier_to_host() {
  VkMemoryBarrier b{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  b.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  b.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
  vkCmdPipelineBarrier(buffer_, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                       VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &b, 0, nullptr, 0, nullptr);
}

void CommandBuffer::copy(const BufferRange& src, const BufferRange& dst, VkDeviceSize bytes) {
  VkBufferCopy region{src.offset, dst.offset, bytes};
  vkCmdCopyBuffer(buffer_, src.buffer, dst.buffer, 1, &region);
}

void CommandBuffer::copy_rows(const BufferRange& src, const BufferRange& dst, uint32_t rows, VkDeviceSize row_bytes,
                              VkDeviceSize src_stride, VkDeviceSize dst_stride) {
  std::vector<VkBufferCopy> regions(rows);
  for (uint32_t r = 0; r < rows; ++r)
    regions[r] = {src.offset + r * src_stride, dst.offset + r * dst_stride, row_bytes};
  vkCmdCopyBuffer(buffer_, src.buffer, dst.buffer, rows, regions.data());
}

void CommandBuffer::fill(const BufferRange& dst, uint32_t value) {
  vkCmdFillBuffer(buffer_, dst.buffer, dst.offset, dst.size, value);
}

void CommandBuffer::reset_queries(VkQueryPool pool, uint32_t first, uint32_t count) {
  vkCmdResetQueryPool(buffer_, pool, first, count);
}

void CommandBuffer::mark(const std::string& label) {
  if (profiler_) profiler_->mark(*this, label);
}

void CommandBuffer::timestamp(VkQueryPool pool, uint32_t query) {
  vkCmdWriteTimestamp(buffer_, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool, query);
}

CommandPool::CommandPool(const Device& device) : device_(device) {
  VkCommandPoolCreateInfo info{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  info.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  info.queueFamilyIndex = device.queue_family();
  VkCommandPool pool;
  VK_CHECK(vkCreateCommandPool(device.get(), &info, nullptr, &pool));
  pool_ = OwnedCommandPool(device.get(), pool);
}

Queue::Queue(const Device& device) : device_(device) {
  VkSemaphoreTypeCreateInfo type{VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO};
  type.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE;
  type.initialValue = 0;
  VkSemaphoreCreateInfo info{VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO};
  info.pNext = &type;
  VkSemaphore sem;
  VK_CHECK(vkCreateSemaphore(device.get(), &info, nullptr, &sem));
  timeline_ = OwnedSemaphore(device.get(), sem);
}

uint64_t Queue::submit(const CommandBuffer& commands) {
  const uint64_t value = next_++;
  VkTimelineSemaphoreSubmitInfo timeline{VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO};
  timeline.signalSemaphoreValueCount = 1;
  timeline.pSignalSemaphoreValues = &value;
  VkCommandBuffer cb = commands.get();
  VkSemaphore sem = timeline_.get();
  VkSubmitInfo info{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  info.pNext = &timeline;
  info.commandBufferCount = 1;
  info.pCommandBuffers = &cb;
  info.signalSemaphoreCount = 1;
  info.pSignalSemaphores = &sem;
  VK_CHECK(vkQueueSubmit(device_.queue(), 1, &info, VK_NULL_HANDLE));
  return value;
}

void Queue::wait(uint64_t value) const {
  double seconds = 600;
  if (const char* env = std::getenv("Q3N_GPU_TIMEOUT")) seconds = std::atof(env);
  VkSemaphore sem = timeline_.get();
  VkSemaphoreWaitInfo info{VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO};
  info.semaphoreCount = 1;
  info.pSemaphores = &sem;
  info.pValues = &value;
  const VkResult r = vkWaitSemaphores(device_.get(), &info, static_cast<uint64_t>(seconds * 1e9));
  if (r == VK_TIMEOUT)
    throw Error("the GPU did not finish within " + std::to_string(static_cast<int>(seconds)) +
                " s (Q3N_GPU_TIMEOUT): the work is too large for this device or the driver hung");
  vk_check(r, "vkWaitSemaphores");
}

}  // namespace q3n
