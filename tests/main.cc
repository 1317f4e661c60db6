// The Boost.Test module of every patledger test executable; the suites live in
// the *_test.cc files linked beside it.
#define BOOST_TEST_MODULE patledger
#include <boost/test/unit_test.hpp>
