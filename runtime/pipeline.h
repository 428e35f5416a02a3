// Compute pipelines from embedded SPIR-V, specialised by constants, cached on disk between runs.
#pragma once

#include <vulkan/vulkan.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/device.h"
#include "runtime/handle.h"
#include "runtime/pipeline_cache_file.h"

namespace q3n {

// Every q3n shader declares local_size_{x,y,z}_id = 0, 1, 2; further specialisation constants
// (ids 3, 4, ...) are the shader's own (tile sizes, head dims, dtype switches).
struct PipelineKey {
  std::string shader;
  std::array<uint32_t, 3> workgroup{64, 1, 1};
  std::vector<uint32_t> constants;  // ids 3, 4, ...
  uint32_t push_bytes = 0;
  // Uniform texel buffers at bindings 0 .. texel_views - 1 of set 0, pushed before each dispatch
  // (CommandBuffer::push_texel_views; Device::texel_reads).
  uint32_t texel_views = 0;
  bool operator<(const PipelineKey& o) const {
    return std::tie(shader, workgroup, constants, push_bytes, texel_views) <
           std::tie(o.shader, o.workgroup, o.constants, o.push_bytes, o.texel_views);
  }
};

class Pipeline {
 public:
  Pipeline(const Device& device, VkPipelineCache cache, const PipelineKey& key);
  VkPipeline get() const { return pipeline_; }
  VkPipelineLayout layout() const { return layout_; }
  const PipelineKey& key() const { return key_; }

 private:
  PipelineKey key_;
  OwnedDescriptorSetLayout texel_set_;
  OwnedPipelineLayout layout_;
  OwnedPipeline pipeline_;
};

enum class MatrixActivations { Fp16, Split };
// fp16 by default: kjv-demo's logits stay within a mean KL of 2e-5 of the fp32 path and prefill
// runs 3% faster (bench/NOTES.md, session 8); split stays selectable (--matrix-activations).
constexpr MatrixActivations kDefaultMatrixActivations = MatrixActivations::Fp16;
// "fp16" / "split", and back (throws on another name).
const char* matrix_activations_name(MatrixActivations a);
MatrixActivations parse_matrix_activations(const std::string& name);

// Creates each pipeline once and keeps it; loads and saves the VkPipelineCache under
// $XDG_CACHE_HOME/q3n (or ~/.cache/q3n), keyed by the device's pipeline-cache UUID. The file is
// checked before the driver sees it (runtime/pipeline_cache_file.h): a damaged or foreign one is
// rebuilt with a one-line notice on stderr.
class PipelineLibrary {
 public:
  explicit PipelineLibrary(const Device& device);
  ~PipelineLibrary();  // saves the cache
  PipelineLibrary(const PipelineLibrary&) = delete;
  PipelineLibrary& operator=(const PipelineLibrary&) = delete;

  const Pipeline& get(const PipelineKey& key);
  size_t size() const { return pipelines_.size(); }
  // Whether some pipeline of this shader variant has been created (tests: which kernel ran).
  bool built(const std::string& shader) const;
  const Device& device() const { return device_; }

  // Whether operators use their cooperative-matrix kernels: on where the device can run them
  // (Device::coopmat), off with --no-coopmat; tests run both paths. Turning it on where the
  // device cannot throws with the reason.
  bool coopmat() const { return coopmat_; }
  void set_coopmat(bool on);
  // How the matrix kernels take activations (shaders/coopmat.glsl): rounded to fp16, as every
  // peer engine does, or as hi + lo fp16 halves (~21 bits, twice the matrix work).
  // Q3N_MATRIX_ACTIVATIONS=fp16|split overrides the default (a diagnostic, like Q3N_COOPMAT_API).
  MatrixActivations matrix_activations() const { return matrix_activations_; }
  void set_matrix_activations(MatrixActivations a) { matrix_activations_ = a; }
  // The SPLIT specialisation constant of the matrix kernels.
  uint32_t split_activations() const { return matrix_activations_ == MatrixActivations::Split ? 1u : 0u; }
  // Invocations of a cooperative-matrix workgroup: eight subgroups.
  uint32_t coopmat_workgroup() const { return 8 * device_.info().subgroup_size; }
  // The variant of a cooperative-matrix shader for the device's extension: `family` itself for
  // the NV one, `family` + "_khr" for the KHR one (shaders/CMakeLists.txt).
  std::string coopmat_shader(const std::string& family) const {
    return device_.coopmat_support().api == CoopmatApi::Khr ? family + "_khr" : family;
  }
  // Whether the vector kernels take their CPU shapes (one output per invocation, no barrier, no
  // shared memory, no subgroup operation), which a CPU driver runs as plain SIMD loops: on for
  // CPU devices (lavapipe). Q3N_KERNEL_SHAPES=cpu|gpu overrides it; tests run both shapes.
  bool cpu_shapes() const { return cpu_shapes_; }
  void set_cpu_shapes(bool on) { cpu_shapes_ = on; }
  // Invocations of a workgroup that reduces over a row (norms, routing, sampling, ...): `gpu_size`
  // on GPUs; with the CPU shapes one subgroup (a SIMD batch), since a CPU driver's barriers and
  // shared-memory reductions cost more than the lanes a larger workgroup adds.
  uint32_t reduction_workgroup(uint32_t gpu_size) const {
    return cpu_shapes_ ? std::min(gpu_size, device_.info().subgroup_size) : gpu_size;
  }

 private:
  const Device& device_;
  std::filesystem::path cache_path_;
  PipelineCacheIdentity identity_;
  OwnedPipelineCache cache_;
  std::map<PipelineKey, std::unique_ptr<Pipeline>> pipelines_;
  bool coopmat_ = false;
  bool cpu_shapes_ = false;
  MatrixActivations matrix_activations_ = kDefaultMatrixActivations;
};

}  // namespace q3n
