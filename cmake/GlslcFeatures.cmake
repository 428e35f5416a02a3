# Probe which GLSL extensions this glslc accepts, so shader variants that need them are built only
# where the compiler can. Debian 12's glslc lacks the KHR cooperative-matrix, integer-dot and bf16
# extensions; newer distributions have them. Result: Q3N_GLSL_FEATURES (list of extension names).
set(Q3N_GLSL_PROBED_EXTENSIONS
    GL_KHR_shader_subgroup_arithmetic
    GL_EXT_shader_explicit_arithmetic_types_float16
    GL_EXT_shader_explicit_arithmetic_types_int8
    GL_EXT_integer_dot_product
    GL_NV_cooperative_matrix
    GL_KHR_cooperative_matrix
    GL_EXT_bfloat16)

set(Q3N_GLSL_FEATURES "")
set(_probe_dir ${CMAKE_BINARY_DIR}/glslc_probe)
file(MAKE_DIRECTORY ${_probe_dir})
foreach(ext IN LISTS Q3N_GLSL_PROBED_EXTENSIONS)
  set(_src ${_probe_dir}/${ext}.comp)
  file(WRITE ${_src} "#version 450\n#extension ${ext} : require\nlayout(local_size_x = 1) in;\nvoid main() {}\n")
  execute_process(COMMAND ${GLSLC} --target-env=vulkan1.2 -o ${_probe_dir}/${ext}.spv ${_src}
                  RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
  if(_rc EQUAL 0)
    list(APPEND Q3N_GLSL_FEATURES ${ext})
  endif()
endforeach()
message(STATUS "glslc accepts: ${Q3N_GLSL_FEATURES}")
