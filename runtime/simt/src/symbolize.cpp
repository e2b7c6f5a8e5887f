// simt/src/symbolize.cpp: address-to-kernel-name lookup for mra_simt's error messages. Reads the ELF
// .symtab (falling back to .dynsym) of the loaded object that contains the address; only runs when a
// launch fails, so it favours simplicity over speed.
#include "symbolize.h"

#include <cxxabi.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace simt::detail {
namespace {

struct Object {
  uintptr_t address = 0;
  uintptr_t bias = 0;
  std::string path;
  bool found = false;
};

int find_object(dl_phdr_info* info, size_t, void* data) {
  auto& o = *static_cast<Object*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    const uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
    if (ph.p_type == PT_LOAD && o.address >= lo && o.address < lo + ph.p_memsz) {
      o.bias = info->dlpi_addr;
      o.path = info->dlpi_name && *info->dlpi_name ? info->dlpi_name : "/proc/self/exe";
      o.found = true;
      return 1;
    }
  }
  return 0;
}

std::string lookup(const char* image, size_t size, uintptr_t offset) {
  if (size < sizeof(ElfW(Ehdr)) || std::memcmp(image, ELFMAG, SELFMAG) != 0) return {};
  const auto* eh = reinterpret_cast<const ElfW(Ehdr)*>(image);
  if (eh->e_shoff == 0 || eh->e_shoff + size_t{eh->e_shnum} * sizeof(ElfW(Shdr)) > size) return {};
  const auto* sections = reinterpret_cast<const ElfW(Shdr)*>(image + eh->e_shoff);
  for (unsigned wanted : {SHT_SYMTAB, SHT_DYNSYM}) {
    for (unsigned i = 0; i < eh->e_shnum; ++i) {
      const ElfW(Shdr)& sh = sections[i];
      if (sh.sh_type != wanted || sh.sh_link >= eh->e_shnum) continue;
      const ElfW(Shdr)& strtab = sections[sh.sh_link];
      if (sh.sh_offset + sh.sh_size > size || strtab.sh_offset + strtab.sh_size > size) continue;
      const auto* syms = reinterpret_cast<const ElfW(Sym)*>(image + sh.sh_offset);
      const size_t count = sh.sh_size / sizeof(ElfW(Sym));
      for (size_t k = 0; k < count; ++k) {
        const ElfW(Sym)& s = syms[k];
        if (ELF64_ST_TYPE(s.st_info) != STT_FUNC || s.st_name >= strtab.sh_size) continue;
        if (offset >= s.st_value && offset < s.st_value + (s.st_size ? s.st_size : 1))
          return image + strtab.sh_offset + s.st_name;
      }
    }
  }
  return {};
}

}  // namespace

std::string symbolize(const void* address) {
  char fallback[32];
  std::snprintf(fallback, sizeof fallback, "%p", address);
  Object o;
  o.address = reinterpret_cast<uintptr_t>(address);
  dl_iterate_phdr(&find_object, &o);
  if (!o.found) return fallback;
  const int fd = open(o.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fallback;
  struct stat st;
  std::string name;
  if (fstat(fd, &st) == 0 && st.st_size > 0) {
    const size_t size = static_cast<size_t>(st.st_size);
    void* image = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (image != MAP_FAILED) {
      name = lookup(static_cast<const char*>(image), size, o.address - o.bias);
      munmap(image, size);
    }
  }
  close(fd);
  if (name.empty()) return fallback;
  int status = 0;
  char* demangled = abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status);
  if (status == 0 && demangled) name = demangled;
  std::free(demangled);
  return name;
}

}  // namespace simt::detail
