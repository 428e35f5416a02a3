#include "runtime/error.h"

namespace q3n {

const char* vk_result_name(VkResult result) {
  switch (result) {
#define Q3N_CASE(x) \
  case x:           \
    return #x;
    Q3N_CASE(VK_SUCCESS)
    Q3N_CASE(VK_NOT_READY)
    Q3N_CASE(VK_TIMEOUT)
    Q3N_CASE(VK_INCOMPLETE)
    Q3N_CASE(VK_ERROR_OUT_OF_HOST_MEMORY)
    Q3N_CASE(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    Q3N_CASE(VK_ERROR_INITIALIZATION_FAILED)
    Q3N_CASE(VK_ERROR_DEVICE_LOST)
    Q3N_CASE(VK_ERROR_MEMORY_MAP_FAILED)
    Q3N_CASE(VK_ERROR_LAYER_NOT_PRESENT)
    Q3N_CASE(VK_ERROR_EXTENSION_NOT_PRESENT)
    Q3N_CASE(VK_ERROR_FEATURE_NOT_PRESENT)
    Q3N_CASE(VK_ERROR_INCOMPATIBLE_DRIVER)
    Q3N_CASE(VK_ERROR_TOO_MANY_OBJECTS)
    Q3N_CASE(VK_ERROR_FORMAT_NOT_SUPPORTED)
    Q3N_CASE(VK_ERROR_FRAGMENTED_POOL)
    Q3N_CASE(VK_ERROR_UNKNOWN)
    Q3N_CASE(VK_ERROR_OUT_OF_POOL_MEMORY)
    Q3N_CASE(VK_ERROR_INVALID_EXTERNAL_HANDLE)
    Q3N_CASE(VK_ERROR_FRAGMENTATION)
    Q3N_CASE(VK_ERROR_INVALID_OPAQUE_CAPTURE_ADDRESS)
    Q3N_CASE(VK_PIPELINE_COMPILE_REQUIRED)
#undef Q3N_CASE
    default:
      return "VkResult(unknown)";
  }
}

VulkanError::VulkanError(const std::string& call, VkResult result)
    : Error("Vulkan call failed: " + call + " returned " + vk_result_name(result) +
            (result == VK_ERROR_OUT_OF_DEVICE_MEMORY
                 ? " (the GPU is out of memory: use a smaller model, context or batch)"
             : result == VK_ERROR_DEVICE_LOST ? " (the GPU driver reset or crashed)"
                                              : "")),
      result_(result) {}

}  // namespace q3n
