// Shared fixture for GPU tests: one Runtime per test process with the Khronos validation layer
// always on; a test fails if it caused any validation error.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/runtime.h"

namespace q3n::test {

Runtime& runtime();

class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  Runtime& rt() { return runtime(); }
  PipelineLibrary& pipelines() { return runtime().pipelines; }
  Allocation upload(const std::vector<float>& values);
  Allocation upload_words(const std::vector<uint32_t>& words);
  Allocation upload_bytes(const void* data, size_t bytes);
  // A device buffer whose every word is a NaN pattern, so unwritten outputs cannot pass a check.
  Allocation poisoned(size_t floats);
  std::vector<float> download(const Allocation& a, size_t floats);
  std::vector<uint32_t> download_words(const Allocation& a, size_t words);
  // Records with `record`, submits, waits.
  void run(const std::function<void(CommandBuffer&)>& record);
  // Selects the cooperative-matrix kernels or the portable ones for this test (TearDown restores
  // the default). Returns false, with the reason in `why`, where the device cannot run them.
  bool use_coopmat(bool on, std::string* why = nullptr);
  // Selects how the matrix kernels take activations for this test (TearDown restores the default).
  void use_matrix_activations(MatrixActivations a) { pipelines().set_matrix_activations(a); }

 private:
  uint64_t errors_before_ = 0;
  bool coopmat_before_ = false;
  MatrixActivations activations_before_ = kDefaultMatrixActivations;
};

// Selects the CPU shapes of the vector kernels until the end of the scope.
class CpuShapesForThisScope {
 public:
  explicit CpuShapesForThisScope(PipelineLibrary& pipelines) : pipelines_(pipelines), before_(pipelines.cpu_shapes()) {
    pipelines.set_cpu_shapes(true);
  }
  ~CpuShapesForThisScope() { pipelines_.set_cpu_shapes(before_); }
  CpuShapesForThisScope(const CpuShapesForThisScope&) = delete;
  CpuShapesForThisScope& operator=(const CpuShapesForThisScope&) = delete;

 private:
  PipelineLibrary& pipelines_;
  bool before_;
};

constexpr uint32_t kPoison = 0x7FBADBADu;  // a quiet-NaN bit pattern

// Uniform in [lo, hi], never exactly zero. Deterministic for a seed.
std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f);

// Checks |actual - expected| <= atol + rtol * |expected| for every element; reports the worst one.
::testing::AssertionResult all_close(const std::vector<float>& actual, const std::vector<double>& expected, double atol,
                                     double rtol);

}  // namespace q3n::test
