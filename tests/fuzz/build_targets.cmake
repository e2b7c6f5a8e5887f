# tests/fuzz/build_targets.cmake: configures and builds the fuzz targets (tests/fuzz/targets) with clang++;
# the CTest fixture `fuzz_build` of tests/fuzz/CMakeLists.txt runs it:
#   cmake -DSOURCE=tests/fuzz/targets -DBINARY=<dir> -DCXX=/usr/bin/clang++ -P tests/fuzz/build_targets.cmake
if(NOT CXX)
  message(FATAL_ERROR "clang++ not found: the fuzz targets need clang and libclang-rt (run tools/bootstrap.sh)")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE} -B ${BINARY} -DCMAKE_CXX_COMPILER=${CXX}
                COMMAND_ERROR_IS_FATAL ANY)
cmake_host_system_information(RESULT jobs QUERY NUMBER_OF_LOGICAL_CORES)
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY} -j ${jobs} COMMAND_ERROR_IS_FATAL ANY)
