// What a physical device is and which of q3n's required and optional features it has.
#pragma once

#include <vulkan/vulkan.h>

#include <string>
#include <vector>

namespace q3n {

struct CoopMatShape {
  uint32_t m, n, k;
  std::string a_type, b_type, c_type;  // component types, e.g. "f16", "bf16", "s8"
};

struct MemoryHeapInfo {
  VkDeviceSize size = 0;
  VkDeviceSize budget = 0;  // 0 when VK_EXT_memory_budget is absent
  VkDeviceSize usage = 0;
  bool device_local = false;
};

struct DeviceInfo {
  uint32_t index = 0;
  std::string name;
  VkPhysicalDeviceType type = VK_PHYSICAL_DEVICE_TYPE_OTHER;
  uint32_t vendor_id = 0;
  std::string vendor;
  std::string driver_name, driver_info;
  uint32_t api_version = 0;
  std::vector<MemoryHeapInfo> heaps;

  uint32_t subgroup_size = 0, min_subgroup_size = 0, max_subgroup_size = 0;
  bool subgroup_arithmetic = false;  // arithmetic subgroup ops in compute shaders
  uint32_t max_shared_memory = 0;
  uint32_t max_workgroup_invocations = 0;
  uint32_t max_workgroup_count[3] = {0, 0, 0};  // maxComputeWorkGroupCount: groups per dispatch, x y z
  uint32_t max_push_constants = 0;
  VkDeviceSize max_allocation = 0;
  VkDeviceSize max_storage_buffer_range = 0;
  VkDeviceSize max_buffer_size = 0;
  uint32_t max_texel_buffer_elements = 0;
  VkDeviceSize min_texel_buffer_offset_alignment = 0;
  float timestamp_period_ns = 0;
  bool timestamps = false;

  // Required by q3n.
  bool buffer_device_address = false;
  bool timeline_semaphore = false;
  bool storage_buffer_16bit = false;
  // Optional, used where present.
  bool shader_float16 = false;
  bool vulkan_memory_model = false;  // needed by the cooperative-matrix shaders' memory scopes
  bool vulkan_memory_model_device_scope = false;
  bool shader_int8 = false;
  bool storage_buffer_8bit = false;
  bool shader_bfloat16 = false;  // VK_KHR_shader_bfloat16
  bool integer_dot_product = false;
  bool integer_dot_int8_accelerated = false;
  bool coopmat_khr = false;
  bool coopmat_nv = false;
  std::vector<CoopMatShape> coopmat_khr_shapes, coopmat_nv_shapes;
  bool push_descriptor = false;
  bool memory_budget = false;
  bool subgroup_size_control = false;
  std::vector<std::string> extensions;

  bool has_extension(const char* name) const;
  // Empty when q3n can run on this device; else the first missing requirement, phrased for users.
  std::string missing_requirement() const;
  VkDeviceSize device_local_bytes() const;
  VkDeviceSize device_local_budget() const;
};

std::string device_type_name(VkPhysicalDeviceType type);
DeviceInfo query_device_info(VkInstance instance, VkPhysicalDevice device, uint32_t index);
// The memory heaps alone (cheap enough to re-read before each allocation), with the
// VK_EXT_memory_budget figures when `with_budget`.
std::vector<MemoryHeapInfo> query_memory_heaps(VkPhysicalDevice device, bool with_budget);
// Free device-local bytes: budget minus usage where reported, else the heap sizes.
VkDeviceSize free_device_local_bytes(const std::vector<MemoryHeapInfo>& heaps);
// Human-readable report of one device, for `q3n devices`.
std::string describe(const DeviceInfo& info);

}  // namespace q3n
