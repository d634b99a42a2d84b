// The umbrella header of the hmoe engine: tensors, autograd, ops, modules.
#pragma once

#include "autograd/grad_mode.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"
#include "engine/dtype.h"
#include "engine/rng.h"
#include "engine/tensor.h"
#include "engine/thread_pool.h"
#include "ops/elementwise.h"
#include "ops/factory.h"
#include "ops/index.h"
#include "ops/matmul.h"
#include "ops/nn.h"
#include "ops/optim.h"
#include "ops/reduce.h"
#include "ops/sort.h"
#include "ops/view.h"
