# tests/kernels/gpu_kit_test.cmake: the CTest test nvcc.gpu_kit (tests/kernels/CMakeLists.txt). Inspects the bundle
# a GPU machine without a CUDA toolkit receives, mra-gpu-kit.tar.xz, which the default build packs (target
# mra_gpu_kit; building it here would relink in the build tree while the tests beside this one run its programs):
#   - the archive is there and no older than the executable it packs;
#   - it is at most 60 MiB;
#   - it unpacks to mra-gpu-kit/{mra-gpu-kit, perf-model.tsv, gpu-check.sh} and codegen/{tuning,manifest}.toml,
#     generate.py and apply_tuning.py (the merge of autotune's winners where no repository is at hand);
#   - the executable needs no shared library but glibc's, libstdc++ and libgcc_s (no libcudart: the driver's
#     libcuda.so.1 is opened by the static CUDA runtime when it starts), and no glibc or libstdc++ newer than
#     Ubuntu 22.04's (glibc 2.35, GLIBCXX 3.4.30), the oldest system the kit is for;
#   - `mra-gpu-kit list` runs without a GPU and lists exactly the configurations this build selected, and exactly
#     the tuning candidates generate.py --variants rendered for them (CANDIDATES; compiled by nvcc into the kit);
#     the filters of kernels.cuda and backward.cuda each select cases, and together every case once; a bad
#     argument is refused with exit status 2 (bench, stages and autotune);
#   - `mra-gpu-kit stages --plan 4096` runs without a GPU from the unpacked kit, finds perf-model.tsv next to itself
#     and prints the model's estimate beside every stage of the case (pool, select L1, coarse L1, attend) and its
#     total, the measured columns "-"; a model file that cannot be read is refused with exit status 2 naming it;
#     without a GPU, `stages` (timing) exits with status 2 and one line, "no CUDA device";
#   - where there is no GPU, `mra-gpu-kit autotune` exits with status 2 and one line, "no CUDA device", writing no
#     winners file, and the packed gpu-check.sh runs from the kit (no cmake, no nvcc), with and without --autotune,
#     and fails naming the missing device, every command it calls present (without nvidia-smi it says so in one
#     line);
#   - gpu-check.sh --autotune from a kit whose executable is STANDIN (gpu_kit_standin.sh: one winner, no GPU)
#     merges the winner into <logs>/tuning.toml with the packed apply_tuning.py, the kit's own table unchanged.
#   cmake -DEXE=<mra-gpu-kit> -DARCHIVE=<build>/mra-gpu-kit.tar.xz -DWORK=<dir> -DEXPECTED=<config,config,...>
#         "-DCANDIDATES=<variant;variant;...>" -DSTANDIN=tests/kernels/gpu_kit_standin.sh -DREADELF=readelf
#         -DFORWARD=<doctest filter of kernels.cuda> -DBACKWARD=<that of backward.cuda>
#         -P tests/kernels/gpu_kit_test.cmake
cmake_minimum_required(VERSION 3.25)
foreach(var EXE ARCHIVE WORK EXPECTED STANDIN READELF FORWARD BACKWARD)
  if(NOT ${var})
    message(FATAL_ERROR "gpu_kit_test.cmake: -D${var}= is required")
  endif()
endforeach()

if(NOT EXISTS ${ARCHIVE})
  message(FATAL_ERROR "no ${ARCHIVE}: the default build packs it (target mra_gpu_kit); build first")
endif()
if(${EXE} IS_NEWER_THAN ${ARCHIVE})
  file(TIMESTAMP ${EXE} exe_time)
  file(TIMESTAMP ${ARCHIVE} archive_time)
  message(FATAL_ERROR "${ARCHIVE} (${archive_time}) is older than ${EXE} (${exe_time}): build the target "
                      "mra_gpu_kit (part of the default build) again")
endif()

file(SIZE ${ARCHIVE} size)
math(EXPR limit "60 * 1024 * 1024")
math(EXPR size_kib "${size} / 1024")
message(STATUS "mra-gpu-kit.tar.xz: ${size} bytes (${size_kib} KiB), limit ${limit}")
if(size GREATER limit)
  message(FATAL_ERROR "mra-gpu-kit.tar.xz is ${size} bytes, over the kit's limit of 60 MiB (${limit} bytes)")
endif()

file(REMOVE_RECURSE ${WORK})
file(ARCHIVE_EXTRACT INPUT ${ARCHIVE} DESTINATION ${WORK})
set(kit ${WORK}/mra-gpu-kit)
foreach(file mra-gpu-kit perf-model.tsv gpu-check.sh codegen/tuning.toml codegen/manifest.toml codegen/generate.py
             codegen/apply_tuning.py)
  if(NOT EXISTS ${kit}/${file})
    message(FATAL_ERROR "the kit holds no mra-gpu-kit/${file}")
  endif()
endforeach()

# The shared libraries the executable asks the loader for: glibc's and the C++ runtime, on every Linux GPU machine.
execute_process(COMMAND ${READELF} -d ${kit}/mra-gpu-kit OUTPUT_VARIABLE dynamic RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "readelf -d mra-gpu-kit failed")
endif()
string(REGEX MATCHALL "\\(NEEDED\\)[^\n]*\\[[^]\n]+\\]" needed_lines "${dynamic}")
set(allowed libc.so.6 libm.so.6 libdl.so.2 libpthread.so.0 librt.so.1 ld-linux-x86-64.so.2 ld-linux-aarch64.so.1
            libstdc++.so.6 libgcc_s.so.1)
set(needed)
foreach(line IN LISTS needed_lines)
  string(REGEX REPLACE ".*\\[([^]]+)\\]$" "\\1" library "${line}")
  list(APPEND needed ${library})
  if(NOT library IN_LIST allowed)
    message(FATAL_ERROR "mra-gpu-kit needs ${library}, which a machine with only the NVIDIA driver may lack "
                        "(allowed: ${allowed})")
  endif()
endforeach()
if(NOT needed)
  message(FATAL_ERROR "readelf -d mra-gpu-kit lists no NEEDED library: not a dynamic executable as built")
endif()
# The newest glibc and libstdc++ symbol versions it needs: the oldest system it runs on.
execute_process(COMMAND ${READELF} -V ${kit}/mra-gpu-kit OUTPUT_VARIABLE versions)
set(newest)
foreach(library GLIBC GLIBCXX)
  string(REGEX MATCHALL "${library}_[0-9]+\\.[0-9.]*[0-9]" found "${versions}")
  list(REMOVE_DUPLICATES found)
  list(SORT found COMPARE NATURAL ORDER DESCENDING)
  list(GET found 0 top)
  list(APPEND newest ${top})
endforeach()
message(STATUS "mra-gpu-kit needs: ${needed}; newest symbol versions: ${newest}")
list(GET newest 0 glibc)
list(GET newest 1 glibcxx)
string(REPLACE "GLIBC_" "" glibc "${glibc}")
string(REPLACE "GLIBCXX_" "" glibcxx "${glibcxx}")
if(glibc VERSION_GREATER 2.35 OR glibcxx VERSION_GREATER 3.4.30)
  message(FATAL_ERROR "mra-gpu-kit needs glibc ${glibc} and GLIBCXX ${glibcxx}: newer than Ubuntu 22.04 has (2.35, "
                      "3.4.30), so the kit would not start there")
endif()

execute_process(COMMAND ${kit}/mra-gpu-kit list RESULT_VARIABLE rc OUTPUT_VARIABLE listed ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "mra-gpu-kit list exited with ${rc}:\n${listed}${err}")
endif()
message(STATUS "mra-gpu-kit list:\n${listed}")
string(REGEX MATCHALL "\n  mra_fwd_[a-z0-9_]+" configs "${listed}")
list(TRANSFORM configs STRIP)
string(REPLACE "," ";" expected "${EXPECTED}")
if(NOT configs STREQUAL expected)
  message(FATAL_ERROR "mra-gpu-kit lists the configurations '${configs}', the build selected '${expected}'")
endif()
# The tuning candidates: those generate.py --variants rendered when the build was configured, each compiled.
if(CANDIDATES MATCHES "^generate.py --variants failed")
  message(FATAL_ERROR "the kit has no tuning candidates: ${CANDIDATES}")
endif()
string(REGEX MATCHALL "\n  mra_tune_[a-z0-9_]+" candidates "${listed}")
list(TRANSFORM candidates STRIP)
if(NOT listed MATCHES "\nautotune candidates: [0-9]+\n" OR NOT "${candidates}" STREQUAL "${CANDIDATES}")
  message(FATAL_ERROR "mra-gpu-kit lists the tuning candidates '${candidates}', generate.py rendered '${CANDIDATES}'")
endif()

# The filters of the CTest tests kernels.cuda and backward.cuda each select cases, and together every case once.
set(counts)
foreach(filter "" "${FORWARD}" "${BACKWARD}")
  execute_process(COMMAND ${kit}/mra-gpu-kit check --count ${filter} RESULT_VARIABLE rc OUTPUT_VARIABLE out)
  if(NOT rc EQUAL 0 OR NOT out MATCHES "passing the current filters: ([0-9]+)" OR CMAKE_MATCH_1 EQUAL 0)
    message(FATAL_ERROR "mra-gpu-kit check --count ${filter}: exit status ${rc}, no case counted:\n${out}")
  endif()
  list(APPEND counts ${CMAKE_MATCH_1})
endforeach()
list(GET counts 0 all)
list(GET counts 1 forward)
list(GET counts 2 backward)
math(EXPR both "${forward} + ${backward}")
message(STATUS "mra-gpu-kit check: ${all} cases, ${forward} for kernels.cuda, ${backward} for backward.cuda")
if(NOT both EQUAL all)
  message(FATAL_ERROR "kernels.cuda (${FORWARD}) and backward.cuda (${BACKWARD}) select ${forward} + ${backward} "
                      "cases of ${all}")
endif()

foreach(mode bench stages autotune)
  execute_process(COMMAND ${kit}/mra-gpu-kit ${mode} 8k RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 2 OR NOT err STREQUAL "mra-gpu-kit ${mode}: N must be a positive integer, got '8k'\n")
    message(FATAL_ERROR "mra-gpu-kit ${mode} 8k: expected exit status 2 and one line naming N, got ${rc}:\n${err}")
  endif()
endforeach()

# The stages table without timings, from the unpacked kit (run elsewhere than its folder: it finds perf-model.tsv
# next to itself): each stage of the case with the model's estimate (a number) in both estimate columns where the
# model has one (coarse L1: MRA only; the exact run has no coarse components), its total, the measured cells "-".
execute_process(COMMAND ${kit}/mra-gpu-kit stages --plan 4096 RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err WORKING_DIRECTORY ${WORK})
set(number "[0-9][0-9.e+]*")
foreach(row "pool \\| - \\| ${number} \\| - \\| ${number}" "select L1 \\| - \\| ${number} \\| - \\| ${number}"
            "coarse L1 \\| - \\| ${number} \\| - \\| -" "attend \\| - \\| ${number} \\| - \\| ${number}"
            "\\*\\*total\\*\\* \\(no observer\\) \\| - \\| ${number} \\| - \\| ${number}")
  if(NOT rc EQUAL 0 OR NOT out MATCHES "\n\\| ${row} \\|\n")
    message(FATAL_ERROR "mra-gpu-kit stages --plan 4096: exit status ${rc}, no row matching '| ${row} |':\n${out}${err}")
  endif()
endforeach()
message(STATUS "mra-gpu-kit stages --plan 4096:\n${out}")
execute_process(COMMAND ${kit}/mra-gpu-kit stages --plan --model ${WORK}/none.tsv 4096 RESULT_VARIABLE rc
                OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(NOT rc EQUAL 2 OR NOT err STREQUAL "mra-gpu-kit stages: the model's estimates: cannot read '${WORK}/none.tsv'\n")
  message(FATAL_ERROR "mra-gpu-kit stages --model <missing file>: expected exit status 2 and one line naming it, got "
                      "${rc}:\n${err}")
endif()

# Without a device the stages' timing refuses to start, and the packed script must run from the kit and fail at the
# cross-checks; on a GPU machine this would be the whole check (minutes), which tools/gpu-check.sh is for.
if(listed MATCHES "\ndevices: 0")
  execute_process(COMMAND ${kit}/mra-gpu-kit stages 1024 RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 2 OR NOT err STREQUAL "mra-gpu-kit stages: no CUDA device\n")
    message(FATAL_ERROR "mra-gpu-kit stages without a GPU: expected exit status 2 and one line 'no CUDA device', "
                        "got ${rc}:\n${out}${err}")
  endif()
  execute_process(COMMAND ${kit}/mra-gpu-kit autotune --out ${WORK}/winners.toml RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 2 OR NOT err STREQUAL "mra-gpu-kit autotune: no CUDA device\n" OR EXISTS ${WORK}/winners.toml)
    message(FATAL_ERROR "mra-gpu-kit autotune without a GPU: expected exit status 2, one line 'no CUDA device' and "
                        "no winners file, got ${rc}:\n${out}${err}")
  endif()
  foreach(option "" --autotune)
    execute_process(COMMAND bash ${kit}/gpu-check.sh ${option} RESULT_VARIABLE rc OUTPUT_VARIABLE out
                    ERROR_VARIABLE err WORKING_DIRECTORY ${WORK})
    if(rc EQUAL 0 OR NOT out MATCHES "gpu-check: from the bundle" OR NOT out MATCHES "gpu-check: no CUDA device found"
       OR out MATCHES "configuring and building" OR "${out}${err}" MATCHES "command not found")
      message(FATAL_ERROR "gpu-check.sh ${option} run from the kit without a GPU: expected a failure naming the "
                          "missing device, got exit status ${rc}:\n${out}${err}")
    endif()
    message(STATUS "gpu-check.sh ${option} from the kit without a GPU failed as it must (exit status ${rc})")
  endforeach()
endif()

# The merge of `gpu-check.sh --autotune` from a kit, with a stand-in for the executable that writes one winner: the
# merged table goes to the log folder, with the winner, and the kit's own table stays as packed.
set(standin ${WORK}/standin)
file(MAKE_DIRECTORY ${standin})
file(COPY ${kit}/gpu-check.sh ${kit}/codegen DESTINATION ${standin})
file(COPY_FILE ${STANDIN} ${standin}/mra-gpu-kit)
file(CHMOD ${standin}/mra-gpu-kit PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE)
execute_process(COMMAND bash ${standin}/gpu-check.sh --autotune RESULT_VARIABLE rc OUTPUT_VARIABLE out
                ERROR_VARIABLE err WORKING_DIRECTORY ${WORK})
set(merged ${WORK}/gpu-check-logs/tuning.toml)
if(EXISTS ${merged})
  file(READ ${merged} merged_text)
  file(READ ${kit}/codegen/tuning.toml packed_text)
  file(READ ${standin}/codegen/tuning.toml standin_text)
endif()
if(NOT rc EQUAL 0 OR NOT EXISTS ${merged} OR NOT out MATCHES "the merged tuning table is ${merged}"
   OR NOT merged_text MATCHES "\n\\[name\\.\"mra_fwd_r32x1_d64_bf16\"\\]\n# autotune \\(Stand-in GPU[^\n]*\nkey_tile = 64\n$"
   OR NOT standin_text STREQUAL packed_text)
  message(FATAL_ERROR "gpu-check.sh --autotune from a kit (stand-in executable): expected the winner merged into "
                      "${merged}, got exit status ${rc}:\n${out}${err}")
endif()
message(STATUS "gpu-check.sh --autotune from a kit merged a stand-in's winner into ${merged}")
