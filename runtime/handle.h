// RAII ownership of Vulkan handles: exactly one owner per object, destroyed with its parent.
#pragma once

#include <vulkan/vulkan.h>

#include <utility>

namespace q3n {

// Owns a handle created from `Parent` (usually VkDevice) and destroyed by
// `Destroy(parent, handle, nullptr)`. Move-only.
template <typename Handle, typename Parent, void (*Destroy)(Parent, Handle, const VkAllocationCallbacks*)>
class Owned {
 public:
  Owned() = default;
  Owned(Parent parent, Handle handle) : parent_(parent), handle_(handle) {}
  ~Owned() { reset(); }
  Owned(Owned&& other) noexcept : parent_(other.parent_), handle_(std::exchange(other.handle_, VK_NULL_HANDLE)) {}
  Owned& operator=(Owned&& other) noexcept {
    if (this != &other) {
      reset();
      parent_ = other.parent_;
      handle_ = std::exchange(other.handle_, VK_NULL_HANDLE);
    }
    return *this;
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;

  Handle get() const { return handle_; }
  operator Handle() const { return handle_; }  // NOLINT: handles pass straight into vk* calls
  explicit operator bool() const { return handle_ != VK_NULL_HANDLE; }
  void reset() {
    if (handle_ != VK_NULL_HANDLE) Destroy(parent_, handle_, nullptr);
    handle_ = VK_NULL_HANDLE;
  }

 private:
  Parent parent_ = VK_NULL_HANDLE;
  Handle handle_ = VK_NULL_HANDLE;
};

using OwnedBuffer = Owned<VkBuffer, VkDevice, vkDestroyBuffer>;
using OwnedMemory = Owned<VkDeviceMemory, VkDevice, vkFreeMemory>;
using OwnedShaderModule = Owned<VkShaderModule, VkDevice, vkDestroyShaderModule>;
using OwnedPipeline = Owned<VkPipeline, VkDevice, vkDestroyPipeline>;
using OwnedPipelineLayout = Owned<VkPipelineLayout, VkDevice, vkDestroyPipelineLayout>;
using OwnedPipelineCache = Owned<VkPipelineCache, VkDevice, vkDestroyPipelineCache>;
using OwnedCommandPool = Owned<VkCommandPool, VkDevice, vkDestroyCommandPool>;
using OwnedSemaphore = Owned<VkSemaphore, VkDevice, vkDestroySemaphore>;
using OwnedQueryPool = Owned<VkQueryPool, VkDevice, vkDestroyQueryPool>;
using OwnedBufferView = Owned<VkBufferView, VkDevice, vkDestroyBufferView>;
using OwnedDescriptorSetLayout = Owned<VkDescriptorSetLayout, VkDevice, vkDestroyDescriptorSetLayout>;

}  // namespace q3n
