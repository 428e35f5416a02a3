// SPIR-V compiled from shaders/*.comp at build time (cmake/EmbedShaders.cmake), one entry per variant.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace q3n {

struct EmbeddedShader {
  const char* name;  // variant name, e.g. "rms_norm"
  const uint32_t* code;
  size_t words;
};

const std::vector<EmbeddedShader>& embedded_shaders();
// GLSL extensions the build's glslc accepted; variants needing others were not built.
const std::vector<std::string>& glslc_features();
// nullptr when this build has no such variant.
const EmbeddedShader* find_shader(const std::string& name);

}  // namespace q3n
