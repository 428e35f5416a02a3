// The runtime layer: device selection, memory pool, transfers, pipelines, replayed command
// buffers, timestamps and the validation messenger.
#include <unistd.h>
#include <algorithm>
#include <cstdlib>

#include <cstring>
#include <filesystem>
#include <numeric>
#include <optional>

#include "runtime/error.h"
#include "runtime/ops/rms_norm.h"
#include "runtime/pipeline_cache_file.h"
#include "runtime/profiler.h"
#include "runtime/shader_registry.h"
#include "runtime/spirv_reflect.h"
#include "tests/support/gpu_test.h"

namespace q3n::test {
namespace {

using RuntimeTest = GpuTest;

// Sets an environment variable for one scope and restores what was there (also when an assertion
// ends the test early).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    set(value);
  }
  ~ScopedEnv() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }
  void set(const std::string& value) { setenv(name_, value.c_str(), 1); }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST_F(RuntimeTest, SelectedDeviceMeetsRequirements) {
  EXPECT_TRUE(rt().device.info().missing_requirement().empty());
  DeviceInfo small = rt().device.info();
  small.max_shared_memory = 16 * 1024;  // Vulkan's minimum, below the portable kernels' tiles
  EXPECT_NE(small.missing_requirement().find("32 KiB of compute shared memory"), std::string::npos);
  EXPECT_GE(rt().device.info().subgroup_size, 1u);
  auto devices = list_devices(rt().instance);
  ASSERT_FALSE(devices.empty());
  EXPECT_FALSE(describe(devices[0]).empty());
}

TEST_F(RuntimeTest, DeviceSelectorErrorsNameTheProblem) {
  auto devices = list_devices(rt().instance);
  try {
    select_device(devices, "999");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
  try {
    select_device(devices, "no-such-gpu-name");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no-such-gpu-name"), std::string::npos) << e.what();
  }
  EXPECT_EQ(select_device(devices, "0"), 0u);
}

// The queue family: compute-only where the device has one that writes timestamps, the first
// compute family with Q3N_QUEUE=first, and an unknown Q3N_QUEUE value refused by name.
TEST_F(RuntimeTest, QueueFamilyIsComputeOnlyWhereThereIsOne) {
  uint32_t count = 0;
  vkGetPhysicalDeviceQueueFamilyProperties(rt().device.physical(), &count, nullptr);
  std::vector<VkQueueFamilyProperties> families(count);
  vkGetPhysicalDeviceQueueFamilyProperties(rt().device.physical(), &count, families.data());
  std::optional<uint32_t> compute_only, first;
  for (uint32_t f = 0; f < count; ++f) {
    const bool computes = families[f].queueFlags & VK_QUEUE_COMPUTE_BIT;
    if (computes && !first) first = f;
    if (computes && !(families[f].queueFlags & VK_QUEUE_GRAPHICS_BIT) && families[f].timestampValidBits &&
        !compute_only)
      compute_only = f;
  }
  ASSERT_TRUE(first.has_value());
  {
    ScopedEnv queue("Q3N_QUEUE", "compute");
    EXPECT_EQ(Device(rt().instance).queue_family(), compute_only.value_or(*first));
    queue.set("first");
    EXPECT_EQ(Device(rt().instance).queue_family(), *first);
    queue.set("graphics");
    try {
      Device device(rt().instance);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("Q3N_QUEUE='graphics'"), std::string::npos) << e.what();
    }
  }
}

TEST_F(RuntimeTest, AllocatorReusesFreedRangesAndAligns) {
  auto& alloc = rt().allocator;
  const VkDeviceSize before = alloc.used_bytes(MemoryKind::Device);
  VkDeviceAddress first;
  {
    Allocation a = alloc.allocate(1000, MemoryKind::Device, "a");
    Allocation b = alloc.allocate(3000, MemoryKind::Device, "b");
    EXPECT_EQ(a.address() % alloc.alignment(), 0u);
    EXPECT_EQ(b.address() % alloc.alignment(), 0u);
    EXPECT_GE(b.address(), a.address() + 1000);
    first = a.address();
    EXPECT_GT(alloc.used_bytes(MemoryKind::Device), before);
  }
  EXPECT_EQ(alloc.used_bytes(MemoryKind::Device), before);
  Allocation c = alloc.allocate(3500, MemoryKind::Device, "c");  // fits in the coalesced hole
  EXPECT_EQ(c.address(), first);
}

TEST_F(RuntimeTest, OversizedAllocationIsAClearError) {
  const VkDeviceSize too_big = rt().device.info().max_allocation + (1ull << 20);
  try {
    rt().allocator.allocate(too_big, MemoryKind::Device, "huge tensor");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("huge tensor"), std::string::npos) << e.what();
  }
}

TEST_F(RuntimeTest, TransferRoundTripsAcrossStagingChunks) {
  Transfer small(rt().device, rt().allocator, rt().queue, rt().pool, 4096);  // forces many chunks
  std::vector<uint32_t> data(10000);
  std::iota(data.begin(), data.end(), 12345u);
  Allocation a = rt().allocator.allocate(data.size() * 4, MemoryKind::Device, "round trip");
  small.upload(a.range(), data.data(), data.size() * 4);
  std::vector<uint32_t> back(data.size(), 0);
  small.download(a.range(), back.data(), back.size() * 4);
  EXPECT_EQ(back, data);
}

TEST_F(RuntimeTest, PipelinesAreCreatedOnceAndUnknownShadersFail) {
  PipelineKey key{"rms_norm", {256, 1, 1}, {0}, 56};  // the shader's push-constant size
  const Pipeline* p1 = &pipelines().get(key);
  const Pipeline* p2 = &pipelines().get(key);
  EXPECT_EQ(p1, p2);
  EXPECT_NE(find_shader("rms_norm"), nullptr);
  EXPECT_THROW(pipelines().get({"no_such_shader", {64, 1, 1}, {}, 0}), Error);
}

// A dispatch past the device's maxComputeWorkGroupCount is refused while recording, naming the
// shader and the limit (Vulkan leaves the behaviour of such a dispatch undefined).
TEST_F(RuntimeTest, DispatchBeyondTheWorkgroupCountLimitIsRefused) {
  const Pipeline& pipeline = pipelines().get({"rms_norm", {256, 1, 1}, {0}, 56});
  const std::vector<uint8_t> push(56);
  const uint32_t* most = rt().device.info().max_workgroup_count;
  ASSERT_GE(most[0], 65535u);  // the minimum every device has
  for (int axis = 0; axis < 3; ++axis) {
    if (most[axis] == UINT32_MAX) continue;  // no count exceeds it
    uint32_t groups[3] = {1, 1, 1};
    groups[axis] = most[axis] + 1;
    CommandBuffer commands = rt().pool.allocate();
    commands.begin();
    try {
      commands.dispatch(pipeline, push.data(), 56, groups[0], groups[1], groups[2]);
      ADD_FAILURE() << "no error for axis " << axis;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("rms_norm"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("maxComputeWorkGroupCount"), std::string::npos) << e.what();
    }
    commands.end();
    EXPECT_EQ(commands.dispatch_count(), 0u);
  }
}

// The push-constant block size is read from each shader's SPIR-V, and a pipeline whose host
// struct does not cover it (or exceeds it by more than tail padding) is refused.
TEST_F(RuntimeTest, PushConstantBlocksAreCheckedAgainstTheHostStruct) {
  auto declared = [](const char* name) {
    const EmbeddedShader* s = find_shader(name);
    return push_constant_bytes({s->code, s->words});
  };
  EXPECT_EQ(declared("copy"), 20u);  // two buffer addresses and a uint
  // three addresses, k, n, tokens, two texel offsets, then (8-aligned) the conv's four addresses
  EXPECT_EQ(declared("linear_gemv"), 80u);
  EXPECT_NO_THROW(pipelines().get({"copy", {256, 1, 1}, {}, 24}));  // sizeof: padded to 8
  for (const uint32_t wrong : {16u, 32u}) {
    try {
      pipelines().get({"copy", {256, 1, 1}, {}, wrong});
      ADD_FAILURE() << wrong << " bytes were accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("declares 20 bytes"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(push_constant_bytes(std::vector<uint32_t>{1, 2, 3}), Error);  // not SPIR-V
}

// A command buffer recorded once and submitted three times: the fused residual add accumulates.
TEST_F(RuntimeTest, RecordedCommandBufferReplays) {
  const uint32_t n = 100;
  auto x = random_floats(n, 11);
  std::vector<float> w(n, 0.0f), res(n, 0.0f);
  Allocation dx = upload(x), dw = upload(w), dres = upload(res), dout = poisoned(n);
  CommandBuffer commands = rt().pool.allocate();
  commands.begin(/*reusable=*/true);
  ops::record_rms_norm(
      pipelines(), commands,
      {.x = dx.range(), .weight = dw.range(), .out = dout.range(), .residual = dres.range(), .rows = 1, .n = n});
  commands.barrier();
  commands.end();
  for (int i = 0; i < 3; ++i) rt().queue.submit_and_wait(commands);
  auto got = download(dres, n);
  std::vector<double> expected(n);
  for (uint32_t i = 0; i < n; ++i) expected[i] = 3.0 * x[i];
  EXPECT_TRUE(all_close(got, expected, 1e-6, 1e-6));
  EXPECT_GE(rt().queue.last_submitted(), 3u);
}

TEST_F(RuntimeTest, ProfilerTimesDispatches) {
  Profiler profiler(rt().device, 8);
  if (!profiler.available()) GTEST_SKIP() << "device has no timestamps on its compute queue";
  const uint32_t n = 4096, rows = 64;
  auto x = random_floats(size_t(n) * rows, 12);
  auto w = random_floats(n, 13);
  Allocation dx = upload(x), dw = upload(w), dout = poisoned(x.size());
  CommandBuffer commands = rt().pool.allocate();
  commands.begin();
  profiler.begin(commands);
  profiler.mark(commands, "rms_norm");
  ops::record_rms_norm(pipelines(), commands,
                       {.x = dx.range(), .weight = dw.range(), .out = dout.range(), .rows = rows, .n = n});
  profiler.finish(commands);
  commands.end();
  rt().queue.submit_and_wait(commands);
  const auto& times = profiler.read();
  ASSERT_EQ(times.count("rms_norm"), 1u);
  EXPECT_GE(times.at("rms_norm").milliseconds, 0.0);
  EXPECT_EQ(times.at("rms_norm").count, 1u);
}

// The debug messenger counts errors: inject one through VK_EXT_debug_utils and see it counted.
// Cooperative-matrix selection from a device's reported shapes, on the lists real drivers give:
// the kernels need 16x16x16 fp16 x fp16 -> fp32 at subgroup scope, KHR preferred over NV.
TEST(CoopmatSelection, FollowsTheDevicesShapeList) {
  const std::vector<CoopMatShape> h100 = {{16, 16, 16, "f16", "f16", "f16"},
                                          {16, 16, 16, "f16", "f16", "f32"},
                                          {16, 8, 16, "f16", "f16", "f32"},
                                          {16, 16, 32, "s8", "s8", "s32"},
                                          {16, 16, 16, "bf16", "bf16", "f32"}};
  const std::vector<CoopMatShape> rdna3 = {
      {16, 16, 16, "f16", "f16", "f32"}, {16, 16, 16, "f16", "f16", "f16"}, {16, 16, 16, "s8", "s8", "s32"}};
  const std::vector<CoopMatShape> xe_8x16 = {{8, 16, 16, "f16", "f16", "f32"}, {8, 16, 32, "s8", "s8", "s32"}};
  const std::vector<CoopMatShape> fp16_only = {{16, 16, 16, "f16", "f16", "f16"}};
  EXPECT_TRUE(lists_f16_16x16x16(h100));
  EXPECT_TRUE(lists_f16_16x16x16(rdna3));
  EXPECT_FALSE(lists_f16_16x16x16(xe_8x16));    // another shape: the portable kernels
  EXPECT_FALSE(lists_f16_16x16x16(fp16_only));  // no fp32 accumulator
  EXPECT_FALSE(lists_f16_16x16x16({}));         // lavapipe

  DeviceInfo d;
  d.shader_float16 = d.vulkan_memory_model = d.vulkan_memory_model_device_scope = true;
  d.subgroup_size = d.min_subgroup_size = d.max_subgroup_size = 32;
  d.max_workgroup_invocations = 1024;
  d.max_shared_memory = 48 * 1024;
  d.coopmat_khr = d.coopmat_nv = true;
  d.coopmat_khr_shapes = d.coopmat_nv_shapes = h100;
  const bool khr_built = find_shader("linear_gemm_coopmat_khr") != nullptr,
             nv_built = find_shader("linear_gemm_coopmat") != nullptr;
  const CoopmatSupport both = coopmat_support(d);
  EXPECT_EQ(both.api, khr_built ? CoopmatApi::Khr : nv_built ? CoopmatApi::Nv : CoopmatApi::None) << both.gap;
  d.coopmat_nv = false;  // AMD / Intel / Mesa: KHR only
  d.coopmat_khr_shapes = rdna3;
  EXPECT_EQ(coopmat_support(d).api, khr_built ? CoopmatApi::Khr : CoopmatApi::None);
  d.coopmat_khr_shapes = xe_8x16;
  const CoopmatSupport other_shape = coopmat_support(d);
  EXPECT_EQ(other_shape.api, CoopmatApi::None);
  if (khr_built) {
    EXPECT_NE(other_shape.gap.find("16x16x16"), std::string::npos) << other_shape.gap;
  }
  EXPECT_NE(describe_gemm_kernels(other_shape).find("portable"), std::string::npos);
  d.coopmat_khr_shapes = rdna3;
  d.max_shared_memory = 32 * 1024;  // too little for the expert kernel's tiles
  const CoopmatSupport small_shared = coopmat_support(d);
  EXPECT_EQ(small_shared.api, CoopmatApi::None);
  if (khr_built) {
    EXPECT_NE(small_shared.gap.find("shared memory"), std::string::npos) << small_shared.gap;
  }
  d.max_shared_memory = 64 * 1024;
  // RDNA reports subgroups of 32 to 64: the kernels need one fixed size (pinning it through
  // VK_EXT_subgroup_size_control is not done yet), so such devices take the portable kernels.
  d.min_subgroup_size = 32, d.max_subgroup_size = 64;
  EXPECT_EQ(coopmat_support(d).api, CoopmatApi::None);
}

// CPU devices get the CPU shapes of the vector kernels, every other type the GPU shapes; the
// reduction workgroups shrink to one subgroup with the CPU shapes; Q3N_KERNEL_SHAPES overrides and
// refuses a value it does not know.
TEST_F(RuntimeTest, KernelShapesFollowTheDeviceType) {
  DeviceInfo d;
  for (auto type : {VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU, VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU,
                    VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU, VK_PHYSICAL_DEVICE_TYPE_OTHER}) {
    d.type = type;
    EXPECT_FALSE(prefers_cpu_kernel_shapes(d)) << type;
  }
  d.type = VK_PHYSICAL_DEVICE_TYPE_CPU;
  EXPECT_TRUE(prefers_cpu_kernel_shapes(d));

  const bool before = pipelines().cpu_shapes();
  const uint32_t subgroup = rt().device.info().subgroup_size;
  pipelines().set_cpu_shapes(true);
  EXPECT_EQ(pipelines().reduction_workgroup(256), std::min(256u, subgroup));
  pipelines().set_cpu_shapes(false);
  EXPECT_EQ(pipelines().reduction_workgroup(256), 256u);
  pipelines().set_cpu_shapes(before);

  ScopedEnv shapes("Q3N_KERNEL_SHAPES", "cpu");
  EXPECT_TRUE(PipelineLibrary(rt().device).cpu_shapes());
  shapes.set("gpu");
  EXPECT_FALSE(PipelineLibrary(rt().device).cpu_shapes());
  shapes.set("simd");
  try {
    PipelineLibrary library(rt().device);
    ADD_FAILURE() << "an unknown shape family was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("use cpu or gpu"), std::string::npos) << e.what();
  }
}

// The pipeline cache file: q3n's files decode to the driver data they hold; every defect is named
// and hands nothing to the driver.
TEST(PipelineCacheFile, AcceptsItsOwnFilesAndNamesEveryDefect) {
  PipelineCacheIdentity id{0x10de, 0x2330, {}};
  for (size_t i = 0; i < id.uuid.size(); ++i) id.uuid[i] = uint8_t(0xa0 + i);
  std::vector<char> driver(32 + 40);  // VkPipelineCacheHeaderVersionOne, then the driver's bytes
  const uint32_t words[4] = {32, 1, id.vendor_id, id.device_id};
  std::memcpy(driver.data(), words, 16);
  std::memcpy(driver.data() + 16, id.uuid.data(), 16);
  for (size_t i = 32; i < driver.size(); ++i) driver[i] = char(i * 7);
  const std::vector<char> file = encode_pipeline_cache(id, driver);
  const DecodedPipelineCache good = decode_pipeline_cache(file, id);
  ASSERT_EQ(good.problem, "");
  EXPECT_TRUE(std::equal(good.data.begin(), good.data.end(), driver.begin(), driver.end()));

  auto problem = [&](std::vector<char> bytes, const PipelineCacheIdentity& who) {
    const DecodedPipelineCache d = decode_pipeline_cache(bytes, who);
    EXPECT_TRUE(d.data.empty());
    return d.problem;
  };
  EXPECT_NE(problem({}, id).find("not a q3n pipeline cache"), std::string::npos);
  EXPECT_NE(problem(driver, id).find("not a q3n pipeline cache"), std::string::npos);  // an older q3n's file
  std::vector<char> cut(file.begin(), file.end() - 1), longer = file, flipped = file;
  longer.push_back(0);
  flipped[file.size() - 3] ^= 0x10;
  EXPECT_NE(problem(cut, id).find("truncated"), std::string::npos);
  EXPECT_NE(problem(longer, id).find("trailing"), std::string::npos);
  EXPECT_NE(problem(flipped, id).find("checksum"), std::string::npos);
  PipelineCacheIdentity other = id;
  other.uuid[15] ^= 1;  // a driver update
  EXPECT_NE(problem(file, other).find("another device or driver"), std::string::npos);
  std::vector<char> bad_driver = driver;
  bad_driver[4] = 2;  // an unknown driver header version, under a valid q3n header
  EXPECT_NE(problem(encode_pipeline_cache(id, bad_driver), id).find("driver header"), std::string::npos);
}

// A damaged pipeline cache on disk is reported in one line, not given to the driver, and rewritten
// whole when the library closes.
TEST_F(RuntimeTest, ADamagedPipelineCacheIsRebuilt) {
  const auto dir = std::filesystem::temp_directory_path() / ("q3n_pipeline_cache_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  const ScopedEnv cache_home("XDG_CACHE_HOME", dir.string());
  const PipelineKey key{"rms_norm", {64, 1, 1}, {0}, 56};
  { PipelineLibrary(rt().device).get(key); }  // writes the file
  std::filesystem::path file;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    if (e.path().extension() == ".bin") file = e.path();
  ASSERT_FALSE(file.empty()) << "no pipeline cache written under " << dir;
  const uint64_t size = std::filesystem::file_size(file);
  std::filesystem::resize_file(file, size - 5);  // a torn copy

  ::testing::internal::CaptureStderr();
  { PipelineLibrary(rt().device).get(key); }
  const std::string notice = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(notice.find("is truncated"), std::string::npos) << notice;
  EXPECT_NE(notice.find("rebuilding it"), std::string::npos) << notice;
  EXPECT_EQ(std::count(notice.begin(), notice.end(), '\n'), 1) << notice;
  EXPECT_EQ(std::filesystem::file_size(file), size);  // rewritten whole

  ::testing::internal::CaptureStderr();
  { PipelineLibrary(rt().device).get(key); }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");  // and read silently next time
  std::filesystem::remove_all(dir);
}

TEST(ValidationTest, MessengerCountsErrors) {
  Instance& instance = runtime().instance;
  ASSERT_TRUE(instance.validation_enabled()) << "tests must run with the validation layer";
  auto submit = reinterpret_cast<PFN_vkSubmitDebugUtilsMessageEXT>(
      vkGetInstanceProcAddr(instance.get(), "vkSubmitDebugUtilsMessageEXT"));
  ASSERT_NE(submit, nullptr);
  const uint64_t before = instance.validation_errors();
  VkDebugUtilsMessengerCallbackDataEXT data{VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CALLBACK_DATA_EXT};
  data.pMessage = "q3n self-test: an injected error (expected in this test)";
  submit(instance.get(), VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT, VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT,
         &data);
  EXPECT_EQ(instance.validation_errors(), before + 1);
  EXPECT_EQ(instance.last_validation_error(), data.pMessage);
}

}  // namespace
}  // namespace q3n::test
