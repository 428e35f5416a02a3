// Error types and the VkResult check used on every Vulkan call.
#pragma once

#include <vulkan/vulkan.h>

#include <stdexcept>
#include <string>

namespace q3n {

// Any failure q3n reports to the user: the message names what failed and, where it can, the fix.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A Vulkan call returned an error code.
class VulkanError : public Error {
 public:
  VulkanError(const std::string& call, VkResult result);
  VkResult result() const { return result_; }

 private:
  VkResult result_;
};

const char* vk_result_name(VkResult result);

// Throws VulkanError naming `call` unless `result` is VK_SUCCESS (or another non-error code).
inline void vk_check(VkResult result, const char* call) {
  if (result < 0) throw VulkanError(call, result);
}

}  // namespace q3n

// VK_CHECK(vkFoo(...)) reports the failing expression text with the result name.
#define VK_CHECK(expr) ::q3n::vk_check((expr), #expr)
