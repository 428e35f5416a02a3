// The logical device q3n runs on: selection among physical devices, enabled features, the queue.
#pragma once

#include <vulkan/vulkan.h>

#include <string>
#include <vector>

#include "runtime/device_info.h"
#include "runtime/instance.h"

namespace q3n {

// Every physical device with its capabilities, in enumeration order.
std::vector<DeviceInfo> list_devices(const Instance& instance);

// Chooses a device: `selector` is an index ("1") or a case-insensitive substring of the name
// ("llvmpipe", "H100"); empty means Q3N_DEVICE, and if that is unset the best runnable device
// (discrete > integrated > virtual > CPU). Throws naming the problem when none fits.
uint32_t select_device(const std::vector<DeviceInfo>& devices, const std::string& selector);

// Which extension q3n's cooperative-matrix kernels (shaders/coopmat.glsl) use on a device.
enum class CoopmatApi { None, Khr, Nv };
struct CoopmatSupport {
  CoopmatApi api = CoopmatApi::None;
  std::string gap;  // with api None: why neither can run, phrased for users
};
// Whether a device's list of subgroup-scope matrix shapes has the one the kernels use:
// 16x16x16, fp16 A and B, fp32 accumulator.
bool lists_f16_16x16x16(const std::vector<CoopMatShape>& shapes);
// VK_KHR_cooperative_matrix where the device and this build's shaders allow it (every vendor),
// else VK_NV_cooperative_matrix (NVIDIA, and builds whose glslc compiles only the NV extension),
// else none, with the reasons.
CoopmatSupport coopmat_support(const DeviceInfo& d);
// Names the GEMM / expert GEMM kernel family a run uses, for reports: the matrix units and their
// extension, or the portable kernels with the reason (or turned off by --no-coopmat).
std::string describe_gemm_kernels(const CoopmatSupport& support, bool turned_off = false);

// Whether a device gets the CPU shapes of the vector kernels (PipelineLibrary::cpu_shapes): CPU
// devices, whose drivers run a workgroup as SIMD loops on one core and emulate barriers, shared
// memory and subgroup operations.
bool prefers_cpu_kernel_shapes(const DeviceInfo& d);
// Names the vector-kernel shapes a run uses, with the reason, for `q3n devices` and `q3n bench`.
// Whether a device, once created, reads through texel views (Device::texel_reads): it has push
// descriptors and takes the CPU shapes (a CPU device, or Q3N_KERNEL_SHAPES=cpu), and
// Q3N_TEXEL_READS is not 0.
bool wants_texel_reads(const DeviceInfo& d);
// `texel_reads`: whether those kernels read through texel views (Device::texel_reads).
std::string describe_vector_kernels(bool cpu_shapes, bool texel_reads);

// lavapipe (Mesa's CPU driver) ends an outermost shader loop after 65535 iterations without an
// error (shaders/common.glsl). On such devices work whose loops grow with the sequence length —
// prefill chunks, attention's keys per workgroup — is cut into pieces of at most this many
// positions. The one place that decides it.
constexpr uint32_t kBoundedLoopPositions = 512;
class Device;
bool has_bounded_loops(const Device& device);

class Device {
 public:
  Device(const Instance& instance, const std::string& selector = "");
  ~Device();
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;

  VkDevice get() const { return device_; }
  VkPhysicalDevice physical() const { return physical_; }
  VkQueue queue() const { return queue_; }
  uint32_t queue_family() const { return queue_family_; }
  // The queue family in words, e.g. "family 2 (compute only)", for benchmark headers.
  std::string describe_queue() const;
  uint32_t timestamp_valid_bits() const { return timestamp_valid_bits_; }
  const DeviceInfo& info() const { return info_; }
  const Instance& instance() const { return instance_; }
  // Re-reads the memory budget (VK_EXT_memory_budget) of the device-local heaps, in bytes free.
  VkDeviceSize free_device_memory() const;
  // coopmat_support() of this device, computed once at creation (its extension is then enabled).
  const CoopmatSupport& coopmat_support() const { return coopmat_; }
  const std::string& coopmat_unavailable() const { return coopmat_.gap; }
  bool coopmat() const { return coopmat_.api != CoopmatApi::None; }
  // Whether pipelines capture compiler statistics (Q3N_PIPELINE_STATS, where the driver has them).
  bool pipeline_statistics() const { return pipeline_statistics_; }
  // Whether kernels may read tensors through texel-buffer views of their memory blocks, bound as
  // push descriptors (VK_KHR_push_descriptor): the CPU shapes' products do, because a CPU driver
  // (lavapipe) fetches texels as SIMD gathers but loads from a buffer address one lane at a time.
  // On where the device has push descriptors and takes the CPU shapes (a CPU device, or
  // Q3N_KERNEL_SHAPES=cpu); Q3N_TEXEL_READS=0 turns it off (A/B measurements; the
  // buffer-address kernels remain).
  bool texel_reads() const { return push_descriptor_set_ != nullptr; }
  // Records vkCmdPushDescriptorSetKHR of uniform texel buffers at bindings 0, 1, ... of set 0.
  void push_texel_views(VkCommandBuffer commands, VkPipelineLayout layout, const VkBufferView* views,
                        uint32_t count) const;

 private:
  const Instance& instance_;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  bool queue_compute_only_ = false;
  uint32_t timestamp_valid_bits_ = 0;
  DeviceInfo info_;
  CoopmatSupport coopmat_;
  bool pipeline_statistics_ = false;
  PFN_vkCmdPushDescriptorSetKHR push_descriptor_set_ = nullptr;
};

}  // namespace q3n
