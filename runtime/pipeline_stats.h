// Compiler statistics of a pipeline (VK_KHR_pipeline_executable_properties): registers, shared
// memory, spills — what tuning a kernel's tile shape for occupancy needs. A diagnostic only:
// Q3N_PIPELINE_STATS=1 turns it on where the driver has the extension (NVIDIA, RADV, ANV, lavapipe).
#pragma once

#include <string>

#include "runtime/vk_compat.h"

namespace q3n {

// Whether Q3N_PIPELINE_STATS asks for statistics.
bool pipeline_statistics_requested();

// Prints one line per executable of `pipeline` to stderr: "[stats] label: name=value ...".
void print_pipeline_statistics(VkDevice device, VkPipeline pipeline, const std::string& label);

}  // namespace q3n
