#include "tests/support/gpu_test.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>

namespace q3n::test {

namespace {
std::unique_ptr<Runtime> shared_runtime;

// Destroys the shared runtime when the tests end, inside main: as a static destroyed after main
// it outlived the NVIDIA driver's own exit handlers once a test had made a second VkInstance
// (tests/model/split_test.cpp), and the process crashed at exit (H100, driver 580).
class ReleaseRuntime : public ::testing::Environment {
 public:
  void TearDown() override { shared_runtime.reset(); }
};
[[maybe_unused]] ::testing::Environment* const release_runtime =
    ::testing::AddGlobalTestEnvironment(new ReleaseRuntime);
}  // namespace

Runtime& runtime() {
  if (!shared_runtime) {
    RuntimeOptions options;
    options.instance.validation = true;  // tests always run under the validation layer
    shared_runtime = std::make_unique<Runtime>(options);
    const DeviceInfo& info = shared_runtime->device.info();
    std::printf("[q3n test device] %s (subgroup %u, %s vector-kernel shapes)\n", info.name.c_str(), info.subgroup_size,
                shared_runtime->pipelines.cpu_shapes() ? "CPU" : "GPU");
  }
  return *shared_runtime;
}

void GpuTest::SetUp() {
  errors_before_ = runtime().instance.validation_errors();
  coopmat_before_ = runtime().pipelines.coopmat();
  activations_before_ = runtime().pipelines.matrix_activations();
}

bool GpuTest::use_coopmat(bool on, std::string* why) {
  if (on && !rt().device.coopmat()) {
    if (why) *why = "no cooperative-matrix kernels on this device: " + rt().device.coopmat_unavailable();
    return false;
  }
  pipelines().set_coopmat(on);
  return true;
}

void GpuTest::TearDown() {
  runtime().pipelines.set_coopmat(coopmat_before_);
  runtime().pipelines.set_matrix_activations(activations_before_);
  EXPECT_EQ(runtime().instance.validation_errors(), errors_before_)
      << "validation error: " << runtime().instance.last_validation_error();
}

Allocation GpuTest::upload_bytes(const void* data, size_t bytes) {
  Allocation a = rt().allocator.allocate(bytes, MemoryKind::Device, "test input");
  rt().transfer.upload(a.range(), data, bytes);
  return a;
}

Allocation GpuTest::upload(const std::vector<float>& values) {
  return upload_bytes(values.data(), values.size() * sizeof(float));
}

Allocation GpuTest::upload_words(const std::vector<uint32_t>& words) {
  return upload_bytes(words.data(), words.size() * sizeof(uint32_t));
}

Allocation GpuTest::poisoned(size_t floats) {
  Allocation a = rt().allocator.allocate(floats * 4, MemoryKind::Device, "test output");
  rt().transfer.fill(a.range(), kPoison);
  return a;
}

std::vector<float> GpuTest::download(const Allocation& a, size_t floats) {
  std::vector<float> out(floats);
  rt().transfer.download(a.range(), out.data(), floats * 4);
  return out;
}

std::vector<uint32_t> GpuTest::download_words(const Allocation& a, size_t words) {
  std::vector<uint32_t> out(words);
  rt().transfer.download(a.range(), out.data(), words * 4);
  return out;
}

void GpuTest::run(const std::function<void(CommandBuffer&)>& record) {
  CommandBuffer commands = rt().pool.allocate();
  commands.begin();
  record(commands);
  commands.barrier();
  commands.end();
  rt().queue.submit_and_wait(commands);
}

std::vector<float> random_floats(size_t n, uint64_t seed, float lo, float hi) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) {
    do x = dist(rng);
    while (x == 0.0f);
  }
  return v;
}

::testing::AssertionResult all_close(const std::vector<float>& actual, const std::vector<double>& expected, double atol,
                                     double rtol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "size " << actual.size() << " != expected " << expected.size();
  size_t worst = 0, failures = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::fabs(double(actual[i]) - expected[i]);
    const double allowed = atol + rtol * std::fabs(expected[i]);
    const double excess = std::isnan(err) ? INFINITY : err - allowed;
    if (excess > 0) failures++;
    if (excess > worst_excess || i == 0) {
      worst_excess = excess;
      worst = i;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << actual.size() << " elements out of tolerance (atol "
                                       << atol << ", rtol " << rtol << "); worst at [" << worst << "]: got "
                                       << actual[worst] << ", expected " << expected[worst];
}

}  // namespace q3n::test
