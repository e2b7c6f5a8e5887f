// tools/mra-ref/commands.h: the subcommands of mra-ref. Each returns the process exit status and reports
// user errors by throwing cli::Failure. Tested through the binary by tests/cli and tests/interop.
#pragma once

#include <string>

#include "cli.h"

namespace mra::cli {

int run_attend(const Options& options, const std::string& program);
int run_grad(const Options& options, const std::string& program);
int run_exact(const Options& options, const std::string& program);
int run_select(const Options& options, const std::string& program);
int run_compare(const Options& options, const std::string& program);
int run_demo(const Options& options, const std::string& program);
int run_bench(const Options& options, const std::string& program);
int run_plot(const Options& options, const std::string& program);  // plot.cpp

}  // namespace mra::cli
