# tests/consumer-package/run.cmake: the test kernels.package_consumer (cmake -P): installs the build BUILD into
# WORK/prefix, configures and builds tests/consumer-package (SOURCE) against it with find_package(mra), and runs
# its two programs. Fails on the first step that fails, with that step's output.
#   cmake -DBUILD=build -DWORK=/tmp/w -DSOURCE=tests/consumer-package -DGENERATOR="Unix Makefiles"
#         -DEXPECTED=name,name -P tests/consumer-package/run.cmake
function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "package consumer: ${what} failed (${rc}):\n${out}")
  endif()
  message(STATUS "package consumer: ${what}: ok")
endfunction()

# The consumer program runs one configuration; without it the test is skipped (SKIP_REGULAR_EXPRESSION of the
# test, tests/kernels/CMakeLists.txt), never passed.
string(REPLACE "," ";" built "${EXPECTED}")
list(FIND built mra_fwd_r32x1_d64_f32 at)
if(at EQUAL -1)
  message(STATUS "package consumer: skipped: needs mra_fwd_r32x1_d64_f32, which this build leaves out (MRA_KERNELS)")
  return()
endif()

file(REMOVE_RECURSE ${WORK})
step("install" ${CMAKE_COMMAND} --install ${BUILD} --prefix ${WORK}/prefix)
step("configure" ${CMAKE_COMMAND} -S ${SOURCE} -B ${WORK}/build -G ${GENERATOR} -DCMAKE_BUILD_TYPE=Release
     -DCMAKE_PREFIX_PATH=${WORK}/prefix -DMRA_EXPECTED=${EXPECTED})
step("build" ${CMAKE_COMMAND} --build ${WORK}/build)
step("run, static" ${WORK}/build/consumer_static)
step("run, libmra.so" ${WORK}/build/consumer_shared)
