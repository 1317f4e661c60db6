// patledger: the command-line entry point. All the work is in tools/cli.cc.
#include <iostream>

#include "tools/cli.h"

int main(int argc, char** argv) {
  return patledger::tools::RunCli(argc, argv, std::cin, std::cout, std::cerr);
}
