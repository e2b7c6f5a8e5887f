// tools/mra-ref/main.cpp: mra-ref, the command-line face of the reference MRA attention (reference/).
//   mra-ref --help            mra-ref <command> --help
// Exit status: 0 success, 1 `compare` outside its tolerance (or a NaN where the other file has none), 2 any
// error (one line on stderr naming the file or option at fault, and no output file); a signal that ends a
// run removes its temporary file (output.h). Tested by tests/cli and tests/interop.
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "cli.h"
#include "commands.h"
#include "mra/reference.h"

namespace {

using mra::cli::Options;

constexpr std::string_view kInputs =
    "\nInputs:\n"
    "  --q Q.npy --k K.npy --v V.npy   float16/32/64 .npy (versions 1-3, little-endian, C order), shaped\n"
    "                                  [N, D], [H, N, D] or [B, H, N, D]; all three of one rank, K and V of one\n"
    "                                  shape, Q with the B and D of K (Nq may differ from Nk). K and V with\n"
    "                                  fewer heads than Q are grouped K/V heads (GQA; MQA with one): their\n"
    "                                  count must divide Q's, and query head h uses K/V head h / (H / Hkv)\n"
    "                                  (docs/semantics.md §8). Every value must be finite, and small enough\n"
    "                                  that float32 logits and sums cannot overflow (docs/errors.md). A file\n"
    "                                  named - is standard input (one option's).\n"
    "  --layout bhnd|bnhd              the order of the files' dimensions: bhnd [B, H, N, D] (default) or\n"
    "                                  bnhd [B, N, H, D] (FlashAttention's; [N, H, D] without B), for every\n"
    "                                  input and output (dout, dq, dk, dv too).\n"
    "  --mask M.npy                    self-attention mask [N] or [B, N]: bool, integer or float, 1 = real\n"
    "                                  token, 0 = padding; masks queries and keys alike and needs Nq == Nk.\n"
    "  --key-mask M.npy                key mask [Nk] or [B, Nk] (cross-attention; not with --mask).\n"
    "  --query-mask M.npy              query mask [Nq] or [B, Nq] (cross-attention; not with --mask).\n"
    "  --scale S                       logit scale (default 1/sqrt(D)).\n"
    "  --causal                        causal attention: query i sees key j only when j <= i + Nk - Nq\n"
    "                                  (docs/semantics.md §9); MRA then uses --policy row.\n"
    "\nFiles: every file argument may also name an array of an .npz or safetensors file:\n"
    "  FILE.npy                        the .npy file's array\n"
    "  FILE.npz[:NAME]                 array NAME of an archive (np.savez, np.savez_compressed)\n"
    "  FILE.safetensors[:NAME]         tensor NAME (F64, F32, F16, BF16; masks also BOOL and integers)\n"
    "  Without :NAME an option reads the array named after it: --q q, --k k, --v v, --mask mask,\n"
    "  --key-mask key_mask, --query-mask query_mask.\n"
    "  --inputs FILE                   FILE.npz or FILE.safetensors holding q, k, v (and mask, key_mask,\n"
    "                                  query_mask when present); --q etc. given as well take precedence.\n"
    "  -o OUT                          OUT.npz or OUT.safetensors hold the output as array 'out' (or\n"
    "                                  OUT.npz:NAME); any other name is written as .npy.\n";

constexpr std::string_view kMra =
    "\nMRA configuration (docs/semantics.md):\n"
    "  --scales S1,...,1               block sides, decreasing, each dividing the one before, ending at 1,\n"
    "                                  at most 1048576 (default 32,1: MRA-2).\n"
    "  --budget N[,N...]               blocks refined at each step, one value per step (scales minus one),\n"
    "                                  per batch and head (per block row with --policy row); a budget above\n"
    "                                  the number of candidates refines all of them (docs/semantics.md §2.4).\n"
    "  --blocks-per-row R              budgets of R blocks per block row at every level, capped at what\n"
    "                                  exists (default 4; not with --budget).\n"
    "  --policy global|row             global: each level's budget goes to the best blocks of the whole (batch,\n"
    "                                  head); row: every block row refines its own best --budget blocks\n"
    "                                  (docs/semantics.md §10). Default global; row with --causal, which\n"
    "                                  refuses global.\n"
    "  --selection head|group          with K and V of fewer heads than Q: head, every query head selects its\n"
    "                                  own blocks (default); group, the heads sharing a K/V head share one\n"
    "                                  selection, ranked by their mean query, budgets per group\n"
    "                                  (docs/semantics.md §8.4). Without grouped heads both are the same.\n"
    "  --mode full|sparse              full: unrefined blocks count at low resolution (MRA-L);\n"
    "                                  sparse: only full-resolution entries count (MRA-L-s). Default full.\n"
    "  --prior-first N                 prefer the first N block rows and columns (global tokens).\n"
    "  --prior-diagonal N              prefer a diagonal band of N blocks.\n";

constexpr std::string_view kStorage =
    "  --storage f32|f16|bf16          with --backend emulated: the kernels' storage type (default f32). Inputs\n"
    "                                  (and dout) are rounded to it, to nearest even, before the kernels read\n"
    "                                  them (a value beyond float16's 65504 is refused); the kernels store their\n"
    "                                  results in it, written as float32 (exactly). 16-bit storage runs the\n"
    "                                  tensor-core kernels (docs/kernels.md, precision contract).\n";

constexpr std::string_view kOutput =
    "\nOutput and progress:\n"
    "  -o OUT                          a file (written to a temporary and renamed, keeping an existing file's\n"
    "                                  permissions), a device or FIFO (written through, e.g. /dev/null), or -\n"
    "                                  for stdout (the summary line then goes to stderr). Checked before any\n"
    "                                  work; an input file or a read-only file is refused. Options also take\n"
    "                                  --name=value; -- ends the options.\n"
    "  --quiet                         no progress line (shown on stderr only when it is a terminal).\n";

struct Command {
  std::string_view name;
  std::string_view summary;
  std::string usage;
  std::vector<std::string> value_flags;
  std::vector<std::string> switches;
  int (*run)(const Options&, const std::string&);
};

const std::vector<std::string> kInputFlags{"--q",     "--k",     "--v",      "--mask", "--key-mask",
                                           "--query-mask", "--scale", "--inputs", "--layout"};
const std::vector<std::string> kMraFlags{"--q",           "--k",          "--v",           "--mask",
                                         "--key-mask",    "--query-mask", "--scale",       "--scales",
                                         "--budget",      "--blocks-per-row", "--mode",    "--prior-first",
                                         "--prior-diagonal", "--policy", "--selection", "--inputs", "--layout"};

std::vector<std::string> with(std::vector<std::string> flags, std::vector<std::string> more) {
  flags.insert(flags.end(), more.begin(), more.end());
  return flags;
}

const std::vector<Command>& commands() {
  static const std::vector<Command> table{
      {"attend", "MRA attention of .npy, .npz or safetensors inputs into a float32 array",
       "usage: mra-ref attend --q Q.npy --k K.npy --v V.npy [options] -o OUT.npy\n"
       "Computes MRA attention and writes it as float32, shaped like Q.\n" +
           std::string(kInputs) + std::string(kMra) +
           "\nBackend:\n"
           "  --backend reference|emulated    reference: the C++ reference (default); emulated: the generated CUDA\n"
           "                                  kernels run on the CPU by the SIMT emulation, for the\n"
           "                                  configurations docs/kernels.md lists.\n" + std::string(kStorage) +
           std::string(kOutput),
       with(kMraFlags, {"-o", "--backend", "--storage"}), {"--quiet", "--causal"}, mra::cli::run_attend},
      {"grad", "gradients of MRA attention (the backward pass) into float32 arrays",
       "usage: mra-ref grad --q Q.npy --k K.npy --v V.npy --dout DOUT.npy [options] --dq DQ.npy --dk DK.npy\n"
       "                    --dv DV.npy\n"
       "Computes the gradients of L = sum(DOUT * out) with respect to Q, K and V, out being MRA attention with the\n"
       "options of attend and its selection held fixed (docs/semantics.md §7), and writes them as float32: DQ\n"
       "shaped like Q, DK and DV like K. DOUT is a float file shaped like Q (array 'dout' of a container); its\n"
       "rows of masked queries are not used. The three outputs must be different files (in a container, the\n"
       "arrays are called dq, dk and dv).\n" +
           std::string(kInputs) + std::string(kMra) +
           "\nBackend:\n"
           "  --backend reference|emulated    reference: the C++ reference backward (default); emulated: the generated\n"
           "                                  forward and backward kernels run on the CPU by the SIMT emulation.\n" +
           std::string(kStorage) + std::string(kOutput),
       with(kMraFlags, {"--dout", "--dq", "--dk", "--dv", "--backend", "--storage"}), {"--quiet", "--causal"},
       mra::cli::run_grad},
      {"exact", "exact softmax attention of .npy, .npz or safetensors inputs",
       "usage: mra-ref exact --q Q.npy --k K.npy --v V.npy [--mask M.npy] [--scale S] [--causal] -o OUT.npy\n"
       "Computes exact softmax attention and writes it as float32, shaped like Q.\n" + std::string(kInputs) +
           std::string(kOutput),
       with(kInputFlags, {"-o"}), {"--quiet", "--causal"}, mra::cli::run_exact},
      {"select", "the blocks MRA refines, as JSON",
       "usage: mra-ref select --q Q.npy --k K.npy --v V.npy [options] [-o OUT.json]\n"
       "Prints (or writes) the selection of the reference as JSON (the kernels select the same blocks): the\n"
       "scales and budgets, then for every batch b, head h and refinement step `level` (1 ... L-1, as\n"
       "docs/semantics.md numbers them) the block side, the number of key blocks nk_blocks, and the refined\n"
       "blocks as sorted flat indices r * nk_blocks + c. Takes the inputs and MRA options of attend (not\n"
       "--backend).\n" +
           std::string(kInputs) + std::string(kMra),
       with(kMraFlags, {"-o", "--backend"}), {"--causal"}, mra::cli::run_select},
      {"compare", "error between two arrays (.npy, .npz, safetensors)",
       "usage: mra-ref compare A.npy B.npy [--atol A] [--rtol R] [--per-head]\n"
       "Prints the relative Frobenius error ||A-B||/||B|| and the largest absolute error with its index\n"
       "([b, h, n, d] for rank-4 files). With --atol and/or --rtol (default 0 each), also checks\n"
       "|a - b| <= atol + rtol * |b| for every element, prints PASS or FAIL with the largest fraction of the\n"
       "tolerance used, and exits with 1 on FAIL. A NaN or infinity that the other file does not hold at the\n"
       "same index is a FAIL (exit 1) with or without a tolerance. --per-head adds one line per (b, h) slice.\n"
       "Integer files are compared exactly; values beyond 2^53 are refused.\n",
       {"--atol", "--rtol", "--tensor"}, {"--per-head"}, mra::cli::run_compare},
      {"demo", "exact vs MRA on built-in structured inputs",
       "usage: mra-ref demo [--out DIR]\n"
       "Builds structured inputs (B=1, H=2, N=1024, D=64: local structure and a few global tokens), runs exact\n"
       "attention and MRA at several configurations, prints the fraction of entries computed exactly, the\n"
       "relative error and the time of each, and writes every input and output as .npy into DIR (default\n"
       "mra-demo), with the commands that redo a run on those files, and two pictures (mra-ref plot):\n"
       "selection.svg (the blocks refined at each level) and error-budget.svg (error against budget).\n",
       {"--out"}, {}, mra::cli::run_demo},
      {"plot", "SVG pictures: the selected blocks, error against budget",
       "usage: mra-ref plot selection --q Q --k K --v V [MRA options] [--batch B] [--head H] -o OUT.svg\n"
       "       mra-ref plot error --q Q --k K --v V [--scale-sets S:S...] [--blocks-per-row R,R...] -o OUT.svg\n"
       "selection: the attention matrix of batch B, head H (default 0, 0) with every coarsest-level block shaded\n"
       "by its log-coefficient relative to the best of its block row, and the blocks refined at each level filled\n"
       "and outlined in that level's colour, with a legend.\n"
       "error: relative error of MRA against exact attention, against the fraction of attention entries\n"
       "computed exactly, for every scale set (default 32,1:16,4,1:64,8,1), both modes and every blocks-per-row\n"
       "value (default 1,2,4,8,16); the points are also printed as a table. Standalone SVG, viewable in any\n"
       "browser.\n" +
           std::string(kInputs) + std::string(kMra),
       with(kMraFlags, {"-o", "--batch", "--head", "--scale-sets"}), {"--causal"}, mra::cli::run_plot},
      {"bench", "time reference MRA against reference exact attention",
       "usage: mra-ref bench\n"
       "For N = 1024, 4096 and 16384 (B = H = 1, D = 64, scales 32,1, 4 blocks per row), prints the time of\n"
       "reference MRA and of reference exact attention and their ratio. Takes about a minute.\n",
       {}, {}, mra::cli::run_bench},
  };
  return table;
}

void print_top_help(std::FILE* to) {
  std::fprintf(to, "usage: mra-ref <command> [options]   (mra-ref <command> --help for details)\n\ncommands:\n");
  for (const Command& c : commands())
    std::fprintf(to, "  %-8s %s\n", std::string(c.name).c_str(), std::string(c.summary).c_str());
  std::fprintf(to, "\nExit status: 0 success, 1 compare failed its tolerance, 2 error (one line on stderr).\n");
  std::fprintf(to, "mra-ref --version prints the version.\n");
}

int fail(const std::string& subject, const std::string& problem) {
  // An empty argument (`compare '' b.npy`) is shown as '' rather than as nothing.
  std::fprintf(stderr, "mra-ref: %s: %s\n", subject.empty() ? "''" : mra::cli::printable(subject).c_str(),
               mra::cli::printable(problem).c_str());
  return 2;
}

// Everything printed on stdout must have arrived: a write error (a full disk, /dev/full) that only the final
// flush or close reveals still fails the run.
int finish(int status) {
  const bool flushed = std::fflush(stdout) == 0 && !std::ferror(stdout);
  const bool closed = std::fclose(stdout) == 0;
  if (flushed && closed) return status;
  // A run that already failed has said why; its stdout error is the same one.
  return status == 2 ? 2 : fail("stdout", std::string("cannot write: ") + std::strerror(errno));
}

int run(const std::vector<std::string>& args, const char* program) {
  if (args.empty()) {
    print_top_help(stderr);
    return 2;
  }
  if (args[0] == "--help" || args[0] == "-h") {
    print_top_help(stdout);
    return 0;
  }
  if (args[0] == "--version") {
    if (args.size() > 1) return fail(args[1], "unexpected argument");
    std::printf("mra-ref %s\n", MRA_VERSION);
    return 0;
  }
  const Command* command = nullptr;
  for (const Command& c : commands())
    if (c.name == args[0]) command = &c;
  if (!command) return fail(args[0], "unknown command (see mra-ref --help)");

  try {
    const Options options(std::vector<std::string>(args.begin() + 1, args.end()), command->value_flags,
                          command->switches);
    if (options.help()) {
      std::fputs(command->usage.c_str(), stdout);
      return 0;
    }
    return command->run(options, program);
  } catch (const mra::cli::Failure& e) {
    return fail(e.subject(), e.what());
  } catch (const mra::ref::Error& e) {
    return fail(args[0], e.what());
  } catch (const std::bad_alloc&) {
    return fail(args[0], "out of memory");
  } catch (const std::exception& e) {
    // Nothing should get here; if something does, it is still one line and exit 2, not an abort.
    return fail(args[0], e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  // A closed stdin, stdout or stderr gets a placeholder that cannot be written, so that no file this run
  // opens (an input, the temporary output) takes its number and receives text meant for the terminal;
  // writing to it then fails like any other write error.
  for (int fd = 0; fd <= 2; ++fd)
    if (::fcntl(fd, F_GETFD) == -1 && ::open("/dev/null", O_RDONLY | O_CLOEXEC) != fd) return 2;
  // A reader that goes away (a closed pipe, a FIFO's reader) is a write error with its one line and exit 2,
  // not a silent death by SIGPIPE with part of the output delivered.
  std::signal(SIGPIPE, SIG_IGN);
  return finish(run(std::vector<std::string>(argv + 1, argv + argc), argv[0]));
}
