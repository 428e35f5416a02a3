# Turns one SPIR-V file into a C++ source defining `const uint32_t NAME[]` and `NAME_words`.
file(READ ${SPV} hex HEX)
string(LENGTH "${hex}" hex_len)
math(EXPR words "${hex_len} / 8")
# SPIR-V is little-endian 32-bit words: regroup each 4 bytes "aabbccdd" as 0xddccbbaa.
string(REGEX REPLACE "([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])([0-9a-f][0-9a-f])"
       "0x\\4\\3\\2\\1u," words_text "${hex}")
file(WRITE ${OUT} "// Generated from ${SPV}. Do not edit.\n#include <cstddef>\n#include <cstdint>\nnamespace q3n::spirv {\nextern const uint32_t ${NAME}[] = {${words_text}};\nextern const size_t ${NAME}_words = ${words};\n}\n")
