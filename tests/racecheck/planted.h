// tests/racecheck/planted.h: the planted-race kernels of planted.cu, for racecheck_main.cpp.
#pragma once

#include "simt/simt.h"

enum class Planted { missing_barrier, lost_update, write_after_read, blocks_same_word, missing_syncwarp, shuffle_reduction };

// Runs one planted race (fixed = false) or its corrected kernel (fixed = true; shuffle_reduction has
// no race either way).
cudaError_t run_planted(Planted which, bool fixed);
