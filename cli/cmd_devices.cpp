// `q3n devices`: every Vulkan device, its capabilities, and which one q3n would pick.
#include <cstdio>
#include <memory>
#include <string>

#include "cli/commands.h"
#include "runtime/device.h"
#include "runtime/error.h"
#include "runtime/shader_registry.h"

namespace q3n::cli {

void add_devices_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("devices", "List Vulkan devices and the features q3n uses");
  auto selector = std::make_shared<std::string>();
  cmd->add_option("--device", *selector, "Device index or name substring to mark as selected (or Q3N_DEVICE)");
  cmd->callback([selector] {
    Instance instance;
    const auto devices = list_devices(instance);
    for (const auto& d : devices)
      std::printf("%s    q3n GEMM kernels: %s\n    q3n vector kernels: %s\n", describe(d).c_str(),
                  describe_gemm_kernels(coopmat_support(d)).c_str(),
                  describe_vector_kernels(prefers_cpu_kernel_shapes(d), wants_texel_reads(d)).c_str());
    try {
      const uint32_t chosen = select_device(devices, *selector);
      std::printf("selected: [%u] %s\n", chosen, devices[chosen].name.c_str());
    } catch (const Error& e) {
      std::printf("selected: none (%s)\n", e.what());
    }
    std::string features;
    for (const auto& f : glslc_features()) features += " " + f;
    std::printf("shader variants built: %zu; glslc extensions at build time:%s\n", embedded_shaders().size(),
                features.c_str());
  });
}

}  // namespace q3n::cli
