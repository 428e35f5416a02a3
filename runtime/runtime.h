// Everything needed to run shaders on one device, owned together in construction order.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "runtime/command.h"
#include "runtime/device.h"
#include "runtime/instance.h"
#include "runtime/memory.h"
#include "runtime/pipeline.h"
#include "runtime/transfer.h"

namespace q3n {

struct RuntimeOptions {
  std::string device;                                   // see select_device(); empty = Q3N_DEVICE or the best device
  bool coopmat = true;                                  // use cooperative-matrix kernels where the device has them
  std::optional<MatrixActivations> matrix_activations;  // unset: the library's default
  InstanceOptions instance = InstanceOptions::from_environment();
};

class Runtime {
 public:
  explicit Runtime(const RuntimeOptions& options = {})
      : instance(options.instance),
        device(instance, options.device),
        allocator(device),
        pipelines(device),
        queue(device),
        pool(device),
        transfer(device, allocator, queue, pool) {
    if (!options.coopmat) pipelines.set_coopmat(false);
    if (options.matrix_activations) pipelines.set_matrix_activations(*options.matrix_activations);
  }
  ~Runtime() { vkDeviceWaitIdle(device.get()); }  // nothing may still run while members are destroyed
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Declaration order is destruction order in reverse: the device outlives everything on it.
  Instance instance;
  Device device;
  Allocator allocator;
  PipelineLibrary pipelines;
  Queue queue;
  CommandPool pool;
  Transfer transfer;
};

}  // namespace q3n
