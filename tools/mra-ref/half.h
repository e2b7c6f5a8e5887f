// tools/mra-ref/half.h: the two 16-bit float formats of the files and the kernels (IEEE binary16, bfloat16):
// decoded exactly, encoded with round to nearest, ties to even (what a cast to __half / __nv_bfloat16 does).
// Used by the .npy and safetensors readers and by the emulated backend's --storage.
#pragma once

#include <cstdint>

namespace mra::half {

// Every binary16 and bfloat16 value is exactly a float.
float binary16_to_float(uint16_t h);
float bfloat16_to_float(uint16_t b);

// Round to nearest even; beyond the largest finite value (65504 for binary16), infinity; NaN stays NaN.
uint16_t float_to_binary16(float x);
uint16_t float_to_bfloat16(float x);

}  // namespace mra::half
