# tests/kernels/gpu_kit_pack.cmake: packs the GPU kit, mra-gpu-kit/{mra-gpu-kit, perf-model.tsv, gpu-check.sh,
# codegen/...}, into ARCHIVE (.tar.xz); the command of the target mra_gpu_kit (tests/kernels/CMakeLists.txt), run in
# WORK (the archive stores the paths relative to it). CODEGEN: the files of codegen/ that merge autotune's winners
# into the tuning table the kit was built with (gpu-check.sh --autotune, where no repository is at hand).
#   cmake -E chdir <WORK> cmake -DEXE=<mra-gpu-kit> -DSCRIPT=tools/gpu-check.sh -DMODEL=<perf-model.tsv>
#         "-DCODEGEN=<file;file...>"
#         [-DSTRIP=strip] -DWORK=<WORK> -DARCHIVE=<out.tar.xz> -P tests/kernels/gpu_kit_pack.cmake
# xz level 3, measured with the xz tool on one core on a 121 MB test executable of the full build (51
# configurations): level 1 36.9 MB in 12.2 s, level 3 19.0 MB in 12.6 s, level 4 18.6 MB in 31.5 s, level 6
# 17.7 MB in 41.9 s; gzip -6 46.4 MB.
cmake_minimum_required(VERSION 3.25)
foreach(var EXE SCRIPT MODEL CODEGEN WORK ARCHIVE)
  if(NOT ${var})
    message(FATAL_ERROR "gpu_kit_pack.cmake: -D${var}= is required")
  endif()
endforeach()
file(REMOVE_RECURSE ${WORK}/mra-gpu-kit)
file(COPY ${EXE} ${SCRIPT} ${MODEL} DESTINATION ${WORK}/mra-gpu-kit)
file(COPY ${CODEGEN} DESTINATION ${WORK}/mra-gpu-kit/codegen)
get_filename_component(exe_name ${EXE} NAME)
# The symbol table is for debuggers; the device code is in sections strip keeps.
if(STRIP)
  execute_process(COMMAND ${STRIP} ${WORK}/mra-gpu-kit/${exe_name} COMMAND_ERROR_IS_FATAL ANY)
endif()
file(ARCHIVE_CREATE OUTPUT ${ARCHIVE}.part PATHS mra-gpu-kit FORMAT gnutar COMPRESSION XZ COMPRESSION_LEVEL 3)
file(RENAME ${ARCHIVE}.part ${ARCHIVE})
