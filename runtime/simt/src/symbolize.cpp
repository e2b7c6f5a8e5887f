// simt/src/symbolize.cpp: ELF symbol-table lookups for mra_simt: kernel names for error messages and
// the thread-local symbols that hold static __shared__ variables. Reads .symtab (falling back to
// .dynsym) of the loaded objects; runs once per kernel or per process, so it favours simplicity
// over speed.
#include "symbolize.h"

#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>

namespace simt::detail {
namespace {

struct Object {
  uintptr_t address = 0;
  uintptr_t bias = 0;
  std::string path;
  bool found = false;
};

std::string object_path(const dl_phdr_info* info) {
  return info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "/proc/self/exe";
}

int find_object(dl_phdr_info* info, size_t, void* data) {
  auto& o = *static_cast<Object*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
    if (ph.p_type == PT_LOAD && o.address >= lo && o.address < lo + ph.p_memsz) {
      o.bias = info->dlpi_addr;
      o.path = object_path(info);
      o.found = true;
      return 1;
    }
  }
  return 0;
}

using SymbolFn = std::function<bool(const ElfW(Sym)&, const char* name)>;

// Calls fn on every symbol of the first symbol table (.symtab, else .dynsym) of the file at `path`
// until it returns true.
void for_each_symbol(const std::string& path, const SymbolFn& fn) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    close(fd);
    return;
  }
  const size_t size = static_cast<size_t>(st.st_size);
  void* mapping = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (mapping == MAP_FAILED) return;
  const char* image = static_cast<const char*>(mapping);
  const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(image);
  if (size >= sizeof(ElfW(Ehdr)) && std::memcmp(image, ELFMAG, SELFMAG) == 0 && eh->e_shoff != 0 &&
      eh->e_shoff + size_t{eh->e_shnum} * sizeof(ElfW(Shdr)) <= size) {
    const auto* sections = reinterpret_cast<const ElfW(Shdr)*>(image + eh->e_shoff);
    bool done = false;
    for (unsigned wanted : {SHT_SYMTAB, SHT_DYNSYM}) {
      for (unsigned i = 0; i < eh->e_shnum && !done; ++i) {
        const ElfW(Shdr)& sh = sections[i];
        if (sh.sh_type != wanted || sh.sh_link >= eh->e_shnum) continue;
        const ElfW(Shdr)& strtab = sections[sh.sh_link];
        if (sh.sh_offset + sh.sh_size > size || strtab.sh_offset + strtab.sh_size > size) continue;
        const auto* syms = reinterpret_cast<const ElfW(Sym)*>(image + sh.sh_offset);
        const size_t count = sh.sh_size / sizeof(ElfW(Sym));
        for (size_t k = 0; k < count && !done; ++k)
          if (syms[k].st_name < strtab.sh_size) done = fn(syms[k], image + strtab.sh_offset + syms[k].st_name);
        done = true;  // one table is enough
      }
      if (done) break;
    }
  }
  munmap(mapping, size);
}

struct Module {
  std::string path;
  size_t id;
};

int collect_paths(dl_phdr_info* info, size_t, void* data) {
  static_cast<std::vector<std::string>*>(data)->push_back(object_path(info));
  return 0;
}

int collect_tls_modules(dl_phdr_info* info, size_t, void* data) {
  if (info->dlpi_tls_modid != 0)
    static_cast<std::vector<Module>*>(data)->push_back({object_path(info), info->dlpi_tls_modid});
  return 0;
}

}  // namespace

std::string mangled_name(const void* address) {
  Object o;
  o.address = reinterpret_cast<uintptr_t>(address);
  dl_iterate_phdr(&find_object, &o);
  if (!o.found) return {};
  const uintptr_t offset = o.address - o.bias;
  std::string name;
  for_each_symbol(o.path, [&](const ElfW(Sym)& s, const char* n) {
    if (ELF64_ST_TYPE(s.st_info) != STT_FUNC) return false;
    if (offset < s.st_value || offset >= s.st_value + (s.st_size ? s.st_size : 1)) return false;
    name = n;
    return true;
  });
  return name;
}

std::string demangle(const std::string& symbol) {
  int status = 0;
  char* demangled = abi::__cxa_demangle(symbol.c_str(), nullptr, nullptr, &status);
  std::string name = status == 0 && demangled ? demangled : symbol;
  std::free(demangled);
  return name;
}

std::string symbolize(const void* address) {
  std::string name = mangled_name(address);
  if (name.empty()) {
    char fallback[32];
    std::snprintf(fallback, sizeof fallback, "%p", address);
    return fallback;
  }
  name = demangle(name);
  // The tag is the emulator's marker, not part of the kernel's name as the source spells it.
  static constexpr char kTag[] = "[abi:simt_kernel]";
  for (size_t at = name.find(kTag); at != std::string::npos; at = name.find(kTag, at)) name.erase(at, sizeof kTag - 1);
  return name;
}

std::vector<TlsSymbol> tls_symbols() {
  std::vector<Module> modules;
  dl_iterate_phdr(&collect_tls_modules, &modules);
  std::vector<TlsSymbol> all;
  for (const Module& m : modules)
    for_each_symbol(m.path, [&](const ElfW(Sym)& s, const char* n) {
      if (ELF64_ST_TYPE(s.st_info) == STT_TLS && s.st_shndx != SHN_UNDEF)
        all.push_back({m.id, static_cast<size_t>(s.st_value), static_cast<size_t>(s.st_size), n});
      return false;
    });
  std::sort(all.begin(), all.end(), [](const TlsSymbol& a, const TlsSymbol& b) {
    if (a.module != b.module) return a.module < b.module;
    return a.offset != b.offset ? a.offset < b.offset : a.size > b.size;  // the sized one first
  });
  all.erase(std::unique(all.begin(), all.end(),
                        [](const TlsSymbol& a, const TlsSymbol& b) { return a.module == b.module && a.offset == b.offset; }),
            all.end());
  return all;
}

bool is_kernel_symbol(const char* name) {
  // _Z [N] [L] then source names (<length><identifier>), each with its ABI tags (B<length><tag>): a
  // kernel is a namespace-scope function, so its own name is the last of these and carries the tag.
  // Anything else before the tag (template arguments, a local or substituted name) means no.
  static constexpr char kTag[] = "simt_kernel";
  const char* c = name;
  if (std::strncmp(c, "_Z", 2) != 0) return false;
  c += 2;
  if (*c == 'N') ++c;
  if (*c == 'L') ++c;
  auto read_length = [&c]() -> size_t {
    size_t n = 0;
    while (*c >= '0' && *c <= '9') n = n * 10 + static_cast<size_t>(*c++ - '0');
    return n;
  };
  while (*c >= '1' && *c <= '9') {
    const size_t n = read_length();
    if (std::strlen(c) < n) return false;
    c += n;
    bool tagged = false;
    while (*c == 'B') {
      ++c;
      const size_t t = read_length();
      if (t == 0 || std::strlen(c) < t) return false;
      tagged = tagged || (t == sizeof kTag - 1 && std::strncmp(c, kTag, t) == 0);
      c += t;
    }
    // The last component: template arguments, the end of a nested name, or the parameter types follow.
    if (tagged) return !(*c >= '0' && *c <= '9');
  }
  return false;
}

std::vector<std::string> kernel_symbols() {
  std::vector<std::string> paths;
  dl_iterate_phdr(&collect_paths, &paths);
  std::vector<std::string> kernels;
  for (const std::string& path : paths)
    for_each_symbol(path, [&](const ElfW(Sym)& s, const char* n) {
      if (ELF64_ST_TYPE(s.st_info) == STT_FUNC && s.st_shndx != SHN_UNDEF && is_kernel_symbol(n)) kernels.emplace_back(n);
      return false;
    });
  std::sort(kernels.begin(), kernels.end());
  kernels.erase(std::unique(kernels.begin(), kernels.end()), kernels.end());
  return kernels;
}

}  // namespace simt::detail
