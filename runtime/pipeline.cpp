#include "runtime/pipeline.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <tuple>

#include "runtime/error.h"
#include "runtime/pipeline_cache_file.h"
#include "runtime/pipeline_stats.h"
#include "runtime/shader_registry.h"
#include "runtime/spirv_reflect.h"

namespace q3n {

const EmbeddedShader* find_shader(const std::string& name) {
  for (const auto& s : embedded_shaders())
    if (name == s.name) return &s;
  return nullptr;
}

Pipeline::Pipeline(const Device& device, VkPipelineCache cache, const PipelineKey& key) : key_(key) {
  const EmbeddedShader* shader = find_shader(key.shader);
  if (!shader) throw Error("shader variant '" + key.shader + "' is not built into this q3n binary");
  if (key.push_bytes > device.info().max_push_constants)
    throw Error("shader " + key.shader + " needs " + std::to_string(key.push_bytes) + " bytes of push constants");
  // The host struct must cover the shader's block, and may exceed it only by the struct's tail
  // padding (C++ rounds a struct holding 64-bit addresses up to a multiple of 8).
  const uint32_t declared = push_constant_bytes({shader->code, shader->words}).value_or(0);
  if (key.push_bytes < declared || key.push_bytes >= declared + 8)
    throw Error("internal: shader " + key.shader + " declares " + std::to_string(declared) +
                " bytes of push constants but its host struct has " + std::to_string(key.push_bytes));
  VkDevice dev = device.get();

  VkShaderModuleCreateInfo module_info{VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO};
  module_info.codeSize = shader->words * 4;
  module_info.pCode = shader->code;
  VkShaderModule module;
  VK_CHECK(vkCreateShaderModule(dev, &module_info, nullptr, &module));
  OwnedShaderModule owned_module(dev, module);

  if (key.texel_views) {
    if (!device.texel_reads()) throw Error("internal: " + key.shader + " reads texel views, which are off");
    std::vector<VkDescriptorSetLayoutBinding> bindings(key.texel_views);
    for (uint32_t i = 0; i < key.texel_views; ++i)
      bindings[i] = {i, VK_DESCRIPTOR_TYPE_UNIFORM_TEXEL_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, nullptr};
    VkDescriptorSetLayoutCreateInfo set_info{VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO};
    set_info.flags = VK_DESCRIPTOR_SET_LAYOUT_CREATE_PUSH_DESCRIPTOR_BIT_KHR;
    set_info.bindingCount = key.texel_views;
    set_info.pBindings = bindings.data();
    VkDescriptorSetLayout set;
    VK_CHECK(vkCreateDescriptorSetLayout(dev, &set_info, nullptr, &set));
    texel_set_ = OwnedDescriptorSetLayout(dev, set);
  }
  VkPushConstantRange push{VK_SHADER_STAGE_COMPUTE_BIT, 0, key.push_bytes};
  VkPipelineLayoutCreateInfo layout_info{VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO};
  layout_info.pushConstantRangeCount = key.push_bytes ? 1 : 0;
  layout_info.pPushConstantRanges = &push;
  const VkDescriptorSetLayout set_layout = texel_set_.get();
  layout_info.setLayoutCount = key.texel_views ? 1 : 0;
  layout_info.pSetLayouts = &set_layout;
  VkPipelineLayout layout;
  VK_CHECK(vkCreatePipelineLayout(dev, &layout_info, nullptr, &layout));
  layout_ = OwnedPipelineLayout(dev, layout);

  std::vector<uint32_t> values = {key.workgroup[0], key.workgroup[1], key.workgroup[2]};
  values.insert(values.end(), key.constants.begin(), key.constants.end());
  std::vector<VkSpecializationMapEntry> entries;
  for (uint32_t i = 0; i < values.size(); ++i) entries.push_back({i, i * 4, 4});
  VkSpecializationInfo spec{static_cast<uint32_t>(entries.size()), entries.data(), values.size() * 4, values.data()};

  VkComputePipelineCreateInfo info{VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO};
  info.stage = {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO};
  info.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
  info.stage.module = module;
  info.stage.pName = "main";
  info.stage.pSpecializationInfo = &spec;
  info.layout = layout;
  if (device.pipeline_statistics()) info.flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR;
  VkPipeline pipeline;
  VK_CHECK(vkCreateComputePipelines(dev, cache, 1, &info, nullptr, &pipeline));
  pipeline_ = OwnedPipeline(dev, pipeline);
  if (device.pipeline_statistics()) {
    std::string label = key.shader;  // "name [workgroup,constants...]"
    label.append(" [").append(std::to_string(key.workgroup[0]));
    for (uint32_t c : key.constants) label.append(",").append(std::to_string(c));
    print_pipeline_statistics(dev, pipeline, label.append("]"));
  }
}

namespace {

std::filesystem::path cache_directory() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return std::filesystem::path(xdg) / "q3n";
  if (const char* home = std::getenv("HOME"); home && *home) return std::filesystem::path(home) / ".cache" / "q3n";
  return {};
}

}  // namespace

const char* matrix_activations_name(MatrixActivations a) { return a == MatrixActivations::Split ? "split" : "fp16"; }

MatrixActivations parse_matrix_activations(const std::string& name) {
  if (name == "fp16") return MatrixActivations::Fp16;
  if (name == "split") return MatrixActivations::Split;
  throw Error("unknown matrix activation precision '" + name + "': use fp16 or split");
}

void PipelineLibrary::set_coopmat(bool on) {
  if (on && !device_.coopmat())
    throw Error("cooperative-matrix kernels cannot run on " + device_.info().name + ": " +
                device_.coopmat_unavailable());
  coopmat_ = on;
}

PipelineLibrary::PipelineLibrary(const Device& device)
    : device_(device), coopmat_(device.coopmat()), cpu_shapes_(prefers_cpu_kernel_shapes(device.info())) {
  if (const char* env = std::getenv("Q3N_KERNEL_SHAPES"); env && *env) {
    if (std::string(env) != "cpu" && std::string(env) != "gpu")
      throw Error(std::string("Q3N_KERNEL_SHAPES='") + env + "' is not a kernel shape family: use cpu or gpu");
    cpu_shapes_ = std::string(env) == "cpu";
  }
  if (const char* env = std::getenv("Q3N_MATRIX_ACTIVATIONS"); env && *env)
    matrix_activations_ = parse_matrix_activations(env);
  VkPhysicalDeviceProperties props;
  vkGetPhysicalDeviceProperties(device.physical(), &props);
  identity_.vendor_id = props.vendorID;
  identity_.device_id = props.deviceID;
  std::copy(std::begin(props.pipelineCacheUUID), std::end(props.pipelineCacheUUID), identity_.uuid.begin());
  std::string uuid;
  char hex[3];
  for (uint8_t b : props.pipelineCacheUUID) {
    std::snprintf(hex, sizeof hex, "%02x", b);
    uuid += hex;
  }
  std::vector<char> file;
  std::span<const char> data;
  if (auto dir = cache_directory(); !dir.empty()) {
    cache_path_ = dir / ("pipelines-" + uuid + ".bin");
    std::ifstream in(cache_path_, std::ios::binary);
    if (in) file.assign(std::istreambuf_iterator<char>(in), {});
    if (!file.empty()) {
      const DecodedPipelineCache decoded = decode_pipeline_cache(file, identity_);
      if (decoded.problem.empty())
        data = decoded.data;
      else  // never handed to the driver; the file is rewritten when this run ends
        std::fprintf(stderr, "[q3n] the pipeline cache %s %s; rebuilding it\n", cache_path_.c_str(),
                     decoded.problem.c_str());
    }
  }
  VkPipelineCacheCreateInfo info{VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO};
  info.initialDataSize = data.size();
  info.pInitialData = data.empty() ? nullptr : data.data();
  VkPipelineCache cache;
  // The driver may still refuse data that passed q3n's checks (it is allowed to): start empty.
  if (vkCreatePipelineCache(device.get(), &info, nullptr, &cache) != VK_SUCCESS) {
    info.initialDataSize = 0;
    info.pInitialData = nullptr;
    VK_CHECK(vkCreatePipelineCache(device.get(), &info, nullptr, &cache));
  }
  cache_ = OwnedPipelineCache(device.get(), cache);
}

PipelineLibrary::~PipelineLibrary() {
  if (cache_path_.empty() || pipelines_.empty()) return;
  size_t size = 0;
  if (vkGetPipelineCacheData(device_.get(), cache_, &size, nullptr) != VK_SUCCESS || size == 0) return;
  std::vector<char> data(size);
  if (vkGetPipelineCacheData(device_.get(), cache_, &size, data.data()) != VK_SUCCESS) return;
  // Best effort: an unwritable cache directory only costs start-up time next run.
  std::error_code ec;
  std::filesystem::create_directories(cache_path_.parent_path(), ec);
  // A name of this process's own: two q3n processes sharing the cache must not interleave writes.
  // Written whole to a temporary file, then renamed over the old one: a reader never sees half.
  const auto tmp = cache_path_.string() + ".tmp." + std::to_string(::getpid());
  const std::vector<char> file = encode_pipeline_cache(identity_, std::span<const char>(data.data(), size));
  std::ofstream out(tmp, std::ios::binary);
  out.write(file.data(), static_cast<std::streamsize>(file.size()));
  out.close();
  if (!out) {
    std::filesystem::remove(tmp, ec);
    return;
  }
  std::filesystem::rename(tmp, cache_path_, ec);
  if (ec) std::filesystem::remove(tmp, ec);
}

bool PipelineLibrary::built(const std::string& shader) const {
  return std::any_of(pipelines_.begin(), pipelines_.end(), [&](const auto& p) { return p.first.shader == shader; });
}

const Pipeline& PipelineLibrary::get(const PipelineKey& key) {
  auto it = pipelines_.find(key);
  if (it == pipelines_.end()) it = pipelines_.emplace(key, std::make_unique<Pipeline>(device_, cache_, key)).first;
  return *it->second;
}

}  // namespace q3n
