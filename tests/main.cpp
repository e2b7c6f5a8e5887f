// tests/main.cpp: the one doctest main shared by every test executable of the suite. A run in which every test
// case skipped itself (tests/common/skip.h: a configuration the build left out) and nothing failed exits with 77,
// which CTest reports as skipped (the SKIP_RETURN_CODE of every doctest test, tests/CMakeLists.txt); CTest runs
// one case per test, so a skipped case is never counted as passed.
#define DOCTEST_CONFIG_IMPLEMENT
#include "common/doctest.h"

#include "common/skip.h"

namespace {

// Counts the cases that ran and those that skipped themselves.
struct SkipCounter : doctest::IReporter {
  explicit SkipCounter(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override {
    ++mra::test::cases_started;
    mra::test::case_skipped = false;
  }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {
    if (mra::test::case_skipped) ++mra::test::cases_skipped;
  }
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("skip-counter", 1, SkipCounter);

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  const int status = context.run();
  if (context.shouldExit() || status != 0) return status;
  const bool all_skipped = mra::test::cases_started > 0 && mra::test::cases_skipped == mra::test::cases_started;
  return all_skipped ? 77 : 0;
}
