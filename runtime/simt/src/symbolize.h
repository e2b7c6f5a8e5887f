// simt/src/symbolize.h: what mra_simt reads from the ELF symbol tables of the loaded objects: kernel
// names for its error messages, the static __shared__ variables (thread-local symbols whose name
// carries the "simt_shared" ABI tag of simt/device.h), and which functions are kernels (the
// "simt_kernel" tag device.h gives __global__ functions). Internal to mra_simt.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace simt::detail {

// The demangled name of the function at `address`, read from the symbol table of the executable or
// shared object that contains it (so static and non-exported kernels are named too); the address in
// hex when the object carries no symbols.
std::string symbolize(const void* address);
// The same function's mangled (symbol) name; empty when the object carries no symbols.
std::string mangled_name(const void* address);
// A symbol name demangled (as it is when it is not a C++ name).
std::string demangle(const std::string& symbol);

// A thread-local symbol of a loaded object: its TLS module, offset in the module's TLS block, size.
struct TlsSymbol {
  size_t module;
  size_t offset;
  size_t size;
  std::string name;
};
// Every thread-local symbol of every loaded object with a symbol table, one entry per offset.
std::vector<TlsSymbol> tls_symbols();

// Whether a symbol name is a function whose own name carries the "simt_kernel" ABI tag that
// simt/device.h gives every __global__ function (a tag inside its template arguments, as in a device
// function instantiated with a lambda of a kernel, does not count). Errs towards "no".
bool is_kernel_symbol(const char* name);
// The symbol names of the kernels of every loaded object with a symbol table, sorted, without duplicates.
std::vector<std::string> kernel_symbols();

}  // namespace simt::detail
