// The world communicator of a test program run under mpirun, made by its main
// (tests/support/dist_main.cpp) before the tests run.
#pragma once

#include <memory>

#include "engine/dist/communicator.h"

namespace hmoe::testing::dist {

hmoe::dist::Communicator& world();
std::shared_ptr<hmoe::dist::Communicator> world_ptr();

}  // namespace hmoe::testing::dist
