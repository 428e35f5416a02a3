#include "runtime/device.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

#include "runtime/error.h"
#include "runtime/pipeline_stats.h"
#include "runtime/shader_registry.h"
#include "runtime/vk_compat.h"

namespace q3n {

namespace {

int type_rank(VkPhysicalDeviceType type) {
  switch (type) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return 4;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return 3;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return 2;
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return 1;
    default:
      return 0;
  }
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

bool lists_f16_16x16x16(const std::vector<CoopMatShape>& shapes) {
  return std::any_of(shapes.begin(), shapes.end(), [](const CoopMatShape& s) {
    return s.m == 16 && s.n == 16 && s.k == 16 && s.a_type == "f16" && s.b_type == "f16" && s.c_type == "f32";
  });
}

namespace {
// Why the kernels of `api` cannot run on `d` with this build; empty when they can.
std::string coopmat_gap(const DeviceInfo& d, CoopmatApi api) {
  const bool khr = api == CoopmatApi::Khr;
  if (!find_shader(khr ? "linear_gemm_coopmat_khr" : "linear_gemm_coopmat"))
    return khr ? "this build's glslc cannot compile GL_KHR_cooperative_matrix (scripts/fetch-glslc.sh provides one)"
               : "this build's glslc cannot compile GL_NV_cooperative_matrix";
  if (!(khr ? d.coopmat_khr : d.coopmat_nv))
    return khr ? "the device lacks VK_KHR_cooperative_matrix" : "the device lacks VK_NV_cooperative_matrix";
  if (!lists_f16_16x16x16(khr ? d.coopmat_khr_shapes : d.coopmat_nv_shapes))
    return "the device has no 16x16x16 f16 -> f32 cooperative matrix";
  if (!d.shader_float16) return "the device lacks shaderFloat16";
  if (!d.vulkan_memory_model || !d.vulkan_memory_model_device_scope)
    return "the device lacks vulkanMemoryModel with device scope";
  if (d.min_subgroup_size != d.max_subgroup_size) return "the device's subgroup size is not fixed";
  // moe_expert_coopmat.comp's tiles (the largest): 45 KiB.
  if (d.max_shared_memory < 46208) return "the device has less than 45 KiB of shared memory per workgroup";
  // The kernels run eight subgroups of at least 16 invocations (they fill their tiles in <= 4 passes).
  if (d.subgroup_size < 16 || 8 * d.subgroup_size > d.max_workgroup_invocations)
    return "the device's subgroup size does not suit eight-subgroup workgroups";
  return "";
}
}  // namespace

CoopmatSupport coopmat_support(const DeviceInfo& d) {
  const std::string khr = coopmat_gap(d, CoopmatApi::Khr);
  if (khr.empty()) return {CoopmatApi::Khr, ""};
  const std::string nv = coopmat_gap(d, CoopmatApi::Nv);
  if (nv.empty()) return {CoopmatApi::Nv, ""};
  return {CoopmatApi::None, khr == nv ? khr : "KHR: " + khr + "; NV: " + nv};
}

std::string describe_gemm_kernels(const CoopmatSupport& support, bool turned_off) {
  if (support.api == CoopmatApi::None) return "portable fp32 (" + support.gap + ")";
  if (turned_off) return "portable fp32 (--no-coopmat)";
  return std::string("cooperative matrix (") + (support.api == CoopmatApi::Khr ? "KHR" : "NV") +
         ", 16x16x16 fp16 -> fp32)";
}

bool prefers_cpu_kernel_shapes(const DeviceInfo& d) { return d.type == VK_PHYSICAL_DEVICE_TYPE_CPU; }

bool wants_texel_reads(const DeviceInfo& d) {
  // Texel views only where the CPU shapes, which read through them, will run: CPU devices, or
  // any device with Q3N_KERNEL_SHAPES=cpu (tests); GPUs otherwise keep plain buffers.
  const char* texel_reads = std::getenv("Q3N_TEXEL_READS");
  const char* shapes = std::getenv("Q3N_KERNEL_SHAPES");
  const bool cpu_shapes = shapes && *shapes ? std::string(shapes) == "cpu" : prefers_cpu_kernel_shapes(d);
  return d.push_descriptor && cpu_shapes && !(texel_reads && std::string(texel_reads) == "0");
}

std::string describe_vector_kernels(bool cpu_shapes, bool texel_reads) {
  if (!cpu_shapes) return "GPU shapes (subgroup reductions over K)";
  return texel_reads ? "CPU shapes (one output per invocation, no barriers; a CPU device), reading through texel views"
                     : "CPU shapes (one output per invocation, no barriers; a CPU device), reading through buffer "
                       "addresses (no push descriptors, or Q3N_TEXEL_READS=0)";
}

bool has_bounded_loops(const Device& device) { return device.info().type == VK_PHYSICAL_DEVICE_TYPE_CPU; }

std::vector<DeviceInfo> list_devices(const Instance& instance) {
  std::vector<DeviceInfo> out;
  auto devices = instance.physical_devices();
  for (uint32_t i = 0; i < devices.size(); ++i) out.push_back(query_device_info(instance.get(), devices[i], i));
  return out;
}

uint32_t select_device(const std::vector<DeviceInfo>& devices, const std::string& selector_in) {
  if (devices.empty())
    throw Error("no Vulkan device found: install a Vulkan driver (mesa-vulkan-drivers gives the CPU driver lavapipe)");
  std::string selector = selector_in;
  if (selector.empty())
    if (const char* env = std::getenv("Q3N_DEVICE")) selector = env;

  auto check_runnable = [&](uint32_t i) {
    const std::string missing = devices[i].missing_requirement();
    if (!missing.empty())
      throw Error("device [" + std::to_string(i) + "] " + devices[i].name + " cannot run q3n: it lacks " + missing +
                  "; pick another with --device (see `q3n devices`)");
    return i;
  };

  if (!selector.empty()) {
    const bool numeric = std::all_of(selector.begin(), selector.end(), [](unsigned char c) { return std::isdigit(c); });
    if (numeric) {
      const unsigned long idx = std::stoul(selector);
      if (idx >= devices.size())
        throw Error("--device " + selector + " is out of range: there are " + std::to_string(devices.size()) +
                    " devices (see `q3n devices`)");
      return check_runnable(static_cast<uint32_t>(idx));
    }
    for (const auto& d : devices)
      if (lower(d.name).find(lower(selector)) != std::string::npos) return check_runnable(d.index);
    throw Error("no device name contains \"" + selector + "\" (see `q3n devices`)");
  }

  int best = -1;
  for (const auto& d : devices) {
    if (!d.missing_requirement().empty()) continue;
    if (best < 0 || type_rank(d.type) > type_rank(devices[best].type)) best = static_cast<int>(d.index);
  }
  if (best < 0) return check_runnable(0);  // throws with the first device's missing feature
  return static_cast<uint32_t>(best);
}

Device::Device(const Instance& instance, const std::string& selector) : instance_(instance) {
  const auto devices = list_devices(instance);
  const uint32_t index = select_device(devices, selector);
  physical_ = instance.physical_devices()[index];
  info_ = devices[index];

  // Queue: a compute-only family that writes timestamps where the device has one, else the first
  // family that can compute. On the H200 (driver 580) the compute-only family ran the same command
  // buffers faster than the graphics one: pp512 of the 80B-A3B q4 4334 -> 6267 tok/s, decode
  // 189 -> 197 tok/s (bench/NOTES.md, session 24). Q3N_QUEUE=first takes the first compute family
  // regardless, to compare.
  uint32_t family_count = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(physical_, &family_count, nullptr);
  std::vector<VkQueueFamilyProperties> families(family_count);
  vkGetPhysicalDeviceQueueFamilyProperties(physical_, &family_count, families.data());
  const char* queue_env = std::getenv("Q3N_QUEUE");
  const std::string queue_choice = queue_env ? queue_env : "";
  if (!queue_choice.empty() && queue_choice != "first" && queue_choice != "compute")
    throw Error("Q3N_QUEUE='" + queue_choice + "' is not a queue choice: use compute or first");
  const bool compute_only_first = queue_choice != "first";
  const auto computes = [&](uint32_t f) { return (families[f].queueFlags & VK_QUEUE_COMPUTE_BIT) != 0; };
  const auto compute_only = [&](uint32_t f) {
    return computes(f) && !(families[f].queueFlags & VK_QUEUE_GRAPHICS_BIT) && families[f].timestampValidBits > 0;
  };
  bool found = false;
  for (const bool want_compute_only : {compute_only_first, false})
    for (uint32_t f = 0; f < family_count && !found; ++f)
      if (want_compute_only ? compute_only(f) : computes(f)) {
        queue_family_ = f;
        queue_compute_only_ = !(families[f].queueFlags & VK_QUEUE_GRAPHICS_BIT);
        timestamp_valid_bits_ = families[f].timestampValidBits;
        found = true;
      }
  if (!found) throw Error("device " + info_.name + " has no compute queue");

  // Required features, plus the optional ones q3n's shaders can use when present.
  VkPhysicalDeviceFeatures2 features{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  VkPhysicalDeviceVulkan11Features f11{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES};
  VkPhysicalDeviceVulkan12Features f12{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES};
  features.pNext = &f11;
  f11.pNext = &f12;
  f11.storageBuffer16BitAccess = VK_TRUE;
  f12.bufferDeviceAddress = VK_TRUE;
  f12.timelineSemaphore = VK_TRUE;
  f12.shaderFloat16 = info_.shader_float16;
  f12.shaderInt8 = info_.shader_int8;
  f12.storageBuffer8BitAccess = info_.storage_buffer_8bit;
  VkPhysicalDeviceFeatures supported{};
  vkGetPhysicalDeviceFeatures(physical_, &supported);
  features.features.shaderInt64 = supported.shaderInt64;
  features.features.shaderInt16 = supported.shaderInt16;

  std::vector<const char*> extensions;
  if (info_.memory_budget) extensions.push_back(VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  coopmat_ = q3n::coopmat_support(info_);
  // Diagnostics: Q3N_COOPMAT_API=nv takes the NV kernels where both could run (to compare them).
  if (const char* api = std::getenv("Q3N_COOPMAT_API");
      api && std::string(api) == "nv" && coopmat_.api == CoopmatApi::Khr && coopmat_gap(info_, CoopmatApi::Nv).empty())
    coopmat_.api = CoopmatApi::Nv;
  VkPhysicalDeviceCooperativeMatrixFeaturesKHR coopmat_khr{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR};
  VkPhysicalDeviceCooperativeMatrixFeaturesNV coopmat_nv{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
  if (coopmat_.api != CoopmatApi::None) {
    if (coopmat_.api == CoopmatApi::Khr) {
      extensions.push_back(VK_KHR_COOPERATIVE_MATRIX_EXTENSION_NAME);
      coopmat_khr.cooperativeMatrix = VK_TRUE;
      f12.pNext = &coopmat_khr;
    } else {
      extensions.push_back(VK_NV_COOPERATIVE_MATRIX_EXTENSION_NAME);
      coopmat_nv.cooperativeMatrix = VK_TRUE;
      f12.pNext = &coopmat_nv;
    }
    f12.vulkanMemoryModel = VK_TRUE;  // the shaders' memory scopes (GL_KHR_memory_scope_semantics)
    f12.vulkanMemoryModelDeviceScope = info_.vulkan_memory_model_device_scope;  // others use Device-scope atomics
  }

  VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR executable_properties{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR};
  if (pipeline_statistics_requested() && info_.has_extension(VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME)) {
    extensions.push_back(VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME);
    executable_properties.pipelineExecutableInfo = VK_TRUE;
    executable_properties.pNext = features.pNext;
    features.pNext = &executable_properties;
    pipeline_statistics_ = true;
  }

  const bool want_texel_reads = wants_texel_reads(info_);
  if (want_texel_reads) extensions.push_back(VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME);

  float priority = 1.0f;
  VkDeviceQueueCreateInfo queue_info{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
  queue_info.queueFamilyIndex = queue_family_;
  queue_info.queueCount = 1;
  queue_info.pQueuePriorities = &priority;

  VkDeviceCreateInfo info{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
  info.pNext = &features;
  info.queueCreateInfoCount = 1;
  info.pQueueCreateInfos = &queue_info;
  info.enabledExtensionCount = static_cast<uint32_t>(extensions.size());
  info.ppEnabledExtensionNames = extensions.data();
  VK_CHECK(vkCreateDevice(physical_, &info, nullptr, &device_));
  vkGetDeviceQueue(device_, queue_family_, 0, &queue_);
  if (want_texel_reads)
    push_descriptor_set_ =
        reinterpret_cast<PFN_vkCmdPushDescriptorSetKHR>(vkGetDeviceProcAddr(device_, "vkCmdPushDescriptorSetKHR"));
}

void Device::push_texel_views(VkCommandBuffer commands, VkPipelineLayout layout, const VkBufferView* views,
                              uint32_t count) const {
  if (!push_descriptor_set_) throw Error("internal: texel reads are off on " + info_.name);
  std::vector<VkWriteDescriptorSet> writes(count, {VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET});
  for (uint32_t i = 0; i < count; ++i) {
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER;
    writes[i].pTexelBufferView = &views[i];
  }
  push_descriptor_set_(commands, VK_PIPELINE_BIND_POINT_COMPUTE, layout, 0, count, writes.data());
}

Device::~Device() {
  if (device_ != VK_NULL_HANDLE) {
    vkDeviceWaitIdle(device_);
    vkDestroyDevice(device_, nullptr);
  }
}

std::string Device::describe_queue() const {
  return "family " + std::to_string(queue_family_) +
         (queue_compute_only_ ? " (compute only)" : " (graphics + compute)");
}

VkDeviceSize Device::free_device_memory() const {
  return free_device_local_bytes(query_memory_heaps(physical_, info_.memory_budget));
}

}  // namespace q3n
