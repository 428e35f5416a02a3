#include "runtime/device_info.h"

#include <cstring>
#include <sstream>

#include "runtime/error.h"
#include "runtime/memory.h"
#include "runtime/vk_compat.h"

namespace q3n {

namespace {

std::string vendor_name(uint32_t id) {
  switch (id) {
    case 0x1002:
      return "AMD";
    case 0x10DE:
      return "NVIDIA";
    case 0x8086:
      return "Intel";
    case 0x13B5:
      return "ARM";
    case 0x5143:
      return "Qualcomm";
    case 0x106B:
      return "Apple";
    case 0x10005:
      return "Mesa";
    default: {
      std::ostringstream s;
      s << "0x" << std::hex << id;
      return s.str();
    }
  }
}

std::string component_type_name(VkComponentTypeKHR t) {
  switch (t) {
    case VK_COMPONENT_TYPE_FLOAT16_KHR:
      return "f16";
    case VK_COMPONENT_TYPE_FLOAT32_KHR:
      return "f32";
    case VK_COMPONENT_TYPE_FLOAT64_KHR:
      return "f64";
    case VK_COMPONENT_TYPE_SINT8_KHR:
      return "s8";
    case VK_COMPONENT_TYPE_UINT8_KHR:
      return "u8";
    case VK_COMPONENT_TYPE_SINT32_KHR:
      return "s32";
    case VK_COMPONENT_TYPE_UINT32_KHR:
      return "u32";
    default:
      if (static_cast<int>(t) == Q3N_COMPONENT_TYPE_BFLOAT16) return "bf16";
      return "type" + std::to_string(static_cast<int>(t));
  }
}

}  // namespace

bool DeviceInfo::has_extension(const char* name) const {
  for (const auto& e : extensions)
    if (e == name) return true;
  return false;
}

std::string DeviceInfo::missing_requirement() const {
  if (api_version < VK_API_VERSION_1_2) return "Vulkan 1.2 (the driver reports an older version: update it)";
  if (!buffer_device_address) return "the bufferDeviceAddress feature (Vulkan 1.2)";
  if (!timeline_semaphore) return "the timelineSemaphore feature (Vulkan 1.2)";
  if (!storage_buffer_16bit) return "the storageBuffer16BitAccess feature";
  if (!subgroup_arithmetic) return "subgroup arithmetic operations in compute shaders";
  if (max_push_constants < 128) return "128 bytes of push constants";
  // The portable kernels' largest tiles: the chunked delta rule's output step (30 KiB).
  if (max_shared_memory < 32768) return "32 KiB of compute shared memory";
  return "";
}

VkDeviceSize DeviceInfo::device_local_bytes() const {
  VkDeviceSize total = 0;
  for (const auto& h : heaps)
    if (h.device_local) total += h.size;
  return total;
}

VkDeviceSize DeviceInfo::device_local_budget() const { return free_device_local_bytes(heaps); }

VkDeviceSize free_device_local_bytes(const std::vector<MemoryHeapInfo>& heaps) {
  VkDeviceSize total = 0;
  for (const auto& h : heaps)
    if (h.device_local) total += h.budget ? (h.budget > h.usage ? h.budget - h.usage : 0) : h.size;
  return total;
}

std::string device_type_name(VkPhysicalDeviceType type) {
  switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return "discrete GPU";
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return "integrated GPU";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return "virtual GPU";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return "CPU";
    default:
      return "other";
  }
}

DeviceInfo query_device_info(VkInstance instance, VkPhysicalDevice device, uint32_t index) {
  DeviceInfo info;
  info.index = index;

  uint32_t ext_count = 0;
  VK_CHECK(vkEnumerateDeviceExtensionProperties(device, nullptr, &ext_count, nullptr));
  std::vector<VkExtensionProperties> exts(ext_count);
  VK_CHECK(vkEnumerateDeviceExtensionProperties(device, nullptr, &ext_count, exts.data()));
  for (const auto& e : exts) info.extensions.emplace_back(e.extensionName);

  // Properties chain.
  VkPhysicalDeviceProperties2 props{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  VkPhysicalDeviceVulkan11Properties p11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES};
  VkPhysicalDeviceDriverProperties driver{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES};
  VkPhysicalDeviceMaintenance4Properties m4{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_4_PROPERTIES};
  VkPhysicalDeviceMaintenance3Properties m3{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
  VkPhysicalDeviceSubgroupSizeControlProperties sgc{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES};
  props.pNext = &p11;
  p11.pNext = &driver;
  driver.pNext = &m3;
  info.subgroup_size_control = info.has_extension(VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME);
  const bool has_m4 = info.has_extension(VK_KHR_MAINTENANCE_4_EXTENSION_NAME);
  void** tail = &m3.pNext;
  if (has_m4) {
    *tail = &m4;
    tail = &m4.pNext;
  }
  if (info.subgroup_size_control) {
    *tail = &sgc;
    tail = &sgc.pNext;
  }
  vkGetPhysicalDeviceProperties2(device, &props);
  const auto& p = props.properties;
  info.name = p.deviceName;
  info.type = p.deviceType;
  info.vendor_id = p.vendorID;
  info.vendor = vendor_name(p.vendorID);
  info.driver_name = driver.driverName;
  info.driver_info = driver.driverInfo;
  info.api_version = p.apiVersion;
  info.subgroup_size = p11.subgroupSize;
  info.min_subgroup_size = info.subgroup_size_control ? sgc.minSubgroupSize : p11.subgroupSize;
  info.max_subgroup_size = info.subgroup_size_control ? sgc.maxSubgroupSize : p11.subgroupSize;
  info.subgroup_arithmetic = (p11.subgroupSupportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
                             (p11.subgroupSupportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
  info.max_shared_memory = p.limits.maxComputeSharedMemorySize;
  info.max_workgroup_invocations = p.limits.maxComputeWorkGroupInvocations;
  for (int i = 0; i < 3; ++i) info.max_workgroup_count[i] = p.limits.maxComputeWorkGroupCount[i];
  info.max_push_constants = p.limits.maxPushConstantsSize;
  info.max_allocation = m3.maxMemoryAllocationSize;
  info.max_storage_buffer_range = p.limits.maxStorageBufferRange;
  info.max_buffer_size = has_m4 ? m4.maxBufferSize : info.max_allocation;
  info.max_texel_buffer_elements = p.limits.maxTexelBufferElements;
  info.min_texel_buffer_offset_alignment = p.limits.minTexelBufferOffsetAlignment;
  info.timestamp_period_ns = p.limits.timestampPeriod;
  info.timestamps = p.limits.timestampComputeAndGraphics;

  // Features chain.
  VkPhysicalDeviceFeatures2 features{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  VkPhysicalDeviceShaderIntegerDotProductFeatures fdot{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_FEATURES};
  VkPhysicalDeviceCooperativeMatrixFeaturesKHR fcm{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR};
  VkPhysicalDeviceCooperativeMatrixFeaturesNV fcmnv{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
  Q3nPhysicalDeviceShaderBfloat16Features fbf{Q3N_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_BFLOAT16_FEATURES, nullptr, 0,
                                              0, 0};
  features.pNext = &f11;
  f11.pNext = &f12;
  tail = &f12.pNext;
  const bool has_dot =
      info.has_extension(VK_KHR_SHADER_INTEGER_DOT_PRODUCT_EXTENSION_NAME) || p.apiVersion >= VK_API_VERSION_1_3;
  if (has_dot) {
    *tail = &fdot;
    tail = &fdot.pNext;
  }
  const bool has_cm = info.has_extension(VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME);
  if (has_cm) {
    *tail = &fcm;
    tail = &fcm.pNext;
  }
  const bool has_cmnv = info.has_extension(VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
  if (has_cmnv) {
    *tail = &fcmnv;
    tail = &fcmnv.pNext;
  }
  const bool has_bf = info.has_extension(Q3N_VK_KHR_SHADER_BFLOAT16_NAME);
  if (has_bf) {
    *tail = &fbf;
    tail = &fbf.pNext;
  }
  vkGetPhysicalDeviceFeatures2(device, &features);
  info.buffer_device_address = f12.bufferDeviceAddress;
  info.timeline_semaphore = f12.timelineSemaphore;
  info.storage_buffer_16bit = f11.storageBuffer16BitAccess;
  info.shader_float16 = f12.shaderFloat16;
  info.vulkan_memory_model = f12.vulkanMemoryModel;
  info.vulkan_memory_model_device_scope = f12.vulkanMemoryModelDeviceScope;
  info.shader_int8 = f12.shaderInt8;
  info.storage_buffer_8bit = f12.storageBuffer8BitAccess;
  info.integer_dot_product = has_dot && fdot.shaderIntegerDotProduct;
  info.coopmat_khr = has_cm && fcm.cooperativeMatrix;
  info.coopmat_nv = has_cmnv && fcmnv.cooperativeMatrix;
  info.shader_bfloat16 = has_bf && fbf.shaderBFloat16Type;
  info.push_descriptor = info.has_extension(VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);
  info.memory_budget = info.has_extension(VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);

  if (info.integer_dot_product) {
    VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
    VkPhysicalDeviceShaderIntegerDotProductProperties dp{
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_INTEGER_DOT_PRODUCT_PROPERTIES};
    p2.pNext = &dp;
    vkGetPhysicalDeviceProperties2(device, &p2);
    info.integer_dot_int8_accelerated = dp.integerDotProduct4x8BitPackedSignedAccelerated;
  }
  if (info.coopmat_khr) {
    auto get = reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR>(
        vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesKHR"));
    uint32_t n = 0;
    if (get && get(device, &n, nullptr) == VK_SUCCESS) {
      std::vector<VkCooperativeMatrixPropertiesKHR> shapes(n, {VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR});
      VK_CHECK(get(device, &n, shapes.data()));
      for (const auto& s : shapes)
        if (s.scope == VK_SCOPE_SUBGROUP_KHR)
          info.coopmat_khr_shapes.push_back({s.MSize, s.NSize, s.KSize, component_type_name(s.AType),
                                             component_type_name(s.BType), component_type_name(s.CType)});
    }
  }
  if (info.coopmat_nv) {
    auto get = reinterpret_cast<PFN_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV>(
        vkGetInstanceProcAddr(instance, "vkGetPhysicalDeviceCooperativeMatrixPropertiesNV"));
    uint32_t n = 0;
    if (get && get(device, &n, nullptr) == VK_SUCCESS) {
      std::vector<VkCooperativeMatrixPropertiesNV> shapes(n, {VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV});
      VK_CHECK(get(device, &n, shapes.data()));
      for (const auto& s : shapes)
        info.coopmat_nv_shapes.push_back({s.MSize, s.NSize, s.KSize, component_type_name(s.AType),
                                          component_type_name(s.BType), component_type_name(s.CType)});
    }
  }

  info.heaps = query_memory_heaps(device, info.memory_budget);
  return info;
}

std::vector<MemoryHeapInfo> query_memory_heaps(VkPhysicalDevice device, bool with_budget) {
  VkPhysicalDeviceMemoryProperties2 mem{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2};
  VkPhysicalDeviceMemoryBudgetPropertiesEXT budget{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
  if (with_budget) mem.pNext = &budget;
  vkGetPhysicalDeviceMemoryProperties2(device, &mem);
  std::vector<MemoryHeapInfo> heaps;
  for (uint32_t h = 0; h < mem.memoryProperties.memoryHeapCount; ++h) {
    MemoryHeapInfo heap;
    heap.size = mem.memoryProperties.memoryHeaps[h].size;
    heap.device_local = mem.memoryProperties.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
    if (with_budget) {
      heap.budget = budget.heapBudget[h];
      heap.usage = budget.heapUsage[h];
    }
    heaps.push_back(heap);
  }
  return heaps;
}

std::string describe(const DeviceInfo& d) {
  std::ostringstream s;
  auto yes = [](bool b) { return b ? "yes" : "no"; };
  s << "[" << d.index << "] " << d.name << "\n";
  s << "    type: " << device_type_name(d.type) << ", vendor: " << d.vendor << ", Vulkan "
    << VK_API_VERSION_MAJOR(d.api_version) << "." << VK_API_VERSION_MINOR(d.api_version) << "."
    << VK_API_VERSION_PATCH(d.api_version) << "\n";
  s << "    driver: " << d.driver_name << " " << d.driver_info << "\n";
  for (size_t h = 0; h < d.heaps.size(); ++h) {
    s << "    heap " << h << ": " << format_bytes(d.heaps[h].size)
      << (d.heaps[h].device_local ? " device-local" : " host");
    if (d.memory_budget)
      s << ", budget " << format_bytes(d.heaps[h].budget) << ", used " << format_bytes(d.heaps[h].usage);
    s << "\n";
  }
  s << "    subgroup size: " << d.subgroup_size << " (range " << d.min_subgroup_size << ".." << d.max_subgroup_size
    << "), arithmetic ops: " << yes(d.subgroup_arithmetic) << "\n";
  s << "    shared memory: " << d.max_shared_memory / 1024
    << " KiB, workgroup invocations: " << d.max_workgroup_invocations << ", push constants: " << d.max_push_constants
    << " B, workgroups per dispatch: " << d.max_workgroup_count[0] << " x " << d.max_workgroup_count[1] << " x "
    << d.max_workgroup_count[2] << "\n";
  s << "    max allocation: " << format_bytes(d.max_allocation)
    << ", storage-buffer range: " << format_bytes(d.max_storage_buffer_range)
    << ", max buffer: " << format_bytes(d.max_buffer_size) << "\n";
  s << "    fp16: " << yes(d.shader_float16) << ", int8: " << yes(d.shader_int8) << ", bf16: " << yes(d.shader_bfloat16)
    << ", integer dot: " << yes(d.integer_dot_product) << (d.integer_dot_int8_accelerated ? " (int8 accelerated)" : "")
    << "\n";
  auto shapes = [&](const std::vector<CoopMatShape>& v) {
    std::string out;
    for (const auto& c : v)
      out += " " + std::to_string(c.m) + "x" + std::to_string(c.n) + "x" + std::to_string(c.k) + ":" + c.a_type + "->" +
             c.c_type;
    return out;
  };
  s << "    cooperative matrix KHR: " << yes(d.coopmat_khr) << shapes(d.coopmat_khr_shapes) << "\n";
  s << "    cooperative matrix NV: " << yes(d.coopmat_nv) << shapes(d.coopmat_nv_shapes) << "\n";
  s << "    push descriptors: " << yes(d.push_descriptor) << ", memory budget: " << yes(d.memory_budget)
    << ", timestamps: " << yes(d.timestamps) << ", buffer device address: " << yes(d.buffer_device_address) << "\n";
  const std::string missing = d.missing_requirement();
  s << "    q3n can run: " << (missing.empty() ? "yes" : "no, it needs " + missing) << "\n";
  return s.str();
}

}  // namespace q3n
