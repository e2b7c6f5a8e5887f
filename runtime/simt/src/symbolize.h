// simt/src/symbolize.h: names a kernel from its address for the emulator's error messages,
// internal to mra_simt.
#pragma once

#include <string>

namespace simt::detail {

// The demangled name of the function at `address`, read from the symbol table of the executable or
// shared object that contains it (so static and non-exported kernels are named too); the address in
// hex when the object carries no symbols.
std::string symbolize(const void* address);

}  // namespace simt::detail
