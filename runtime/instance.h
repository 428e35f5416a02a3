// The Vulkan instance, with the Khronos validation layer and a debug messenger when asked for.
#pragma once

#include <vulkan/vulkan.h>

#include <atomic>
#include <string>
#include <vector>

namespace q3n {

struct InstanceOptions {
  // Enable VK_LAYER_KHRONOS_validation. Defaults to the Q3N_VALIDATE environment variable.
  bool validation = false;
  static InstanceOptions from_environment();
};

class Instance {
 public:
  explicit Instance(const InstanceOptions& options = InstanceOptions::from_environment());
  ~Instance();
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  VkInstance get() const { return instance_; }
  bool validation_enabled() const { return messenger_ != VK_NULL_HANDLE; }
  // Validation errors reported since creation (tests fail when this grows).
  uint64_t validation_errors() const { return validation_errors_.load(); }
  const std::string& last_validation_error() const { return last_validation_error_; }

  std::vector<VkPhysicalDevice> physical_devices() const;

 private:
  static VKAPI_ATTR VkBool32 VKAPI_CALL on_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                                   VkDebugUtilsMessageTypeFlagsEXT types,
                                                   const VkDebugUtilsMessengerCallbackDataEXT* data, void* user);
  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  std::atomic<uint64_t> validation_errors_{0};
  std::string last_validation_error_;
};

}  // namespace q3n
