// Recording compute work into command buffers, and submitting them with a timeline semaphore.
// Command buffers may be recorded once and submitted many times (the graph replays them).
#pragma once

#include <vulkan/vulkan.h>

#include <cstdint>
#include <span>
#include <string>

#include "runtime/device.h"
#include "runtime/handle.h"
#include "runtime/memory.h"
#include "runtime/pipeline.h"

namespace q3n {

class Profiler;

class CommandBuffer {
 public:
  CommandBuffer(const Device& device, VkCommandPool pool);
  ~CommandBuffer();
  CommandBuffer(CommandBuffer&& other) noexcept;
  CommandBuffer(const CommandBuffer&) = delete;
  CommandBuffer& operator=(const CommandBuffer&) = delete;
  CommandBuffer& operator=(CommandBuffer&&) = delete;

  // Starts recording, discarding previous contents. `reusable` = may be submitted many times.
  void begin(bool reusable = false);
  void end();

  // Throws an Error naming the shader and the limit when a count exceeds the device's
  // maxComputeWorkGroupCount (recording happens when a step's shape is first built, so before
  // any work of that shape runs).
  void dispatch(const Pipeline& pipeline, const void* push, uint32_t push_bytes, uint32_t groups_x,
                uint32_t groups_y = 1, uint32_t groups_z = 1);
  template <typename Push>
  void dispatch(const Pipeline& pipeline, const Push& push, uint32_t gx, uint32_t gy = 1, uint32_t gz = 1) {
    // 128 bytes: the push-constant space every Vulkan device has (maxPushConstantsSize minimum).
    // The shader's own block is checked against sizeof(Push) when its pipeline is created.
    static_assert(sizeof(Push) <= 128, "push constants beyond the guaranteed 128 bytes");
    dispatch(pipeline, &push, sizeof(Push), gx, gy, gz);
  }
  // A dispatch whose group counts a shader wrote: three u32 at `grid` (VkDispatchIndirectCommand),
  // visible after a barrier_with_indirect().
  void dispatch_indirect(const Pipeline& pipeline, const void* push, uint32_t push_bytes, const BufferRange& grid);
  template <typename Push>
  void dispatch_indirect(const Pipeline& pipeline, const Push& push, const BufferRange& grid) {
    static_assert(sizeof(Push) <= 128, "push constants beyond the guaranteed 128 bytes");
    dispatch_indirect(pipeline, &push, sizeof(Push), grid);
  }
  // Binds `views` at bindings 0, 1, ... for the next dispatches of `pipeline` (its key's
  // texel_views of them), recorded as push descriptors.
  void push_texel_views(const Pipeline& pipeline, std::span<const VkBufferView> views);
  // Makes every earlier shader/transfer write visible to every later shader/transfer access.
  void barrier();
  // barrier(), and also to later dispatch_indirect() reads of group counts. Kept apart because
  // waiting in the indirect stage may cost more on some drivers.
  void barrier_with_indirect();
  // Makes earlier writes visible to the host after the submission completes.
  void barrier_to_host();
  void copy(const BufferRange& src, const BufferRange& dst, VkDeviceSize bytes);
  // `rows` rows of `row_bytes` each, from rows `src_stride` apart to rows `dst_stride` apart.
  void copy_rows(const BufferRange& src, const BufferRange& dst, uint32_t rows, VkDeviceSize row_bytes,
                 VkDeviceSize src_stride, VkDeviceSize dst_stride);
  void fill(const BufferRange& dst, uint32_t value);  // whole range; size must be a multiple of 4
  void reset_queries(VkQueryPool pool, uint32_t first, uint32_t count);
  void timestamp(VkQueryPool pool, uint32_t query);

  // While a profiler is attached (graph/program.cpp, --profile), mark() starts timing `label`:
  // operators with several dispatches name their parts ("moe.gate_up").
  void attach_profiler(Profiler* profiler) { profiler_ = profiler; }
  void mark(const std::string& label);

  VkCommandBuffer get() const { return buffer_; }
  uint32_t barrier_count() const { return barriers_; }
  uint32_t dispatch_count() const { return dispatches_; }

 private:
  // Checks the push-constant size against the pipeline, binds it and pushes the constants.
  void bind(const Pipeline& pipeline, const void* push, uint32_t push_bytes);
  // The barrier of barrier(), waiting in `extra_stages` too and covering `extra_access`.
  void memory_barrier(VkPipelineStageFlags extra_stages, VkAccessFlags extra_access);

  VkDevice device_ = VK_NULL_HANDLE;
  const Device* owner_ = nullptr;       // records its push descriptors
  uint32_t max_groups_[3] = {0, 0, 0};  // the device's maxComputeWorkGroupCount
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer buffer_ = VK_NULL_HANDLE;
  uint32_t barriers_ = 0, dispatches_ = 0;
  Profiler* profiler_ = nullptr;
};

class CommandPool {
 public:
  explicit CommandPool(const Device& device);
  CommandBuffer allocate() const { return CommandBuffer(device_, pool_); }

 private:
  const Device& device_;
  OwnedCommandPool pool_;
};

// The device's queue with a timeline semaphore: submit() returns the value that signals completion.
class Queue {
 public:
  explicit Queue(const Device& device);
  uint64_t submit(const CommandBuffer& commands);
  // Waits for `value`; a GPU that does not finish within Q3N_GPU_TIMEOUT seconds (default 600)
  // is reported as an error instead of hanging.
  void wait(uint64_t value) const;
  void submit_and_wait(const CommandBuffer& commands) { wait(submit(commands)); }
  uint64_t last_submitted() const { return next_ - 1; }

 private:
  const Device& device_;
  OwnedSemaphore timeline_;
  uint64_t next_ = 1;
};

}  // namespace q3n
