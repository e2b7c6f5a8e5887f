// tests/main.cpp: the one doctest main shared by every test executable of the suite.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
